"""Fused attention residual + RMSNorm + SiLU-gated MLP, split over the intermediate dimension.

For every running row ``b`` and slot ``j < n``:

    h1 = x[b, j] + sum_{h < H} o_part[h, b, j]               (per-head o_proj partials, fixed order)
    m  = ln * h1 / sqrt(mean(h1^2) + eps)
    d_part[i, b, j] = (silu(m @ Wg_i^T) * (m @ Wu_i^T)) @ Wd_i^T   for intermediate slice i (BI columns)

``h1`` is written to ``h_out`` by slice 0. The caller (next layer or the heads) adds the NI partials in order,
so there are no float atomics. Grid: (B * cdiv(n, BN), NI) with NI = I / BI.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_tensor as _check


@triton.jit
def _residual_mlp_kernel(
    x_ptr, opart_ptr, h_out_ptr, ln_ptr, wgu_ptr, wd_ptr, alive_ptr, dpart_ptr,
    B, n, x_sb, part_stride, eps,
    C: tl.constexpr, H: tl.constexpr, I: tl.constexpr, BI: tl.constexpr, BLOCK_C: tl.constexpr,
    BN: tl.constexpr, BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr,
):
    pid = tl.program_id(0)
    nblk = tl.cdiv(n, BN)
    b = pid // nblk
    blk = pid % nblk
    pi = tl.program_id(1)
    if UPSTREAM:
        ob = tl.arange(0, BLOCK_B)
        go = tl.max(tl.load(alive_ptr + ob, mask=ob < B, other=0), axis=0)
    else:
        go = tl.load(alive_ptr + b)
    if go != 0:
        offs_n = blk * BN + tl.arange(0, BN)
        offs_c = tl.arange(0, BLOCK_C)
        nmask = offs_n < n
        cmask = offs_c < C
        m2 = nmask[:, None] & cmask[None, :]
        ptrs = b * x_sb + offs_n[:, None] * C + offs_c[None, :]
        h = tl.load(x_ptr + ptrs, mask=m2, other=0.0)
        for hh in tl.static_range(H):
            h += tl.load(opart_ptr + hh * part_stride + ptrs, mask=m2, other=0.0)
        if pi == 0:
            tl.store(h_out_ptr + ptrs, h, mask=m2)
        var = tl.sum(h * h, axis=1) / C
        ln = tl.load(ln_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
        a = ln[None, :] * (h * tl.math.rsqrt(var + eps)[:, None])
        offs_i = pi * BI + tl.arange(0, BI)
        wg = tl.load(wgu_ptr + offs_i[:, None] * C + offs_c[None, :], mask=cmask[None, :], other=0.0).to(tl.float32)
        wu = tl.load(wgu_ptr + (I + offs_i)[:, None] * C + offs_c[None, :], mask=cmask[None, :],
                     other=0.0).to(tl.float32)
        g = tl.dot(a, tl.trans(wg), input_precision="ieee")  # [BN, BI]
        u = tl.dot(a, tl.trans(wu), input_precision="ieee")
        act = g / (1.0 + tl.exp(-g)) * u
        wd = tl.load(wd_ptr + offs_c[:, None] * I + offs_i[None, :], mask=cmask[:, None], other=0.0).to(tl.float32)
        d = tl.dot(act, tl.trans(wd), input_precision="ieee")  # [BN, BLOCK_C]
        tl.store(dpart_ptr + pi * part_stride + ptrs, d, mask=m2)


def residual_mlp(x, o_part, h_out, ln_w, w_gate_up, w_down, alive, d_part, n, eps, upstream, block_n=16):
    """x, h_out [B, S, C] fp32; o_part [H, B, S, C] fp32; ln_w [C]; w_gate_up [2I, C] (cat(gate, up));
    w_down [C, I]; alive [B] int32; d_part [NI, B, S, C] fp32 receives the NI partials (I % NI == 0)."""
    B, S, C = x.shape
    dev = x.device
    f32 = (torch.float32,)
    wdt = (torch.float32, torch.bfloat16)
    _check("x", x, (B, S, C), f32, dev)
    if not 1 <= n <= S:
        raise ValueError(f"n: expected 1 <= n <= {S}, got {n}")
    H = o_part.shape[0]
    _check("o_part", o_part, (H, B, S, C), f32, dev)
    _check("h_out", h_out, (B, S, C), f32, dev)
    _check("ln_w", ln_w, (C,), wdt, dev)
    I2 = w_gate_up.shape[0]
    _check("w_gate_up", w_gate_up, (I2, C), wdt, dev)
    I = I2 // 2
    _check("w_down", w_down, (C, I), wdt, dev)
    _check("alive", alive, (B,), (torch.int32,), dev)
    NI = d_part.shape[0]
    _check("d_part", d_part, (NI, B, S, C), f32, dev)
    if I % NI or (I // NI) & (I // NI - 1) or I // NI < 16:
        raise ValueError(f"d_part: {NI} slices must split I={I} into power-of-two widths >= 16")
    grid = (B * triton.cdiv(n, block_n), NI)
    _residual_mlp_kernel[grid](
        x, o_part, h_out, ln_w, w_gate_up, w_down, alive, d_part,
        B, n, S * C, B * S * C, float(eps),
        C=C, H=H, I=I, BI=I // NI, BLOCK_C=triton.next_power_of_2(C), BN=block_n,
        BLOCK_B=triton.next_power_of_2(B), UPSTREAM=bool(upstream), num_warps=4,
    )


def residual_mlp_ref(x, o_part, h_out, ln_w, w_gate_up, w_down, alive, d_part, n, eps, upstream, block_n=16):
    """Torch reference with the launcher's signature and in-place effects."""
    a = alive != 0
    go = a.any().expand_as(a) if upstream else a
    h = x[:, :n] + o_part[:, :, :n].sum(0)
    h_out[go, :n] = h[go]
    m = ln_w.float() * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))
    I = w_down.shape[1]
    gu = m @ w_gate_up.float().t()
    act = torch.nn.functional.silu(gu[..., :I]) * gu[..., I:]
    NI = d_part.shape[0]
    BI = I // NI
    wd = w_down.float()
    for i in range(NI):
        d = act[..., i * BI:(i + 1) * BI] @ wd[:, i * BI:(i + 1) * BI].t()
        d_part[i, go, :n] = d[go]
