"""kernels/mask_scatter.py against the torch masks (SPEC §7.4) and tile stitching (SPEC §10.1).
Runs on CPU under TRITON_INTERPRET=1."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see test_patch_embed.py: numpy matmul under the interpreter

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton decorates the kernels

from safetensors.torch import load_file  # noqa: E402

from triton_autogaze.config import AutoGazeConfig  # noqa: E402
from triton_autogaze.kernels.mask_scatter import (  # noqa: E402
    scatter_and_stitch, scatter_masks, scatter_masks_ref, stitch_tile_masks, stitch_tile_masks_ref)
from triton_autogaze.record import assemble_record, split_record  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
NV = 265
SIDES = (2, 4, 7, 14)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _random_ids(n_rows: int, T: int, L: int, seed: int, dtype=torch.int64) -> torch.Tensor:
    """[n_rows, T, L] frame-local ids like generation emits: distinct real ids, pads (NV) interleaved and trailing,
    each (row, frame) with its own real length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((n_rows, T, L), NV, dtype=torch.int64)
    for r in range(n_rows):
        for t in range(T):
            n = int(torch.randint(0, L + 1, (1,), generator=g))
            row = torch.randperm(NV, generator=g)[:L].clone()
            row[torch.rand(L, generator=g) < 0.15] = NV  # pads inside the real part
            row[n:] = NV  # trailing pads
            ids[r, t] = row
    return ids.to(dtype).to(DEV)


def _equal(outs, refs):
    assert len(outs) == len(refs)
    for s, (o, r) in enumerate(zip(outs, refs)):
        assert o.shape == r.shape, (s, o.shape, r.shape)
        assert o.dtype == torch.float32 and o.is_contiguous()
        assert torch.equal(o, r), f"scale {s} differs"


def _fixture(name: str) -> Path | None:
    for root in (REPO / "tests" / "fixtures", SHARED):
        if (root / name).exists():
            return root / name
    return None


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32])
def test_scatter_matches_reference(dtype):
    ids = _random_ids(3, 4, 40, seed=1, dtype=dtype)
    _equal(scatter_masks(ids), scatter_masks_ref(ids))


def test_scatter_duplicates_and_empty_rows():
    ids = _random_ids(2, 3, 70, seed=2)
    ids[0, 1] = 7  # the same id over and over
    ids[1, 2] = NV  # a frame of pads only
    masks = scatter_masks(ids)
    _equal(masks, scatter_masks_ref(ids))
    assert sum(m[0, 1].sum().item() for m in masks) == 1
    assert sum(m[1, 2].sum().item() for m in masks) == 0
    empty = scatter_masks(torch.zeros(2, 3, 0, dtype=torch.int64, device=DEV))
    assert all(m.shape == (2, 3, n) and not m.any() for m, n in zip(empty, (4, 16, 49, 196)))


def test_scatter_matches_assemble_record():
    # per-frame lists of different lengths, as record.assemble_record takes them; padded to one L for the kernel
    cfg = AutoGazeConfig()
    g = torch.Generator().manual_seed(3)
    frames = []
    for L in (10, 0, 53, 30):
        ids = torch.stack([torch.randperm(NV, generator=g)[:L] for _ in range(2)])
        ids[torch.rand(ids.shape, generator=g) < 0.2] = NV
        frames.append(ids)
    Lmax = max(f.shape[1] for f in frames)
    padded = torch.stack([torch.nn.functional.pad(f, (0, Lmax - f.shape[1]), value=NV) for f in frames], dim=1)
    _equal([m.cpu() for m in scatter_masks(padded.to(DEV))], assemble_record(cfg, frames)["gazing_mask"])


@pytest.mark.parametrize("case", ["clip224_t4", "batch2_t4", "ratio_only_t3"])
def test_scatter_reproduces_fixture_masks(case):
    path = _fixture(f"{case}.safetensors")
    if path is None:
        pytest.skip(f"{case} fixture not found")
    data = load_file(str(path))
    cfg = AutoGazeConfig()
    frames = split_record(cfg, data["gazing_pos"], data["if_padded_gazing"], data["num_gazing_each_frame"])
    Lmax = max(f.shape[1] for f in frames)
    ids = torch.stack([torch.nn.functional.pad(f, (0, Lmax - f.shape[1]), value=NV) for f in frames], dim=1)
    masks = scatter_masks(ids.to(DEV))
    _equal([m.cpu() for m in masks], [data[f"gazing_mask_{s}"] for s in range(4)])


