"""The bf16 mode's products: both operands rounded to bf16, accumulated in fp32."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import interpreting


@triton.jit
def bf16_dot(a, b, TC: tl.constexpr):
    """a @ b with a and b rounded to bf16 and fp32 accumulation. TC == 1: on tensor cores. TC == 2: Triton's
    interpreter, which cannot multiply bf16 operands (3.9 returns garbage), gets fp32 products of the rounded
    values instead (its fp32 -> bf16 conversion truncates where the GPU rounds to nearest)."""
    if TC == 1:
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
