"""Sparse tokens on hand-built traces: source masks, gathered patches/features, packed ids, pyramid tokens."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from triton_autogaze.config import AutoGazeConfig
from triton_autogaze.record import assemble_record
from triton_autogaze.sparse import apply_image_mask, fixation_image_mask, gather_gazed_patches, \
    sparsify_image_pyramid_tokens, tokenize_masked_image_pyramid
from triton_autogaze.tiling import plan_tiles, stitch_masks
from triton_autogaze.trace import GazeTrace

CFG = AutoGazeConfig()
EOS = CFG.eos_id


def make_trace(frame_ids, grid=None):
    """frame_ids: T lists of per-row id lists (same length per frame; pads = EOS)."""
    ids = [torch.tensor(f, dtype=torch.long) for f in frame_ids]
    rec = assemble_record(CFG, ids)
    return GazeTrace(rec["gazing_pos"], rec["if_padded_gazing"], rec["num_gazing_each_frame"], rec["gazing_mask"],
                     torch.ones(rec["gazing_pos"].shape), CFG.grid_sizes, CFG.scale_offsets,
                     CFG.num_vision_tokens_each_frame,
                     scale_masks=None if grid is None else stitch_masks(rec["gazing_mask"], grid), tiling=grid)


def test_mask_resize_224():
    grid = plan_tiles(448, 448, "resize-224")
    trace = make_trace([[[0, EOS]], [[264, EOS]]], grid)  # coarsest top-left cell; finest bottom-right cell
    want0 = torch.zeros(448, 448, dtype=torch.bool)
    want0[:224, :224] = True
    assert torch.equal(fixation_image_mask(trace, 0), want0)
    want1 = torch.zeros(448, 448, dtype=torch.bool)
    want1[416:, 416:] = True
    assert torch.equal(fixation_image_mask(trace, 1), want1)
    assert torch.equal(fixation_image_mask(trace, 1, 224, 224), want1[::2, ::2])
    assert not fixation_image_mask(trace, 0, scales=[3]).any()
    with pytest.raises(IndexError):
        fixation_image_mask(trace, 2)


def test_mask_full_resolution_straddle_and_padding():
    grid = plan_tiles(300, 500, "tiled-full-resolution")  # 2 x 3 tiles
    rows = [[EOS, EOS]] * 5 + [[0, 3]]  # tile 5 (row 1, col 2): cell (0,0) straddles; cell (1,1) is all padding
    trace = make_trace([rows], grid)
    want = torch.zeros(300, 500, dtype=torch.bool)
    want[224:, 448:] = True
    assert torch.equal(fixation_image_mask(trace, 0), want)
    assert torch.equal(fixation_image_mask(trace, 0, 150, 250), want[::2, ::2])
    fixations = trace.source_fixations()[0]
    assert [(f.tile, f.token_id, f.rect) for f in fixations] == [(5, 0, (448.0, 224.0, 500.0, 300.0))]
    video = torch.zeros(6, 1, 3, 224, 224)
    patches = gather_gazed_patches(video, trace)
    assert patches.sequence.tolist() == [5, 5] and patches.token_id.tolist() == [0, 3]
    assert patches.rects[0].tolist() == [448.0, 224.0, 500.0, 300.0]
    x0, y0, x1, y1 = patches.rects[1].tolist()
    assert x0 == x1 == 500.0 and y0 == y1 == 300.0  # wholly in the padding: zero area


def test_mask_needs_pipeline_trace():
    with pytest.raises(ValueError, match="pipeline trace"):
        fixation_image_mask(make_trace([[[0]]]), 0)


def test_apply_image_mask_layouts():
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1:3, 2:4] = True
    chw = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    out = apply_image_mask(chw, mask, fill=-1.0)
    assert torch.equal(out, torch.where(mask, chw, torch.tensor(-1.0)))
    hwc = torch.randint(0, 255, (4, 5, 4), dtype=torch.uint8)
    out = apply_image_mask(hwc, mask)
    assert out.dtype == torch.uint8 and torch.equal(out[1, 2], hwc[1, 2]) and not out[0].any()
    with pytest.raises(ValueError, match="plane"):
        apply_image_mask(torch.zeros(3, 6, 6), mask)


def test_gather_patches_pixels_and_features():
    torch.manual_seed(0)
    video = torch.randn(2, 2, 3, 224, 224)
    trace = make_trace([[[264, 0, EOS], [5, EOS, EOS]], [[69, EOS, EOS], [20, 68, EOS]]])
    got = gather_gazed_patches(video, trace)
    assert got.cu_seqlens.tolist() == [0, 3, 6]
    assert got.sequence.tolist() == [0, 0, 0, 1, 1, 1]
    assert got.frame.tolist() == [0, 0, 1, 0, 1, 1]
    assert got.token_id.tolist() == [264, 0, 69, 5, 20, 68]
    assert got.scale_index.tolist() == [3, 0, 3, 1, 2, 2]
    assert got.row.tolist() == [13, 0, 0, 0, 0, 6] and got.col.tolist() == [13, 0, 0, 1, 0, 6]
    assert got.values.shape == (6, 3, 16, 16) and got.rects is None
    assert torch.equal(got.values[0], video[0, 0, :, 208:, 208:])  # finest scale: the frame itself, identity
    small = F.interpolate(video[0, 0][None], size=(32, 32), mode="bicubic", align_corners=False)[0]
    assert torch.equal(got.values[1], small[:, :16, :16])
    mid = F.interpolate(video[1, 0][None], size=(64, 64), mode="bicubic", align_corners=False)[0]
    assert torch.equal(got.values[3], mid[:, :16, 16:32])  # id 5 = scale 1, cell (0, 1)
    feats = torch.randn(2, 2, 265, 8)
    by_feature = gather_gazed_patches(None, trace, features=feats)
    assert torch.equal(by_feature.values, feats[by_feature.sequence, by_feature.frame, by_feature.token_id])
    with pytest.raises(ValueError, match="features"):
        gather_gazed_patches(None, trace, features=torch.zeros(2, 2, 264, 8))
    with pytest.raises(ValueError, match="model inputs"):
        gather_gazed_patches(video[:1], trace)


def test_gather_rects_match_source_fixations():
    grid = plan_tiles(300, 400, "anyres-tile-224")  # 2 x 2 tiles, canvas 448 x 448
    trace = make_trace([[[1, 30], [100, EOS], [264, 4], [EOS, EOS]]], grid)
    got = gather_gazed_patches(torch.zeros(4, 1, 3, 224, 224), trace)
    fixations = trace.source_fixations()[0]
    assert len(fixations) == got.rects.shape[0] == 5
    for f, r in zip(fixations, got.rects.tolist()):
        assert r == pytest.approx(list(f.rect), abs=1e-4)


def test_packed_keeps_non_padded_ids():
    trace = make_trace([[[3, EOS], [7, 8]]])
    ids, cu = trace.packed()
    assert ids.tolist() == [3, 7, 8] and cu.tolist() == [0, 1, 3]


def test_pyramid_tokens_density_and_topk():
    image = torch.rand(3, 40, 50)
    mask = torch.zeros(40, 50, dtype=torch.bool)
    mask[:16, :16] = True
    tok = tokenize_masked_image_pyramid(image, mask, levels=(1, 2), patch_size=8)
    assert tok.factors == (1, 2) and tok.tokens.shape == (5 * 7 + 3 * 4, 3 * 64)
    lvl0 = tok.level == 0
    assert tok.density[lvl0].reshape(5, 7)[:2, :2].eq(1).all() and tok.density[lvl0].sum() == 4
    assert tok.density[~lvl0][0] == 1 and tok.density[~lvl0].sum() == 1
    assert torch.equal(tok.tokens[0], image[:, :8, :8].reshape(-1))
    assert tok.rects[6].tolist() == [48.0, 0.0, 50.0, 8.0]  # clipped to the image
    pooled = F.avg_pool2d(image[None], 2)[0]
    assert torch.allclose(tok.tokens[35], pooled[:, :8, :8].reshape(-1))
    top = sparsify_image_pyramid_tokens(tok, 3)
    assert top.level.tolist() == [0, 0, 0] and list(zip(top.row.tolist(), top.col.tolist())) == [(0, 0), (0, 1), (1, 0)]
    assert sparsify_image_pyramid_tokens(tok, 1000).tokens.shape[0] == tok.tokens.shape[0]
    with pytest.raises(ValueError, match="k"):
        sparsify_image_pyramid_tokens(tok, -1)
    packed = tokenize_masked_image_pyramid(torch.randint(0, 255, (40, 50, 3), dtype=torch.uint8), mask, 1, 8)
    assert packed.tokens.shape == (35, 3 * 64)
    with pytest.raises(ValueError, match="levels"):
        tokenize_masked_image_pyramid(image, mask, levels=0)