@pytest.mark.parametrize("nh,nw", [(1, 1), (1, 3), (2, 2), (3, 2), (3, 3)])
@pytest.mark.parametrize("cropped", [False, True])
def test_stitch_matches_reference(nh, nw, cropped):
    g = torch.Generator().manual_seed(nh * 10 + nw)
    B, T = 2, 3
    tiles = [(torch.rand(B * nh * nw, T, s * s, generator=g) < 0.3).float().to(DEV) for s in SIDES]
    crop = [(max(1, nh * s - 1), max(1, nw * s - 2)) for s in SIDES] if cropped else None
    _equal(stitch_tile_masks(tiles, nh, nw, crop), stitch_tile_masks_ref(tiles, nh, nw, crop))


@pytest.mark.parametrize("nh,nw", [(1, 1), (2, 3), (3, 3)])
def test_scatter_and_stitch_matches_composition(nh, nw):
    ids = _random_ids(2 * nh * nw, 2, 30, seed=nh + 7 * nw)
    for crop in (None, [(nh * s - (s > 2), nw * s - 1) for s in SIDES]):
        want = stitch_tile_masks_ref(scatter_masks_ref(ids), nh, nw, crop)
        _equal(scatter_and_stitch(ids, nh, nw, crop=crop), want)
        _equal(stitch_tile_masks(scatter_masks(ids), nh, nw, crop), want)


def test_tile_placement_by_hand():
    # one gaze per tile at the top-left cell of scale 1 (id 4) -> a 1 at (a*4, c*4) of tile (a, c)
    nh, nw = 2, 3
    ids = torch.full((nh * nw, 1, 2), NV, dtype=torch.int64, device=DEV)
    ids[:, 0, 0] = 4
    ids[4, 0, 1] = 4 + 4 * 3 + 2  # tile (1, 1): row 3, col 2 of scale 1
    m = scatter_and_stitch(ids, nh, nw)[1][0, 0].cpu()
    want = torch.zeros(8, 12)
    want[0::4, 0::4] = 1
    want[4 + 3, 4 + 2] = 1
    assert torch.equal(m, want)


def test_res_adapt_480_crop():
    # SPEC §10.1: 480/16 -> fm (3, 7, 15, 30) on a 3x3 tile grid, N' = 1183 after flattening
    fm = (3, 7, 15, 30)
    ids = _random_ids(9, 2, 50, seed=9)
    masks = scatter_and_stitch(ids, 3, 3, crop=[(f, f) for f in fm])
    flat = torch.cat([m.reshape(1, 2, -1) for m in masks], dim=-1)
    assert flat.shape == (1, 2, 1183)
    _equal(masks, stitch_tile_masks_ref(scatter_masks_ref(ids), 3, 3, [(f, f) for f in fm]))


def test_launchers_reject_bad_inputs():
    ids = torch.zeros(4, 2, 5, dtype=torch.int64, device=DEV)
    with pytest.raises(ValueError, match="frame_ids"):
        scatter_and_stitch(ids, 3, 1)  # 4 tiles do not fill 3x1 grids
    with pytest.raises(ValueError, match="frame_ids"):
        scatter_masks(ids.float())
    with pytest.raises(ValueError, match="frame_ids"):
        scatter_masks(ids[0])
    with pytest.raises(ValueError, match="tokens_per_scale"):
        scatter_masks(ids, (4, 16, 50))
    with pytest.raises(ValueError, match="crop"):
        scatter_and_stitch(ids, 2, 2, crop=[(5, 1), (1, 1), (1, 1), (1, 1)])  # 5 > 2*2 rows at scale 0
    tiles = [torch.zeros(4, 2, s * s, device=DEV) for s in SIDES]
    with pytest.raises(ValueError, match=r"tile_masks\[2\]"):
        stitch_tile_masks(tiles[:2] + [tiles[2].double()] + tiles[3:], 2, 2)
    with pytest.raises(ValueError, match=r"tile_masks\[3\]"):
        stitch_tile_masks(tiles[:3] + [torch.zeros(4, 2, 195, device=DEV)], 2, 2)
    with pytest.raises(ValueError, match="crop"):
        stitch_tile_masks(tiles, 2, 2, crop=[(1, 1)])


@needs_cuda
def test_cuda_rejects_cpu_tensors():
    with pytest.raises(ValueError, match="frame_ids"):
        scatter_masks(torch.zeros(1, 1, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="tile_masks"):
        stitch_tile_masks([torch.zeros(1, 1, s * s) for s in SIDES], 1, 1)


@needs_cuda
def test_cuda_1080p_tiles():
    # 1080p tiled: 5 x 9 tiles, 16 frames, two clips
    ids = _random_ids(2 * 45, 16, 120, seed=11)
    crop = [(9, 17), (19, 35), (34, 62), (68, 121)]
    _equal(scatter_and_stitch(ids, 5, 9, crop=crop), stitch_tile_masks_ref(scatter_masks_ref(ids), 5, 9, crop))
