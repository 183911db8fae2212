"""Product-mode switches (kernels/_products.py). The modes' numerics are tested in each kernel's tests (the
``f64_dots`` / ``bf16_dots`` cases), the fp64 engine against the reference in tests/test_engine.py, and the fp64
tensor-core instructions in the compiled sm_90 code in tests/test_kernel_regs.py."""

from __future__ import annotations

import pytest
import torch

from triton_autogaze.kernels import _products


def test_tc_modes():
    assert _products.tc_mode(False) == 0
    assert _products.tc_mode(False, f64_dots=True) == 3
    assert _products.tc_mode(True) in (1, 2)  # 2: the interpreter's stand-in
    with pytest.raises(ValueError, match="choose one product mode"):
        _products.tc_mode(True, f64_dots=True)


def test_no_fp64_tensor_cores_on_the_cpu():
    from triton_autogaze.kernels._checks import nvidia_capability

    assert nvidia_capability(torch.device("cpu")) is None
    assert not _products.fp64_tensor_cores(torch.device("cpu"))
    assert not _products.f64_products_wanted(torch.device("cpu"), torch.float32)


def test_default_follows_the_device_and_dtype(monkeypatch):
    monkeypatch.setattr(_products, "fp64_tensor_cores", lambda device: True)  # an H100, as far as the rule looks
    monkeypatch.delenv("AUTOGAZE_F64_DOTS", raising=False)
    dev = torch.device("cpu")
    assert _products.f64_products_wanted(dev, torch.float32)
    assert not _products.f64_products_wanted(dev, torch.bfloat16)  # bf16 mode has its own tensor-core products
    monkeypatch.setenv("AUTOGAZE_F64_DOTS", "0")
    assert not _products.f64_products_wanted(dev, torch.float32)
    monkeypatch.setenv("AUTOGAZE_F64_DOTS", "yes")
    with pytest.raises(ValueError, match="AUTOGAZE_F64_DOTS"):
        _products.f64_products_wanted(dev, torch.float32)


def test_triton_versions_that_lower_fp64_mma():
    assert _products.triton_lowers_fp64_mma("3.6.0")
    assert _products.triton_lowers_fp64_mma("3.5.1+git1234")
    assert _products.triton_lowers_fp64_mma("4.0.0")
    assert not _products.triton_lowers_fp64_mma("3.4.0")
    assert not _products.triton_lowers_fp64_mma("2.3.1")
    assert not _products.triton_lowers_fp64_mma("weird")
