"""Launcher argument checks shared by the kernels: errors name the tensor with expected vs actual."""

from __future__ import annotations

import torch


def check_tensor(name: str, t: torch.Tensor, shape: tuple, dtypes: tuple, device: torch.device) -> None:
    """Raise ValueError unless ``t`` is a contiguous tensor of ``shape``, one of ``dtypes``, on ``device``."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name}: expected dtype in {dtypes}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name}: expected device {device}, got {t.device}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")
