"""Launcher argument checks shared by the kernels: errors name the tensor with expected vs actual."""

from __future__ import annotations

import functools
import os

import torch


def interpreting() -> bool:
    """Whether Triton kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1) instead of on a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached per device)."""
    return _sms(device.index if device.index is not None else torch.cuda.current_device())


def nvidia_capability(device: torch.device) -> tuple[int, int] | None:
    """(major, minor) compute capability of an NVIDIA CUDA device; None for other devices and for ROCm builds of
    torch, which report AMD's own numbers there (the kernels' PTX-level choices do not apply to them)."""
    if device.type != "cuda" or torch.version.hip is not None:
        return None
    return torch.cuda.get_device_capability(device)


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


def check_feed(name: str, t: torch.Tensor, n: int) -> tuple[int, int, int]:
    """A decoder feed: ``t`` a contiguous fp32 [B, S, C] tensor whose first ``n`` slots (1 <= n <= S) a launch
    uses. Returns (B, S, C); errors name the tensor."""
    if not isinstance(t, torch.Tensor) or t.dim() != 3:
        got = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a [B, S, C] tensor, got {got}")
    B, S, C = t.shape
    check_tensor(name, t, (B, S, C), (torch.float32,), t.device)
    if not 1 <= n <= S:
        raise ValueError(f"n: expected 1 <= n <= {S}, got {n}")
    return B, S, C


def split_slices(split_k: int, inner: int, rows: int, cols: int) -> tuple[int, int]:
    """(KS, S) constexprs for a product whose inner axis of ``inner`` elements is cut into S slices of KS.

    ``split_k`` 0 means no cut: (1, 1), and the kernel multiplies over the whole axis at once. Otherwise
    ``split_k`` is the slice length (a power of two >= 16; the tensor-shape rules of tl.dot) and S the number
    of slices rounded up to a power of two (slices past ``inner`` are masked to zero). ``rows`` x ``cols`` is the
    program's output tile: the [S, rows, KS], [S, KS, cols] and [S, rows, cols] blocks must fit Triton's
    2^20-element block limit."""
    if split_k == 0:
        return 1, 1
    if split_k < 16 or split_k & (split_k - 1):
        raise ValueError(f"split_k: expected 0 or a power of two >= 16, got {split_k}")
    n = -(-inner // split_k)
    s = 1 << (n - 1).bit_length()
    if s * max(rows, split_k) * max(split_k, cols) > 1 << 20:
        raise ValueError(f"split_k: {s} slices of {split_k} over a {rows} x {cols} output tile exceed Triton's "
                         f"2^20-element block; use smaller blocks or split_k=0")
    return split_k, s


def token_blocks(B: int, n: int, block_n: int, flat: bool) -> int:
    """Token programs of a row-wise launch over the first ``n`` slots of B rows: ``block_n`` slots of one row each,
    or with ``flat`` ``block_n`` consecutive tokens of the B x n feed across rows (the kernels' FLAT mode)."""
    return -(-B * n // block_n) if flat else B * -(-n // block_n)


def check_bf16_dots(bf16_dots: bool, weight: torch.Tensor, name: str) -> None:
    """bf16 tensor-core products are for bf16 weights only (fp32 mode stays IEEE fp32)."""
    if bf16_dots and weight.dtype != torch.bfloat16:
        raise ValueError(f"bf16_dots: needs bf16 weights, got {name} {weight.dtype} (fp32 mode multiplies in IEEE fp32)")
