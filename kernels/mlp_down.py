"""MLP down-projection fused with the residual add (the second half of a decoder layer's MLP).

For every running row ``b`` and slot ``j < n``:

    out[b, j, c] = h[b, j, c] + act[b, j, :] @ Wd[c, :]       for c in this program's BC output columns

Each program owns complete output columns (the I-long reduction runs inside it: in sequential blocks of BKI, or
as S slices of KS multiplied side by side and summed), so the next layer reads a finished residual stream: no
partial sums to add, no float atomics.
Grid: (B * cdiv(n, BN), cdiv(C, BC)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_tensor as _check
from ._products import acc_dot, acc_zeros, bf16_round, slice_dot, tc_mode
from ._checks import check_bf16_dots, check_feed, split_slices, token_blocks
from ._feed import feed_block
from ._pdl import gdc_enter, pdl_options, pdl_wanted


@triton.jit
def _mlp_down_kernel(
    h_ptr, act_ptr, wd_ptr, alive_ptr, out_ptr,
    B, n, x_sb, act_sb,
    C: tl.constexpr, I: tl.constexpr, BC: tl.constexpr, BKI: tl.constexpr, BN: tl.constexpr,
    BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr, KS: tl.constexpr, S: tl.constexpr, TC: tl.constexpr,
    FLAT: tl.constexpr,
    GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    b, blk, tok, tmask, rb, go = feed_block(tl.program_id(0), alive_ptr, B, n, BN, BLOCK_B, UPSTREAM, FLAT)
    cb = tl.program_id(1)
    if go != 0:
        if FLAT:
            offs_n = rb * (x_sb // C) + tok % n  # h, out and act rows all hold x_sb // C slots
            nmask = tmask
        else:
            offs_n = blk * BN + tl.arange(0, BN)
            nmask = offs_n < n
        offs_o = cb * BC + tl.arange(0, BC)
        omask = offs_o < C
        if S == 1:
            acc = acc_zeros(BN, BC, TC)  # fp64 with fp64 products: one rounding at the loop's end
            for k0 in tl.static_range(0, I, BKI):
                offs_k = k0 + tl.arange(0, BKI)
                kmask = offs_k < I
                a = tl.load(act_ptr + b * act_sb + offs_n[:, None] * I + offs_k[None, :],
                            mask=nmask[:, None] & kmask[None, :], other=0.0)
                w = tl.load(wd_ptr + offs_o[:, None] * I + offs_k[None, :], mask=omask[:, None] & kmask[None, :],
                            other=0.0)  # [BC, BKI]
                acc = acc_dot(acc, a, tl.trans(w), TC)
            acc = acc.to(tl.float32)
        else:
            # the whole I axis at once, in S slices of KS multiplied in parallel and summed (short FMA chains)
            col_a = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]  # [S, 1, KS]
            a = tl.load(act_ptr + b * act_sb + offs_n[None, :, None] * I + col_a,
                        mask=nmask[None, :, None] & (col_a < I), other=0.0)  # [S, BN, KS]
            col_w = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, :, None]  # [S, KS, 1]
            w = tl.load(wd_ptr + offs_o[None, None, :] * I + col_w, mask=(col_w < I) & omask[None, None, :],
                        other=0.0).to(tl.float32)  # [S, KS, BC]
            acc = slice_dot(a, w, TC)
        ptrs = b * x_sb + offs_n[:, None] * C + offs_o[None, :]
        m2 = nmask[:, None] & omask[None, :]
        h = tl.load(h_ptr + ptrs, mask=m2, other=0.0)
        tl.store(out_ptr + ptrs, h + acc, mask=m2)


def mlp_down(h, act, w_down, alive, out, n, upstream, block_n=16, block_c=16, block_k=128,
             num_warps=4, split_k=0, bf16_dots=False, f64_dots=False, flat=False):
    """h, out [B, S, C] fp32 (distinct buffers); act [B, S, I] fp32; w_down [C, I] (fp32 or bf16); alive [B]
    int32. Writes out = h + act @ w_down^T on the first ``n`` slots of running rows. ``split_k``: 0 (the I axis
    in sequential blocks of ``block_k``) or the slice length of parallel partial products over all of I.
    ``bf16_dots`` (bf16 weights only): tensor-core products of bf16-rounded activations (split_k ignored).
    ``f64_dots``: the products on fp64 tensor cores (kernels/_products.py; exclusive with ``bf16_dots``).
    ``flat``: programs of ``block_n`` consecutive tokens of the B x n feed across rows (see mlp_gate_up)."""
    B, S, C = check_feed("h", h, n)
    dev = h.device
    f32 = (torch.float32,)
    I = act.shape[2]
    _check("act", act, (B, S, I), f32, dev)
    _check("w_down", w_down, (C, I), (torch.float32, torch.bfloat16), dev)
    _check("alive", alive, (B,), (torch.int32,), dev)
    _check("out", out, (B, S, C), f32, dev)
    if out.data_ptr() == h.data_ptr():
        raise ValueError("out: must not alias h")
    for nm, v in (("block_c", block_c), ("block_k", block_k)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"{nm}: expected a power of two >= 16, got {v}")
    check_bf16_dots(bf16_dots, w_down, "w_down")
    ks, nks = split_slices(0 if bf16_dots else split_k, I, block_n, block_c)
    grid = (token_blocks(B, n, block_n, flat), triton.cdiv(C, block_c))
    _mlp_down_kernel[grid](
        h, act, w_down, alive, out, B, n, S * C, S * I,
        C=C, I=I, BC=block_c, BKI=block_k, BN=block_n, BLOCK_B=triton.next_power_of_2(B),
        UPSTREAM=bool(upstream), KS=ks, S=nks, TC=tc_mode(bf16_dots, f64_dots), FLAT=bool(flat),
        **pdl_options(pdl_wanted(h)), num_warps=num_warps,
    )


def mlp_down_ref(h, act, w_down, alive, out, n, upstream, block_n=16, block_c=16, block_k=128,
                 num_warps=4, split_k=0, bf16_dots=False, f64_dots=False, flat=False):
    """Torch reference with the launcher's signature and in-place effects."""
    a = alive != 0
    go = a.any().expand_as(a) if upstream else a
    a = bf16_round(act[:, :n]) if bf16_dots else act[:, :n]
    y = h[:, :n] + a @ w_down.float().t()
    out[go, :n] = y[go]
