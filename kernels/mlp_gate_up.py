"""Fused attention residual + RMSNorm + SiLU-gated MLP up-projection (the first half of a decoder layer's MLP).

For every running row ``b`` and slot ``j < n``:

    h1 = x[b, j] + sum_{h < H} o_part[h, b, j]               (per-head o_proj partials, fixed order)
    m  = ln * h1 / sqrt(mean(h1^2) + eps)
    act[b, j, i] = silu(m @ Wg[i]) * (m @ Wu[i])              for i in this program's BI columns

``h1`` is written to ``h_out`` by the programs of column block 0. Each program recomputes the (cheap) norm of
its rows and produces a narrow slice of the intermediate activations, so a 10-token decode feed still spreads
over I / BI programs per row (the decode is latency-bound; wide weight tiles spill registers).
Grid: (B * cdiv(n, BN), cdiv(I, BI)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_tensor as _check
from ._norm import rms_normed_rows, rms_normed_slices
from ._products import acc_zeros, bf16_round, pair_acc_dot, pair_mode_dot, pair_slice_dot, tc_mode
from ._checks import check_bf16_dots, check_feed, split_slices, token_blocks
from ._feed import feed_block
from ._pdl import gdc_enter, pdl_options, pdl_wanted


@triton.jit
def _mlp_gate_up_kernel(
    x_ptr, opart_ptr, h_out_ptr, ln_ptr, wgu_ptr, alive_ptr, act_ptr,
    B, n, x_sb, part_stride, act_sb, eps,
    C: tl.constexpr, H: tl.constexpr, I: tl.constexpr, BI: tl.constexpr, BLOCK_C: tl.constexpr,
    BN: tl.constexpr, BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr, KS: tl.constexpr, S: tl.constexpr,
    TC: tl.constexpr, FLAT: tl.constexpr, NORMED: tl.constexpr, BK: tl.constexpr,
    GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    b, blk, tok, tmask, rb, go = feed_block(tl.program_id(0), alive_ptr, B, n, BN, BLOCK_B, UPSTREAM, FLAT)
    pi = tl.program_id(1)
    if go != 0:
        if FLAT:
            offs_n = rb * (x_sb // C) + tok % n  # x and act rows both hold x_sb // C slots
            nmask = tmask
        else:
            offs_n = blk * BN + tl.arange(0, BN)
            nmask = offs_n < n
        offs_i = pi * BI + tl.arange(0, BI)
        imask = offs_i < I
        if BK > 0:
            # normed input, GEMM-shaped: the hidden axis in sequential chunks of BK (no padding of C to a power
            # of two; large prefill feeds, where a program's throughput matters more than its chain's latency)
            g = acc_zeros(BN, BI, TC)  # fp64 with fp64 products: one rounding at the loop's end
            u = acc_zeros(BN, BI, TC)
            for k0 in tl.static_range(0, C, BK):
                offs_k = k0 + tl.arange(0, BK)
                kmask = offs_k < C
                a = tl.load(x_ptr + b * x_sb + offs_n[:, None] * C + offs_k[None, :],
                            mask=nmask[:, None] & kmask[None, :], other=0.0)
                g, u = pair_acc_dot(g, u, a, wgu_ptr, offs_i, I + offs_i, offs_k, imask[:, None] & kmask[None, :],
                                    C, TC)
            g = g.to(tl.float32)
            u = u.to(tl.float32)
        elif S == 1:
            offs_c = tl.arange(0, BLOCK_C)
            cmask = offs_c < C
            m2 = nmask[:, None] & cmask[None, :]
            ptrs = b * x_sb + offs_n[:, None] * C + offs_c[None, :]
            if NORMED:  # x holds the normed h1 already (residual_norm)
                a = tl.load(x_ptr + ptrs, mask=m2, other=0.0)
            else:
                h = tl.load(x_ptr + ptrs, mask=m2, other=0.0)
                for hh in tl.static_range(H):
                    h += tl.load(opart_ptr + hh * part_stride + ptrs, mask=m2, other=0.0)
                if pi == 0:
                    tl.store(h_out_ptr + ptrs, h, mask=m2)
                a = rms_normed_rows(h, ln_ptr, offs_c, cmask, eps, C)
            g, u = pair_mode_dot(a, wgu_ptr, offs_i, I + offs_i, offs_c, imask[:, None] & cmask[None, :], C, TC)
        else:
            # hidden axis in S slices of KS, multiplied in parallel and summed (as in rmsnorm_qkv_rope)
            col_a = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]  # [S, 1, KS]
            m3 = nmask[None, :, None] & (col_a < C)
            ptrs = b * x_sb + offs_n[None, :, None] * C + col_a
            if NORMED:
                a = tl.load(x_ptr + ptrs, mask=m3, other=0.0)
            else:
                h = tl.load(x_ptr + ptrs, mask=m3, other=0.0)
                for hh in tl.static_range(H):
                    h += tl.load(opart_ptr + hh * part_stride + ptrs, mask=m3, other=0.0)
                if pi == 0:
                    tl.store(h_out_ptr + ptrs, h, mask=m3)
                a = rms_normed_slices(h, ln_ptr, col_a, eps, C)
            col_w = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, :, None]  # [S, KS, 1]
            g, u = pair_slice_dot(a, wgu_ptr, offs_i, I + offs_i, col_w, (col_w < C) & imask[None, None, :], C, TC)
        act = g / (1.0 + tl.exp(-g)) * u
        tl.store(act_ptr + b * act_sb + offs_n[:, None] * I + offs_i[None, :], act,
                 mask=nmask[:, None] & imask[None, :])


def mlp_gate_up(x, o_part, h_out, ln_w, w_gate_up, alive, act, n, eps, upstream, block_n=16, block_i=16,
                num_warps=4, split_k=0, bf16_dots=False, f64_dots=False, flat=False, normed=False, block_k=0):
    """x, h_out [B, S, C] fp32; o_part [H, B, S, C] fp32; ln_w [C]; w_gate_up [2I, C] (cat(gate, up), fp32 or
    bf16); alive [B] int32; act [B, S, I] fp32 receives silu(gate) * up for the first ``n`` slots of running
    rows. ``block_i``: intermediate columns per program (a power of two >= 16). ``split_k``: 0, or the slice
    length of the hidden axis (a power of two >= 16) for parallel partial products (see rmsnorm_qkv_rope).
    ``bf16_dots`` (bf16 weights only): tensor-core products of bf16-rounded activations (split_k ignored).
    ``f64_dots``: the products on fp64 tensor cores (kernels/_products.py; exclusive with ``bf16_dots``).
    ``flat``: a program takes ``block_n`` consecutive tokens of the B x n feed across row boundaries (fewer
    programs and no per-row padding when n is not a multiple of block_n, e.g. 10-token decode feeds of many rows)
    instead of ``block_n`` slots of one row.
    ``normed``: ``x`` already holds the normed h1 (``residual_norm``'s ``m_out``); the merge, the norm and the
    ``h_out`` store are skipped (``o_part``, ``h_out`` and ``ln_w`` are then only checked).
    ``block_k`` (normed only; 0: off): the hidden axis in sequential chunks of ``block_k`` (a power of two >= 16)
    with an accumulator tile per program, a plain GEMM for large prefill feeds (``split_k`` is then ignored)."""
    B, S, C = check_feed("x", x, n)
    dev = x.device
    f32 = (torch.float32,)
    wdt = (torch.float32, torch.bfloat16)
    H = o_part.shape[0]
    _check("o_part", o_part, (H, B, S, C), f32, dev)
    _check("h_out", h_out, (B, S, C), f32, dev)
    _check("ln_w", ln_w, (C,), wdt, dev)
    I2 = w_gate_up.shape[0]
    _check("w_gate_up", w_gate_up, (I2, C), wdt, dev)
    I = I2 // 2
    _check("alive", alive, (B,), (torch.int32,), dev)
    _check("act", act, (B, S, I), f32, dev)
    if block_i < 16 or block_i & (block_i - 1):
        raise ValueError(f"block_i: expected a power of two >= 16, got {block_i}")
    check_bf16_dots(bf16_dots, w_gate_up, "w_gate_up")
    if block_k:
        if not normed:
            raise ValueError("block_k: the chunked hidden axis needs normed=True (the norm reads whole rows)")
        if block_k < 16 or block_k & (block_k - 1):
            raise ValueError(f"block_k: expected 0 or a power of two >= 16, got {block_k}")
    ks, nks = split_slices(0 if bf16_dots or block_k else split_k, C, block_n, block_i)
    grid = (token_blocks(B, n, block_n, flat), triton.cdiv(I, block_i))
    _mlp_gate_up_kernel[grid](
        x, o_part, h_out, ln_w, w_gate_up, alive, act,
        B, n, S * C, B * S * C, S * I, float(eps),
        C=C, H=H, I=I, BI=block_i, BLOCK_C=triton.next_power_of_2(C), BN=block_n,
        BLOCK_B=triton.next_power_of_2(B), UPSTREAM=bool(upstream), KS=ks, S=nks, TC=tc_mode(bf16_dots, f64_dots),
        FLAT=bool(flat), NORMED=bool(normed), BK=int(block_k), **pdl_options(pdl_wanted(x)), num_warps=num_warps,
    )


def mlp_gate_up_ref(x, o_part, h_out, ln_w, w_gate_up, alive, act, n, eps, upstream, block_n=16, block_i=16,
                    num_warps=4, split_k=0, bf16_dots=False, f64_dots=False, flat=False, normed=False, block_k=0):
    """Torch reference with the launcher's signature and in-place effects."""
    a = alive != 0
    go = a.any().expand_as(a) if upstream else a
    if normed:
        m = x[:, :n]
    else:
        h = x[:, :n] + o_part[:, :, :n].sum(0)
        h_out[go, :n] = h[go]
        m = ln_w.float() * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))
    if bf16_dots:
        m = bf16_round(m)
    I = w_gate_up.shape[0] // 2
    gu = m @ w_gate_up.float().t()
    act[go, :n] = (torch.nn.functional.silu(gu[..., :I]) * gu[..., I:])[go]
