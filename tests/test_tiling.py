"""Tiling modes: layouts, source-pixel mapping, tile cutting and stitching on hand-built data (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from triton_autogaze.config import PreprocessorConfig
from triton_autogaze.processing import preprocess_reference, resize_bilinear_reference
from triton_autogaze.tiling import MODES, affine_lut, apply_lut, cut_tiles, plan_tiles, resize_canvas_float, \
    resize_packed, stitch_masks
from triton_autogaze.upstream import stitch_masks as upstream_stitch

GRIDS = (2, 4, 7, 14)


def test_anyres_1080p_layout():
    g = plan_tiles(1080, 1920, "anyres-tile-224")
    assert g.tiles == (5, 9) and g.num_tiles == 45 and g.canvas_size == (1120, 2016)
    assert [g.stitched_shape(s) for s in range(4)] == [(10, 18), (20, 36), (35, 63), (70, 126)]
    assert g.cell_rect(3, 0, 0) == pytest.approx((0, 0, 1920 / 126, 1080 / 70))
    assert g.cell_rect(0, 9, 17) == pytest.approx((1920 * 17 / 18, 1080 * 9 / 10, 1920, 1080))
    g720 = plan_tiles(720, 1280, "anyres-tile-224")
    assert g720.tiles == (4, 6) and g720.canvas_size == (896, 1344)


def test_resize_224_layout():
    g = plan_tiles(360, 640, "resize-224")
    assert g.tiles == (1, 1) and g.canvas_size == (224, 398)
    assert [g.stitched_shape(s) for s in range(4)] == [(2, 2), (4, 4), (7, 7), (14, 14)]
    assert g.cell_rect(1, 3, 2) == pytest.approx((320, 270, 480, 360))
    assert plan_tiles(360, 640, "resize-224", shortest_edge=None).canvas_size == (360, 640)


def test_full_resolution_crop_rule():
    g = plan_tiles(300, 500, "tiled-full-resolution")
    assert g.tiles == (2, 3) and g.canvas_size == (300, 500)
    # cells that cover at least one source pixel survive: ceil(300 / side), ceil(500 / side)
    assert [g.stitched_shape(s) for s in range(4)] == [(3, 5), (6, 9), (10, 16), (19, 32)]
    assert g.cell_rect(0, 2, 4) == (448.0, 224.0, 500.0, 300.0)  # straddling cell, clipped to the frame
    assert g.cell_rect(3, 0, 0) == (0.0, 0.0, 16.0, 16.0)  # native pixels, no scaling
    # a cell wholly in the padding (row 19 of scale 3 starts at 304) has zero area
    x0, y0, x1, y1 = g.cell_rect(3, 19, 0)
    assert y0 == y1 == 300.0


@pytest.mark.parametrize("mode", MODES)
def test_one_pixel_frame(mode):
    g = plan_tiles(1, 1, mode)
    assert g.num_tiles == 1
    for s in range(4):
        R, C = g.stitched_shape(s)
        rect = g.cell_rect(s, 0, 0)
        assert rect[0] == 0 and rect[1] == 0 and 0 < rect[2] <= 1 and 0 < rect[3] <= 1
        if mode == "tiled-full-resolution":
            assert (R, C) == (1, 1) and rect == (0.0, 0.0, 1.0, 1.0)


@pytest.mark.parametrize("args, match", [((0, 5, "resize-224"), "height"), ((5, -1, "resize-224"), "width"),
                                         ((5.5, 5, "resize-224"), "height"), ((5, 5, "resize"), "mode")])
def test_bad_plans(args, match):
    with pytest.raises(ValueError, match=match):
        plan_tiles(*args)


def test_stitch_places_each_tile_cell():
    g = plan_tiles(400, 600, "anyres-tile-224")  # 2 x 3 tiles
    T = 2
    masks = [torch.zeros(6, T, n * n) for n in GRIDS]
    # tile k gazes cell (r, c) = (k % g, (k + 1) % g) of every scale in frame 1
    for s, n in enumerate(GRIDS):
        for k in range(6):
            masks[s][k, 1, (k % n) * n + (k + 1) % n] = 1
    out = stitch_masks(masks, g)
    for s, n in enumerate(GRIDS):
        assert out[s].dtype == torch.bool and tuple(out[s].shape) == (T, 2 * n, 3 * n)
        assert not out[s][0].any()
        want = torch.zeros(2 * n, 3 * n, dtype=torch.bool)
        for k in range(6):
            R, C = g.stitched_cell(k, s, k % n, (k + 1) % n)
            want[R, C] = True
        assert torch.equal(out[s][1], want)


def test_stitch_matches_upstream_recovery():
    torch.manual_seed(0)
    g = plan_tiles(448, 448, "tiled-full-resolution")
    masks = [(torch.rand(4, 3, n * n) > 0.6).float() for n in GRIDS]
    ours = stitch_masks(masks, g)
    theirs = upstream_stitch(masks, 1, 2, 2, GRIDS)
    for s, n in enumerate(GRIDS):
        assert torch.equal(ours[s].reshape(1, 3, -1).float(), theirs[s])


def test_stitch_crops_full_resolution_padding():
    g = plan_tiles(230, 250, "tiled-full-resolution")  # 2 x 2 tiles, mostly padding below/right
    masks = [torch.ones(4, 1, n * n) for n in GRIDS]
    out = stitch_masks(masks, g)
    assert [tuple(m.shape[1:]) for m in out] == [g.stitched_shape(s) for s in range(4)] == \
        [(3, 3), (5, 5), (8, 8), (15, 16)]
    with pytest.raises(ValueError, match="tile_masks"):
        stitch_masks([torch.ones(3, 1, 4)], g)


def test_cut_tiles_packed_equals_float_and_pads_with_zero():
    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 230, 250, 4), dtype=np.uint8))
    lut = affine_lut()
    g = plan_tiles(230, 250, "tiled-full-resolution")
    video = apply_lut(frames, lut)  # [T, 3, H, W]
    packed = cut_tiles(frames, g, range(4), lut)
    flt = cut_tiles(video, g, range(4))
    assert packed.shape == (4, 2, 3, 224, 224) and torch.equal(packed, flt)
    assert torch.equal(flt[3, :, :, :6, :26], video[:, :, 224:, 224:])
    assert not flt[3, :, :, 6:].any() and not flt[1, :, :, :, 26:].any()  # zero in normalised space
    with pytest.raises(ValueError, match="lut"):
        cut_tiles(frames, g, range(1))


def test_affine_lut_is_the_processor_affine():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (2, 5, 7, 4), dtype=np.uint8)
    cfg = PreprocessorConfig(do_resize=False)
    want = torch.from_numpy(preprocess_reference(frames, cfg))
    assert torch.equal(apply_lut(torch.from_numpy(frames), affine_lut()), want)


def test_resize_packed_is_pillow_exact():
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 256, (1, 37, 53, 4), dtype=np.uint8)
    for oh, ow in [(224, 320), (20, 11), (37, 53)]:
        out = resize_packed(torch.from_numpy(frames), oh, ow)
        assert torch.equal(out, torch.from_numpy(resize_bilinear_reference(frames, oh, ow)))


def test_resize_canvas_float():
    g = plan_tiles(300, 200, "anyres-tile-224")
    v = torch.randn(1, 3, 300, 200)
    assert resize_canvas_float(v, g).shape == (1, 3, 448, 224)
    g448 = plan_tiles(448, 448, "anyres-tile-224")
    v448 = torch.randn(1, 3, 448, 448)
    assert resize_canvas_float(v448, g448) is v448  # already a whole grid: identity
    assert math.prod(g.tiles) == 2


@pytest.mark.parametrize("size,mode", [((224, 224), "resize-224"), ((100, 120), "tiled-full-resolution")])
def test_stitch_one_tile_equals_the_tile_grid(size, mode):
    """One tile (streaming's resize-224), whole or cropped (full resolution of a small frame): its own grid."""
    g = plan_tiles(*size, mode)
    assert g.num_tiles == 1
    gen = torch.Generator().manual_seed(1)
    masks = [(torch.rand(1, 3, n * n, generator=gen) > 0.5).float() for n in GRIDS]
    for s, (out, m) in enumerate(zip(stitch_masks(masks, g), masks)):
        R, C = g.stitched_shape(s)
        want = m[0].reshape(3, GRIDS[s], GRIDS[s])[:, :R, :C] > 0
        assert out.dtype == torch.bool and out.is_contiguous() and torch.equal(out, want)
