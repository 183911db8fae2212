"""render.py (torch path): cell geometry against sparse.fixation_image_mask, mask image colours and layering,
full-blend arithmetic, interframe keyframes and carry-over across clips, plain-trace fallback, settings checks."""

from __future__ import annotations

import pytest
import torch

from triton_autogaze.render import (
    PALETTE, RenderSettings, Renderer, cell_geometry, panes, render_clip, scale_grids, side_by_side_buffer)
from triton_autogaze.sparse import fixation_image_mask
from triton_autogaze.tiling import plan_tiles, stitch_masks
from triton_autogaze.trace import GazeTrace

SIDES = (2, 4, 7, 14)
OFFSETS = (0, 4, 20, 69)


def make_trace(T: int, cells: list[list[tuple[int, int, int]]] | None = None, H=None, W=None, mode=None,
               density=None, seed=0) -> GazeTrace:
    """A trace with the given gazed cells per frame ((scale, row, col) of the one tile), or random cells of every
    tile at ``density``; a pipeline trace (tiling + scale_masks) when mode is given."""
    grid = plan_tiles(H, W, mode) if mode else None
    n_tiles = grid.num_tiles if grid else 1
    g = torch.Generator().manual_seed(seed)
    masks = [torch.zeros(n_tiles, T, s * s) for s in SIDES]
    if cells is not None:
        for t, fr in enumerate(cells):
            for s, r, c in fr:
                masks[s][0, t, r * SIDES[s] + c] = 1
    else:
        masks = [(torch.rand(m.shape, generator=g) < density).float() for m in masks]
    L = 1
    return GazeTrace(
        gazing_pos=torch.zeros(n_tiles, T * L, dtype=torch.int64),
        if_padded_gazing=torch.ones(n_tiles, T * L, dtype=torch.bool),
        num_gazing_each_frame=torch.full((T,), L), gazing_mask=masks, confidence=torch.zeros(n_tiles, T * L),
        grid_sizes=SIDES, scale_offsets=OFFSETS, num_vision_tokens=265,
        scale_masks=stitch_masks(masks, grid) if grid else None, tiling=grid)


def frames_of(T, H, W, seed=0):
    return torch.randint(0, 256, (T, H, W, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode,H,W", [("resize-224", 90, 130), ("anyres-tile-224", 250, 470),
                                      ("tiled-full-resolution", 250, 470), ("tiled-full-resolution", 224, 448)])
def test_pixels_follow_fixation_image_mask(mode, H, W):
    trace = make_trace(2, H=H, W=W, mode=mode, density=0.15, seed=3)
    out = Renderer(RenderSettings("full-blend")).render(frames_of(2, H, W), trace)
    for t in range(2):
        assert torch.equal(out.mask[t].sum(-1) > 0, fixation_image_mask(trace, t))
        assert int(out.covered[t]) == int(fixation_image_mask(trace, t).sum())


def test_mask_image_cells_and_layering():
    # frame 0: the top-left 2x2 cell, with the 14x14 cell (1, 2) inside it; frame 1: nothing
    trace = make_trace(2, [[(0, 0, 0), (3, 1, 2)], []])
    out = Renderer().render(frames_of(2, 56, 56), trace)
    m = out.mask[0]
    assert (m[:28, :28][:, :, None] != 0).any()
    assert torch.equal(m[4, 8], torch.tensor(PALETTE[3], dtype=torch.uint8))  # 14x14 cell = 4x4 px at (4.., 8..)
    assert torch.equal(m[0, 0], torch.tensor(PALETTE[0], dtype=torch.uint8))
    assert torch.equal(m[27, 27], torch.tensor(PALETTE[0], dtype=torch.uint8))
    assert int(m[28:].max()) == 0 and int(m[:, 28:].max()) == 0
    assert int(out.covered[0]) == 28 * 28 and int(out.covered[1]) == 0
    assert int(out.mask[1].max()) == 0


