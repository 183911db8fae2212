"""The Triton RGBA resize kernel against the C++ core and the numpy processor reference (small shapes; on CPU it
runs in Triton's interpreter)."""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated, so before the import below
    if "triton_autogaze.kernels.rgba" in sys.modules:
        importlib.reload(sys.modules["triton_autogaze.kernels.rgba"])

pytest.importorskip("triton")
from triton_autogaze.config import PreprocessorConfig  # noqa: E402
from triton_autogaze.kernels.rgba import rgba_resize, rgba_resize_ref  # noqa: E402
from triton_autogaze.processing import output_size, preprocess_reference  # noqa: E402
from triton_autogaze.tiling import affine_lut  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def frames(T, H, W, C, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (T, H, W, C), dtype=np.uint8)).to(DEVICE)


@pytest.mark.parametrize("shape, out", [
    ((2, 9, 13, 4), (5, 7)),  # down both ways, RGBA
    ((1, 17, 9, 3), (30, 20)),  # up both ways, RGB
    ((1, 12, 10, 4), (12, 10)),  # both passes skipped: alpha dropped, values kept
    ((1, 20, 31, 4), (7, 31)),  # width kept: the vertical pass reads the source directly
    ((1, 1, 1, 4), (4, 6)),  # one pixel
])
def test_matches_cpu_core(shape, out):
    f = frames(*shape)
    assert torch.equal(rgba_resize(f, *out).cpu(), rgba_resize_ref(f, *out).cpu())
    lut = affine_lut()
    assert torch.equal(rgba_resize(f, *out, lut).cpu(), rgba_resize_ref(f, *out, lut).cpu())


@pytest.mark.parametrize("shortest_edge", [8, 224 if torch.cuda.is_available() else 12])
def test_matches_processor_reference(shortest_edge):
    cfg = PreprocessorConfig(shortest_edge=shortest_edge)
    f = frames(2, 21, 34, 4, seed=1)
    want = torch.from_numpy(preprocess_reference(f.cpu().numpy(), cfg))
    got = rgba_resize(f, *output_size(21, 34, shortest_edge), affine_lut(cfg))
    assert got.shape == want.shape and torch.equal(got.cpu(), want)


def test_strided_input():
    f = frames(1, 16, 30, 4, seed=2)[:, ::2, 1::2]  # a non-contiguous view
    assert torch.equal(rgba_resize(f, 5, 6).cpu(), rgba_resize_ref(f.contiguous(), 5, 6).cpu())


@pytest.mark.parametrize("arg, match", [(torch.zeros(1, 4, 4, 4), "uint8"),
                                        (torch.zeros(1, 4, 4, 2, dtype=torch.uint8), "3\\|4"),
                                        ("x", "torch.Tensor")])
def test_bad_frames(arg, match):
    with pytest.raises((ValueError, TypeError), match=match):
        rgba_resize(arg, 4, 4)
