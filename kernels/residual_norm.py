"""Attention residual merge + RMSNorm, once per token (the front of a decoder layer's MLP, for large prefill feeds).

For every running row ``b`` and slot ``j < n``:

    h1[b, j] = x[b, j] + sum_{h < H} o_part[h, b, j]          (per-head o_proj partials, fixed order)
    m[b, j]  = ln * h1 / sqrt(mean(h1^2) + eps)

``mlp_gate_up`` does the same inside every one of its column programs (I / BI of them a token block), which is
cheap at a 10-token decode feed and costly at a prefill feed of many rows (each program re-reads the H + 1
inputs): with this kernel first, ``mlp_gate_up(..., normed=True)`` reads ``m`` once and skips the merge and norm.
Grid: (B * cdiv(n, BN),).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_feed, check_tensor as _check
from ._feed import feed_block
from ._pdl import gdc_enter, pdl_options, pdl_wanted


@triton.jit
def _residual_norm_kernel(
    x_ptr, opart_ptr, h_out_ptr, ln_ptr, alive_ptr, m_ptr,
    B, n, x_sb, part_stride, eps,
    C: tl.constexpr, H: tl.constexpr, BLOCK_C: tl.constexpr, BN: tl.constexpr, BLOCK_B: tl.constexpr,
    UPSTREAM: tl.constexpr,
    GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    b, blk, _, _, _, go = feed_block(tl.program_id(0), alive_ptr, B, n, BN, BLOCK_B, UPSTREAM, False)
    if go != 0:
        offs_n = blk * BN + tl.arange(0, BN)
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        m2 = (offs_n < n)[:, None] & cmask[None, :]
        ptrs = b * x_sb + offs_n[:, None] * C + offs_c[None, :]
        h = tl.load(x_ptr + ptrs, mask=m2, other=0.0)
        for hh in tl.static_range(H):
            h += tl.load(opart_ptr + hh * part_stride + ptrs, mask=m2, other=0.0)
        tl.store(h_out_ptr + ptrs, h, mask=m2)
        var = tl.sum(h * h, axis=1) / C
        ln = tl.load(ln_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
        tl.store(m_ptr + ptrs, ln[None, :] * (h * tl.math.rsqrt(var + eps)[:, None]), mask=m2)


def _check_args(x, o_part, h_out, ln_w, alive, m_out, n):
    B, S, C = check_feed("x", x, n)
    dev = x.device
    f32 = (torch.float32,)
    _check("o_part", o_part, (o_part.shape[0], B, S, C), f32, dev)
    _check("h_out", h_out, (B, S, C), f32, dev)
    _check("ln_w", ln_w, (C,), (torch.float32, torch.bfloat16), dev)
    _check("alive", alive, (B,), (torch.int32,), dev)
    _check("m_out", m_out, (B, S, C), f32, dev)


def residual_norm(x, o_part, h_out, ln_w, alive, m_out, n, eps, upstream, block_n=32, num_warps=8):
    """x, h_out, m_out [B, S, C] fp32; o_part [H, B, S, C] fp32; ln_w [C] (fp32 or bf16); alive [B] int32.
    Writes h1 to ``h_out`` and its RMSNorm (times ``ln_w``) to ``m_out`` for the first ``n`` slots of running rows
    (every row when ``upstream`` and any row is alive). num_warps 8: with 4, the H + 1 [block_n x pow2(C)] tiles
    in flight spill (ptxas, sm_90: 600 bytes a thread at block_n 32; bench/kernel_regs.py)."""
    _check_args(x, o_part, h_out, ln_w, alive, m_out, n)
    B, S, C = x.shape
    if block_n < 1 or block_n & (block_n - 1):
        raise ValueError(f"block_n: expected a power of two, got {block_n}")
    _residual_norm_kernel[(B * triton.cdiv(n, block_n),)](
        x, o_part, h_out, ln_w, alive, m_out,
        B, n, S * C, B * S * C, float(eps),
        C=C, H=o_part.shape[0], BLOCK_C=triton.next_power_of_2(C), BN=block_n,
        BLOCK_B=triton.next_power_of_2(B), UPSTREAM=bool(upstream), **pdl_options(pdl_wanted(x)), num_warps=num_warps,
    )


def residual_norm_ref(x, o_part, h_out, ln_w, alive, m_out, n, eps, upstream, block_n=32, num_warps=8):
    """Torch reference with the launcher's signature and in-place effects."""
    a = alive != 0
    go = a.any().expand_as(a) if upstream else a
    h = x[:, :n] + o_part[:, :, :n].sum(0)
    h_out[go, :n] = h[go]
    m_out[go, :n] = (ln_w.float() * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)))[go]