def test_full_blend_arithmetic():
    trace = make_trace(1, [[(0, 1, 1)]])
    f = frames_of(1, 20, 20)
    out = Renderer(RenderSettings("full-blend", blend_alpha=0.55)).render(f, trace)
    a = round(0.55 * 256)
    exp = (f[0, 15, 15].int() * (256 - a) + torch.tensor(PALETTE[0]) * a + 128) >> 8
    assert torch.equal(out.output[0, 15, 15].int(), exp)
    assert torch.equal(out.output[0, :10], f[0, :10])  # outside the mask: the frame unchanged
    assert bool(out.keyframe.all())
    diff = (f.int() - out.output.int()) ** 2
    assert int(out.sse[0]) == int(diff.sum())


def test_interframe_keeps_previous_output_and_keyframes_across_clips():
    T, H, W = 3, 14, 14
    r = Renderer(RenderSettings("interframe", keyframe_duration=4))
    cells = [[(3, 0, 0)], [(3, 1, 1)], [(3, 2, 2)]]
    f1, f2 = frames_of(T, H, W, 1), frames_of(T, H, W, 2)
    a = r.render(f1, make_trace(T, cells))
    b = r.render(f2, make_trace(T, cells))
    assert a.keyframe.tolist() == [True, False, False] and b.keyframe.tolist() == [False, True, False]
    assert torch.equal(a.output[0], f1[0])
    # frame 1: only 14x14 cell (1, 1) (pixel (1, 1)) refreshed; the rest is frame 0's output
    exp = f1[0].clone()
    exp[1, 1] = f1[1, 1, 1]
    assert torch.equal(a.output[1], exp)
    # the next clip continues from the last output: frame 3 refreshes pixel (0, 0) over frame 2's output
    exp = a.output[2].clone()
    exp[0, 0] = f2[0, 0, 0]
    assert torch.equal(b.output[0], exp)
    assert torch.equal(b.output[1], f2[1])  # frame 4 is a keyframe
    assert r.frames_seen == 6


def test_renderer_into_side_by_side_buffer():
    trace = make_trace(2, H=40, W=60, mode="resize-224", density=0.2)
    f = frames_of(2, 40, 60)
    buf = side_by_side_buffer(2, 40, 60, "cpu")
    out = Renderer().render(f, trace, buf)
    inp, m, o = panes(buf)
    assert torch.equal(inp, f) and torch.equal(m, out.mask) and torch.equal(o, out.output)
    with pytest.raises(ValueError, match="side_by_side"):
        Renderer().render(f, trace, buf[:, :, :10])


def test_plain_trace_uses_gazing_mask():
    trace = make_trace(1, [[(2, 6, 0)]])  # bottom-left 7x7 cell
    assert trace.scale_masks is None
    grids = scale_grids(trace)
    assert [tuple(gr.shape) for gr in grids] == [(1, s, s) for s in SIDES] and bool(grids[2][0, 6, 0])
    geo = cell_geometry(trace, 70, 35)
    assert geo.rows == SIDES and geo.row_index(2).tolist()[-10:] == [6] * 10
    out = Renderer().render(frames_of(1, 70, 35), trace)
    assert int(out.covered[0]) == 10 * 5


def test_settings_and_backend_checks():
    for bad in (dict(visualization="x"), dict(blend_alpha=1.5), dict(keyframe_duration=0),
                dict(palette=((1, 2),))):
        with pytest.raises(ValueError):
            RenderSettings(**bad)
    trace = make_trace(1, [[]])
    with pytest.raises(ValueError, match="backend"):
        render_clip(frames_of(1, 4, 4), scale_grids(trace), cell_geometry(trace, 4, 4), RenderSettings(),
                    torch.ones(1, dtype=torch.bool), backend="cuda")
    with pytest.raises(ValueError, match="frames"):
        Renderer().render(frames_of(1, 4, 4).float(), trace)
    with pytest.raises(ValueError, match="trace has 1 frames"):
        Renderer().render(frames_of(2, 4, 4), trace)
