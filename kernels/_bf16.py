"""The decoder's products in either mode: IEEE fp32, or both operands rounded to bf16 (tensor cores); fp32
accumulation."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import interpreting


@triton.jit
def mode_dot(a, b, TC: tl.constexpr):
    """a @ b, fp32 accumulation, in the launch's product mode (see tc_mode). a: fp32 activations; b: a weight or
    K/V tile in its storage dtype. TC == 0: IEEE fp32 (b upcast; never TF32). TC == 1: both rounded to bf16, on
    tensor cores. TC == 2: Triton's interpreter, which cannot multiply bf16 operands (3.9 returns garbage), gets
    fp32 products of the rounded values instead (its fp32 -> bf16 conversion truncates where the GPU rounds to
    nearest)."""
    if TC == 0:
        out = tl.dot(a, b.to(tl.float32), input_precision="ieee")
    elif TC == 1:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a.to(tl.bfloat16).to(tl.float32), b.to(tl.bfloat16).to(tl.float32), input_precision="ieee")
    return out


def tc_mode(bf16_dots: bool) -> int:
    """The TC constexpr of a launch: 0 = IEEE fp32 products, 1 = bf16 tensor cores, 2 = their interpreter stand-in."""
    if not bf16_dots:
        return 0
    return 2 if interpreting() else 1


def bf16_round(t: torch.Tensor) -> torch.Tensor:
    """fp32 tensor -> the fp32 values a kernel's ``.to(tl.bfloat16)`` gives: round to nearest even on the GPU,
    truncation under the interpreter (what Triton 3.9's interpreter does). For the torch references."""
    t = t.float()
    if interpreting():
        return (t.contiguous().view(torch.int32) & -65536).view(torch.float32)
    return t.bfloat16().float()
