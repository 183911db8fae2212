"""kernels/render.py against the torch path (render.render_clip_torch): bit-exact mask images, outputs and metric
sums. Runs on CPU under TRITON_INTERPRET=1 at small shapes."""

import os

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton decorates the kernels

from triton_autogaze.kernels.render import render_frames, render_frames_ref  # noqa: E402
from triton_autogaze.render import CellGeometry, RenderSettings, side_by_side_buffer, panes  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _geometry(H: int, W: int, sides=(2, 4, 7, 14), full_res: bool = False) -> CellGeometry:
    if full_res:  # 224-px tiles of source pixels, last row/column clipped (tiled-full-resolution)
        rows = tuple(-(-H * g // 224) for g in sides)
        cols = tuple(-(-W * g // 224) for g in sides)
        return CellGeometry(H, W, rows, cols, tuple(g for g in sides), (224,) * len(sides),
                            tuple(g for g in sides), (224,) * len(sides))
    return CellGeometry(H, W, sides, sides, sides, (H,) * len(sides), sides, (W,) * len(sides))


def _case(T, H, W, sides=(2, 4, 7, 14), full_res=False, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (T, H, W, 3), dtype=torch.uint8, generator=g).to(DEV)
    geo = _geometry(H, W, sides, full_res)
    masks = [(torch.rand(T, r, c, generator=g) < density).to(DEV) for r, c in zip(geo.rows, geo.cols)]
    prev = torch.randint(0, 256, (H, W, 3), dtype=torch.uint8, generator=g).to(DEV)
    return frames, masks, geo, prev


def _same(a, b):
    for name in ("mask", "output", "covered", "sse", "keyframe"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and torch.equal(x, y), name


@pytest.mark.parametrize("vis", ["full-blend", "interframe"])
@pytest.mark.parametrize("with_prev", [False, True])
def test_matches_torch(vis, with_prev):
    frames, masks, geo, prev = _case(3, 29, 41)
    key = torch.tensor([True, False, True], device=DEV)
    s = RenderSettings(vis, blend_alpha=0.4)
    p = prev if with_prev else None
    _same(render_frames(frames, masks, geo, s, key, p), render_frames_ref(frames, masks, geo, s, key, p))


@pytest.mark.parametrize("sides,full_res", [((2, 4, 7, 14), True), ((14,), False), ((2, 7), False),
                                            ((2, 4, 7), True)])
def test_scales_and_full_resolution_geometry(sides, full_res):
    frames, masks, geo, prev = _case(2, 250, 20, sides, full_res, density=0.5, seed=1)
    key = torch.tensor([False, False], device=DEV)
    s = RenderSettings("interframe")
    _same(render_frames(frames, masks, geo, s, key, prev), render_frames_ref(frames, masks, geo, s, key, prev))


def test_writes_strided_side_by_side_panes():
    frames, masks, geo, prev = _case(2, 9, 13, seed=2)
    key = torch.tensor([True, False], device=DEV)
    s = RenderSettings("full-blend")
    buf = side_by_side_buffer(2, 9, 13, DEV).fill_(7)
    inp, m, o = panes(buf)
    out = render_frames(frames, masks, geo, s, key, None, m, o, inp)
    ref = render_frames_ref(frames, masks, geo, s, key)
    assert out.mask.data_ptr() == m.data_ptr() and out.output.data_ptr() == o.data_ptr()
    assert torch.equal(inp, frames) and torch.equal(m, ref.mask) and torch.equal(o, ref.output)


def test_empty_mask_and_full_mask():
    frames, masks, geo, _ = _case(1, 8, 8, seed=3)
    key = torch.tensor([True], device=DEV)
    none = [torch.zeros_like(m) for m in masks]
    out = render_frames(frames, none, geo, RenderSettings(), key)
    assert torch.equal(out.output, frames) and int(out.sse[0]) == 0 and int(out.covered[0]) == 0
    assert int(out.mask.max()) == 0
    full = [torch.ones_like(m) for m in masks]
    out = render_frames(frames, full, geo, RenderSettings(), key)
    assert int(out.covered[0]) == 64
    assert (out.mask[0] == torch.tensor([213, 94, 0], dtype=torch.uint8, device=DEV)).all()  # finest on top


def test_launcher_errors_name_the_tensor():
    frames, masks, geo, prev = _case(2, 8, 8)
    key = torch.tensor([True, False], device=DEV)
    s = RenderSettings("interframe")
    with pytest.raises(ValueError, match="frames"):
        render_frames(frames.float(), masks, geo, s, key)
    with pytest.raises(ValueError, match=r"masks\[2\]"):
        render_frames(frames, masks[:2] + [masks[2][:, :3]] + masks[3:], geo, s, key)
    with pytest.raises(ValueError, match="keyframe"):
        render_frames(frames, masks, geo, s, key[:1])
    with pytest.raises(ValueError, match="previous"):
        render_frames(frames, masks, geo, s, torch.tensor([False, False], device=DEV))
    with pytest.raises(ValueError, match="previous"):
        render_frames(frames, masks, geo, s, key, prev[:4])
    with pytest.raises(ValueError, match="output"):
        render_frames(frames, masks, geo, s, key, None, None, torch.empty(2, 8, 8, 4, dtype=torch.uint8, device=DEV))
    with pytest.raises(ValueError, match="geometry"):
        render_frames(frames, masks, _geometry(9, 8), s, key)
    with pytest.raises(ValueError, match="masks"):
        render_frames(frames, masks[:3], geo, s, key)
