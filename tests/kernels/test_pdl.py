"""Programmatic dependent launch switch (kernels/_pdl.py): off wherever the kernels do not run as real GPU
programs, and the launch options it gives. Its effect on the GPU is tested in tests/test_engine.py (PDL on vs
off, bit for bit) and its placement in the compiled code in tests/test_kernel_regs.py."""

from __future__ import annotations

import pytest
import torch

from triton_autogaze.kernels import _pdl


def test_off_for_cpu_tensors_and_under_the_interpreter():
    assert _pdl.pdl_wanted(torch.zeros(1)) == 0


def test_options():
    assert _pdl.pdl_options(0) == {"GDC": 0}
    assert _pdl.pdl_options(1) == {"GDC": 1, "launch_pdl": True}
    assert _pdl.pdl_options(2) == {"GDC": 2, "launch_pdl": True}


def test_env_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv("AUTOGAZE_PDL", "0")

    class FakeCuda:  # a CUDA tensor as far as pdl_wanted looks
        is_cuda = True

    assert _pdl.pdl_wanted(FakeCuda()) == 0
    monkeypatch.setenv("AUTOGAZE_PDL", "yes")
    with pytest.raises(ValueError, match="AUTOGAZE_PDL"):
        _pdl.pdl_wanted(FakeCuda())
