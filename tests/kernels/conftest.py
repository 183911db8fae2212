"""Kernel tests run on CUDA when present, else on CPU tensors under the Triton interpreter."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


@pytest.fixture
def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")



@pytest.fixture(autouse=True)
def _in_bounds(request):
    """Under the interpreter, every kernel launch of every kernel test is bounds-checked (tests/interp_bounds.py):
    a load or store outside the tensors a launch was given fails the test, even when the result looks right."""
    import interp_bounds

    from triton_autogaze.kernels._checks import interpreting

    if not interpreting() or not interp_bounds.available():
        yield
        return
    with interp_bounds.bounds_checked() as run:
        yield
    assert not run.violations, f"out-of-bounds accesses: {run.violations[:5]}"
