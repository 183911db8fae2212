"""The decoder's products in one of three modes: IEEE fp32 (FMA), fp32 operands on fp64 tensor cores (exact
products, fp64 accumulation, one rounding to fp32), or both operands rounded to bf16 on tensor cores (fp32
accumulation)."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._checks import interpreting, nvidia_capability


@triton.jit
def mode_dot(a, b, TC: tl.constexpr):
    """a @ b, fp32 accumulation, in the launch's product mode (see tc_mode). a: fp32 activations; b: a weight or
    K/V tile in its storage dtype. TC == 0: IEEE fp32 (b upcast; never TF32). TC == 1: both rounded to bf16, on
    tensor cores. TC == 2: Triton's interpreter, which cannot multiply bf16 operands (3.9 returns garbage), gets
    fp32 products of the rounded values instead (its fp32 -> bf16 conversion truncates where the GPU rounds to
    nearest). TC == 3: both upcast to fp64 (exactly) and multiplied on fp64 tensor cores (DMMA on sm_80 / sm_90):
    every product is exact and the sums are fp64, so the fp32 result is at least as accurate as an fp32 FMA
    chain's; never TF32 either."""
    if TC == 0:
        out = tl.dot(a, b.to(tl.float32), input_precision="ieee")
    elif TC == 3:
        out = tl.dot(a.to(tl.float64), b.to(tl.float64)).to(tl.float32)
    elif TC == 1:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    return out


@triton.jit
def slice_dot(a, w, TC: tl.constexpr):
    """sum_s a[s] @ w[s]: a [S, BN, KS] fp32 activations, w [S, KS, BO] fp32 weights, the inner axis cut into S
    slices multiplied side by side (short chains) and summed. TC == 3: on fp64 tensor cores, the slices summed
    in fp64 before the one rounding; else IEEE fp32."""
    if TC == 3:
        out = tl.sum(tl.dot(a.to(tl.float64), w.to(tl.float64)), axis=0).to(tl.float32)
    else:
        out = tl.sum(tl.dot(a, w, input_precision="ieee"), axis=0)
    return out


@triton.jit
def acc_zeros(BM: tl.constexpr, BN: tl.constexpr, TC: tl.constexpr):
    """The [BM, BN] accumulator of a K loop of ``acc_dot``: fp64 for TC == 3, else fp32."""
    if TC == 3:
        acc = tl.zeros([BM, BN], tl.float64)
    else:
        acc = tl.zeros([BM, BN], tl.float32)
    return acc


@triton.jit
def acc_dot(acc, a, b, TC: tl.constexpr):
    """acc + a @ b in the launch's product mode (see mode_dot), for GEMM-shaped K loops: with TC == 3 the
    accumulator is fp64 (``acc_zeros``), so a K loop rounds once, at its end, as one fp64 product does; the other
    modes add mode_dot's fp32 product."""
    if TC == 3:
        out = acc + tl.dot(a.to(tl.float64), b.to(tl.float64))
    else:
        out = acc + mode_dot(a, b, TC)
    return out


@triton.jit
def pair_mode_dot(a, w_ptr, rows1, rows2, cols, wmask, C: tl.constexpr, TC: tl.constexpr):
    """(a @ W[rows1, cols]^T, a @ W[rows2, cols]^T), each a ``mode_dot``, for a row-major [*, C] weight whose two
    row sets a program multiplies (gate and up, or the two halves of a head's rotation pairs); wmask
    [len(rows), len(cols)] masks the weight loads."""
    w1 = tl.load(w_ptr + rows1[:, None] * C + cols[None, :], mask=wmask, other=0.0)
    w2 = tl.load(w_ptr + rows2[:, None] * C + cols[None, :], mask=wmask, other=0.0)
    return mode_dot(a, tl.trans(w1), TC), mode_dot(a, tl.trans(w2), TC)


