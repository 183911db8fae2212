"""Exact fp32 on CUDA: cuDNN convolutions default to TF32 there, which moves the vision embeddings by ~1e-3 and
flips gaze decisions. Every model computation runs inside :func:`exact_fp32`, which restores the caller's flags."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def exact_fp32(enabled: bool = True) -> Iterator[None]:
    if not enabled:
        yield
        return
    matmul = torch.backends.cuda.matmul
    old_mm, old_cudnn = matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    old_prec = torch.get_float32_matmul_precision()
    try:
        matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        yield
    finally:
        matmul.allow_tf32 = old_mm
        torch.backends.cudnn.allow_tf32 = old_cudnn
        torch.set_float32_matmul_precision(old_prec)