@triton.jit
def pair_slice_dot(a, w_ptr, rows1, rows2, col_w, wmask, C: tl.constexpr, TC: tl.constexpr):
    """The same with the inner axis in slices (``slice_dot``): a [S, BN, KS], col_w [S, KS, 1] the weight columns,
    wmask [S, KS, len(rows)]."""
    w1 = tl.load(w_ptr + rows1[None, None, :] * C + col_w, mask=wmask, other=0.0).to(tl.float32)
    w2 = tl.load(w_ptr + rows2[None, None, :] * C + col_w, mask=wmask, other=0.0).to(tl.float32)
    return slice_dot(a, w1, TC), slice_dot(a, w2, TC)


@triton.jit
def pair_acc_dot(acc1, acc2, a, w_ptr, rows1, rows2, offs_k, wmask, C: tl.constexpr, TC: tl.constexpr):
    """One K chunk of a GEMM-shaped loop against two row sets of a row-major [*, C] weight (gate and up, or the
    two halves of a head's rotation pairs): (acc1 + a @ W[rows1, offs_k]^T, acc2 + a @ W[rows2, offs_k]^T), each
    an ``acc_dot``; wmask [len(rows), len(offs_k)] masks the weight loads."""
    w1 = tl.load(w_ptr + rows1[:, None] * C + offs_k[None, :], mask=wmask, other=0.0)
    w2 = tl.load(w_ptr + rows2[:, None] * C + offs_k[None, :], mask=wmask, other=0.0)
    return acc_dot(acc1, a, tl.trans(w1), TC), acc_dot(acc2, a, tl.trans(w2), TC)


def tc_mode(bf16_dots: bool, f64_dots: bool = False) -> int:
    """The TC constexpr of a launch: 0 = IEEE fp32 products, 1 = bf16 tensor cores, 2 = their interpreter
    stand-in, 3 = fp32 operands on fp64 tensor cores."""
    if bf16_dots and f64_dots:
        raise ValueError("bf16_dots and f64_dots: choose one product mode")
    if f64_dots:
        return 3
    if not bf16_dots:
        return 0
    return 2 if interpreting() else 1


def triton_lowers_fp64_mma(version: str | None = None) -> bool:
    """Whether this Triton (or ``version``) lowers the engine's fp64 products to tensor-core mma: 3.5 and later
    (checked by compiling every decoder kernel for sm_80 and sm_90 with 3.4, 3.5, 3.6 and 3.9; 3.4 cannot compile
    them)."""
    parts = (version or triton.__version__).split("+")[0].split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return False
    return (major, minor) >= (3, 5)


def fp64_tensor_cores(device: torch.device) -> bool:
    """Whether ``device`` multiplies fp64 on tensor cores at full rate and this Triton lowers an fp64 ``tl.dot``
    to them (DMMA): NVIDIA sm_80 and sm_90 (A100, H100, H200) with Triton >= 3.5. Elsewhere fp64 runs at a small
    fraction of fp32's rate, so fp32 mode keeps IEEE fp32 FMA products there (and under the interpreter)."""
    if interpreting() or not triton_lowers_fp64_mma():
        return False
    return nvidia_capability(device) in ((8, 0), (9, 0))


def f64_products_wanted(device: torch.device, dtype: torch.dtype) -> bool:
    """The engine's default product mode for fp32 weights: fp64 tensor cores where the device has fast ones,
    unless the environment sets ``AUTOGAZE_F64_DOTS=0`` (IEEE fp32 FMA products then)."""
    env = os.environ.get("AUTOGAZE_F64_DOTS", "1")
    if env not in ("0", "1"):
        raise ValueError(f"AUTOGAZE_F64_DOTS: expected 0 or 1, got {env!r}")
    return dtype == torch.float32 and env == "1" and fp64_tensor_cores(device)


def bf16_round(t: torch.Tensor) -> torch.Tensor:
    """fp32 tensor -> the fp32 values a kernel's ``.to(tl.bfloat16)`` gives: round to nearest even on the GPU,
    truncation under the interpreter (what Triton 3.9's interpreter does). For the torch references."""
    t = t.float()
    if interpreting():
        return (t.contiguous().view(torch.int32) & -65536).view(torch.float32)
    return t.bfloat16().float()
