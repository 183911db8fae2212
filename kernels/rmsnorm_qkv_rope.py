"""Fused residual combine + RMSNorm + QKV projection + llama3 RoPE + KV-cache write (one decoder layer's front).

For every row ``b`` that is still generating and every slot ``j`` of the ``n`` new tokens:

    h      = x[b, j] + sum_p parts[p, b, j]              (the previous layer's split-K MLP partials)
    a      = ln * h / sqrt(mean(h^2) + eps)
    q,k,v  = a @ Wq^T, a @ Wk^T, a @ Wv^T                 (w_qkv = cat(Wq, Wk, Wv) [3C, C])
    q, k   = rope(q, pos[b, j]), rope(k, pos[b, j])      ("rotate half", cos/sin from tables)
    q_out[b, :, j] = q ;  cache[b, :, qoff[b] + qoff_add + j] = k, v   (only for j >= jmin[b])

Slots below ``jmin[b]`` are junk (ragged prefill, right-aligned pending chunk) and never reach the cache.
``alive`` gates rows: a row runs if ``alive[b]`` (independent semantics) or if any row is alive (upstream).
Grid: (B * cdiv(n, BN), 3 * cdiv(H * D / 2, HB)): one program per token block and per (q|k|v, block of HB
rotation pairs); HB = D / 2 gives one head per program. With ``flat`` the token blocks run across rows
(cdiv(B * n, BN) of them), as in mlp_gate_up.
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
def _rmsnorm_qkv_rope_kernel(
    x_ptr, part_ptr, h_out_ptr, ln_ptr, w_ptr, cos_ptr, sin_ptr, pos_ptr,
    qoff_ptr, qoff_add, jmin_ptr, alive_ptr, q_ptr, k_ptr, v_ptr,
    B, n, n_parts, part_stride, x_sb, pos_sb, q_sb, q_sh, c_sb, c_sh, c_sl, eps,
    C: tl.constexpr, H: tl.constexpr, D: tl.constexpr, BLOCK_C: tl.constexpr, BN: tl.constexpr, HB: tl.constexpr,
    BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr, WRITE_H: tl.constexpr, KS: tl.constexpr,
    S: tl.constexpr, TC: tl.constexpr, FLAT: tl.constexpr, BK: tl.constexpr,
    GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    pid = tl.program_id(0)
    cb = tl.program_id(1)
    HALF: tl.constexpr = D // 2
    NCB: tl.constexpr = (H * HALF + HB - 1) // HB
    which = cb // NCB  # 0 = q, 1 = k, 2 = v
    b, blk, tok, tmask, rb, go = feed_block(pid, alive_ptr, B, n, BN, BLOCK_B, UPSTREAM, FLAT)
    if FLAT:
        jj = tok % n  # token = rb * n + jj
    if go != 0:
        if FLAT:
            offs_n = rb * (x_sb // C) + jj  # slot of row rb counted from row 0's base (x rows hold x_sb // C)
            nmask = tmask
        else:
            offs_n = blk * BN + tl.arange(0, BN)
            nmask = offs_n < n
        # HB "half columns": column e is dim e % HALF of head e // HALF; its rotation partner is dim + HALF
        offs_e = (cb % NCB) * HB + tl.arange(0, HB)
        emask = offs_e < H * HALF
        head = offs_e // HALF
        dd = offs_e % HALF
        wrow = which * C + head * D + dd
        if BK > 0:
            # GEMM-shaped (large prefill feeds, no residual partials): the rows' sums of squares over BK-wide
            # chunks, then the hidden axis in sequential BK chunks into accumulator tiles (fp64 with fp64
            # products: one rounding at the loop's end)
            ss = tl.zeros([BN], tl.float32)
            for k0 in tl.static_range(0, C, BK):
                offs_k = k0 + tl.arange(0, BK)
                hk = tl.load(x_ptr + b * x_sb + offs_n[:, None] * C + offs_k[None, :],
                             mask=nmask[:, None] & (offs_k < C)[None, :], other=0.0)
                ss += tl.sum(hk * hk, axis=1)
            r = tl.math.rsqrt(ss / C + eps)
            x1 = acc_zeros(BN, HB, TC)
            x2 = acc_zeros(BN, HB, TC)
            for k0 in tl.static_range(0, C, BK):
                offs_k = k0 + tl.arange(0, BK)
                kmask = offs_k < C
                hk = tl.load(x_ptr + b * x_sb + offs_n[:, None] * C + offs_k[None, :],
                             mask=nmask[:, None] & kmask[None, :], other=0.0)
                lk = tl.load(ln_ptr + offs_k, mask=kmask, other=0.0).to(tl.float32)
                a = lk[None, :] * (hk * r[:, None])
                x1, x2 = pair_acc_dot(x1, x2, a, w_ptr, wrow, wrow + HALF, offs_k, emask[:, None] & kmask[None, :],
                                      C, TC)
            x1 = x1.to(tl.float32)
            x2 = x2.to(tl.float32)
        elif S == 1:
            offs_c = tl.arange(0, BLOCK_C)
            cmask = offs_c < C
            m2 = nmask[:, None] & cmask[None, :]
            ptrs = b * x_sb + offs_n[:, None] * C + offs_c[None, :]
            h = tl.load(x_ptr + ptrs, mask=m2, other=0.0)
            for p in range(n_parts):
                h += tl.load(part_ptr + p * part_stride + ptrs, mask=m2, other=0.0)
            if WRITE_H:
                if cb == 0:
                    tl.store(h_out_ptr + ptrs, h, mask=m2)
            a = rms_normed_rows(h, ln_ptr, offs_c, cmask, eps, C)
            x1, x2 = pair_mode_dot(a, w_ptr, wrow, wrow + HALF, offs_c, emask[:, None] & cmask[None, :], C, TC)
        else:
            # The inner axis cut into S slices of KS: [S, BN, KS] activations times [S, KS, HB] weights in one
            # batched product, then a sum over the slices. Each slice's FMA chain is KS long instead of C, which
            # is what a 10-token decode product's latency grows with (bench/dot_probe.py).
            col_a = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]  # [S, 1, KS]
            m3 = nmask[None, :, None] & (col_a < C)
            ptrs = b * x_sb + offs_n[None, :, None] * C + col_a
            h = tl.load(x_ptr + ptrs, mask=m3, other=0.0)
            for p in range(n_parts):
                h += tl.load(part_ptr + p * part_stride + ptrs, mask=m3, other=0.0)
            if WRITE_H:
                if cb == 0:
                    tl.store(h_out_ptr + ptrs, h, mask=m3)
            a = rms_normed_slices(h, ln_ptr, col_a, eps, C)
            col_w = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, :, None]  # [S, KS, 1]
            x1, x2 = pair_slice_dot(a, w_ptr, wrow, wrow + HALF, col_w, (col_w < C) & emask[None, None, :], C, TC)
        if FLAT:
            jmin = tl.load(jmin_ptr + rb, mask=nmask, other=0)
            pslot = rb * pos_sb + jj
        else:
            jmin = tl.load(jmin_ptr + b)
            pslot = b * pos_sb + offs_n
        if which < 2:
            pos = tl.load(pos_ptr + pslot, mask=nmask, other=0)
            tab = pos[:, None] * HALF + dd[None, :]
            cs = tl.load(cos_ptr + tab, mask=nmask[:, None], other=0.0)
            sn = tl.load(sin_ptr + tab, mask=nmask[:, None], other=0.0)
            y1 = x1 * cs - x2 * sn
            y2 = x2 * cs + x1 * sn
        else:
            y1 = x1
            y2 = x2
        if which == 0:
            if FLAT:
                qp = q_ptr + rb[:, None] * q_sb + head[None, :] * q_sh + jj[:, None] * D + dd[None, :]
            else:
                qp = q_ptr + b * q_sb + head[None, :] * q_sh + offs_n[:, None] * D + dd[None, :]
            qm = nmask[:, None] & emask[None, :]
            tl.store(qp, y1, mask=qm)
            tl.store(qp + HALF, y2, mask=qm)
        else:
            if FLAT:
                row = tl.load(qoff_ptr + rb, mask=nmask, other=0) + qoff_add + jj
                cp = rb[:, None] * c_sb + head[None, :] * c_sh + row[:, None] * c_sl + dd[None, :]
                sm = (nmask & (jj >= jmin))[:, None] & emask[None, :]
            else:
                row = tl.load(qoff_ptr + b) + qoff_add + offs_n
                cp = b * c_sb + head[None, :] * c_sh + row[:, None] * c_sl + dd[None, :]
                sm = (nmask & (offs_n >= jmin))[:, None] & emask[None, :]
            if which == 1:
                tl.store(k_ptr + cp, y1.to(k_ptr.dtype.element_ty), mask=sm)
                tl.store(k_ptr + cp + HALF, y2.to(k_ptr.dtype.element_ty), mask=sm)
            else:
                tl.store(v_ptr + cp, y1.to(v_ptr.dtype.element_ty), mask=sm)
                tl.store(v_ptr + cp + HALF, y2.to(v_ptr.dtype.element_ty), mask=sm)


def _check_args(x, parts, h_out, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, jmin, alive, q_out, k_cache, v_cache, n):
    B, S, C = check_feed("x", x, n)
    dev = x.device
    f32 = (torch.float32,)
    wdt = (torch.float32, torch.bfloat16)
    if parts is not None:
        _check("parts", parts, (parts.shape[0], B, S, C), f32, dev)
        if h_out is None:
            raise ValueError("h_out: required when parts are given")
        _check("h_out", h_out, (B, S, C), f32, dev)
    _check("ln_w", ln_w, (C,), wdt, dev)
    _check("w_qkv", w_qkv, (3 * C, C), wdt, dev)
    H, Lmax, D = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    if H * D != C or D % 2:
        raise ValueError(f"k_cache: heads {H} x head dim {D} must equal C={C} with even D")
    _check("k_cache", k_cache, (B, H, Lmax, D), wdt, dev)
    _check("v_cache", v_cache, (B, H, Lmax, D), (k_cache.dtype,), dev)
    _check("cos_tab", cos_tab, (cos_tab.shape[0], D // 2), f32, dev)
    _check("sin_tab", sin_tab, (cos_tab.shape[0], D // 2), f32, dev)
    _check("pos", pos, (B, pos.shape[1]), (torch.int32,), dev)
    if pos.shape[1] < n:
        raise ValueError(f"pos: needs at least n={n} columns, got {pos.shape[1]}")
    for nm, t in (("qoff", qoff), ("jmin", jmin), ("alive", alive)):
        _check(nm, t, (B,), (torch.int32,), dev)
    _check("q_out", q_out, (B, H, q_out.shape[2], D), f32, dev)
    if q_out.shape[2] < n:
        raise ValueError(f"q_out: needs at least n={n} slots, got {q_out.shape[2]}")


def rmsnorm_qkv_rope(x, parts, h_out, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, qoff_add, jmin, alive,
                     q_out, k_cache, v_cache, n, eps, upstream, block_n=16, block_h=16,
                     num_warps=4, split_k=0, bf16_dots=False, f64_dots=False, flat=False, block_k=0):
    """Launch on the first ``n`` slots. Shapes (S = slot capacity of the activation buffers):

    x [B, S, C] fp32 residual; parts [P, B, S, C] fp32 or None (then h = x and h_out is unused);
    h_out [B, S, C] fp32 (receives h when parts are given); ln_w [C]; w_qkv [3C, C] (fp32 or bf16);
    cos_tab, sin_tab [Pmax, D/2] fp32 indexed by position; pos [B, >=n] int32; qoff, jmin, alive [B] int32;
    q_out [B, H, >=n, D] fp32; k_cache, v_cache [B, H, Lmax, D] (fp32 or bf16). ``upstream``: bool.
    ``split_k``: 0 = one product over the whole hidden axis per program; else a power of two >= 16: the
    hidden axis in slices of that many columns, multiplied in parallel and summed (see the kernel).
    ``bf16_dots`` (bf16 weights only): the product on tensor cores with the normalised activations rounded to
    bf16 (fp32 accumulation); ``split_k`` is then ignored (one product over the hidden axis).
    ``flat``: a program takes ``block_n`` consecutive tokens of the B x n feed across row boundaries (see
    mlp_gate_up).
    ``f64_dots``: the products on fp64 tensor cores (kernels/_products.py; exclusive with ``bf16_dots``).
    ``block_k`` (0: off; needs ``parts`` None): the hidden axis in sequential chunks of ``block_k`` (a power of two
    >= 16) into accumulator tiles, a plain GEMM for large prefill feeds (``split_k`` is then ignored).
    """
    _check_args(x, parts, h_out, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, jmin, alive, q_out, k_cache, v_cache, n)
    B, S, C = x.shape
    H, D = k_cache.shape[1], k_cache.shape[3]
    P = 0 if parts is None else parts.shape[0]
    if block_h < 16 or block_h & (block_h - 1):
        raise ValueError(f"block_h: expected a power of two >= 16, got {block_h}")
    check_bf16_dots(bf16_dots, w_qkv, "w_qkv")
    if block_k:
        if P:
            raise ValueError("block_k: the chunked hidden axis takes no residual parts (parts must be None)")
        if block_k < 16 or block_k & (block_k - 1):
            raise ValueError(f"block_k: expected 0 or a power of two >= 16, got {block_k}")
    ks, nks = split_slices(0 if bf16_dots or block_k else split_k, C, block_n, block_h)
    grid = (token_blocks(B, n, block_n, flat), 3 * triton.cdiv(H * D // 2, block_h))
    _rmsnorm_qkv_rope_kernel[grid](
        x, x if parts is None else parts, x if h_out is None else h_out, ln_w, w_qkv, cos_tab, sin_tab, pos,
        qoff, int(qoff_add), jmin, alive, q_out, k_cache, v_cache,
        B, n, P, B * S * C, S * C, pos.shape[1], q_out.stride(0), q_out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), float(eps),
        C=C, H=H, D=D, BLOCK_C=triton.next_power_of_2(C), BN=block_n, HB=block_h,
        BLOCK_B=triton.next_power_of_2(B), UPSTREAM=bool(upstream), WRITE_H=P > 0,
        KS=ks, S=nks, TC=tc_mode(bf16_dots, f64_dots), FLAT=bool(flat), BK=int(block_k), **pdl_options(pdl_wanted(x)),
        num_warps=num_warps,
    )


def row_go(alive: torch.Tensor, upstream: bool) -> torch.Tensor:
    """[B] bool: which rows run, given the alive flags [B] int32."""
    a = alive != 0
    return a.any().expand_as(a) if upstream else a


def rmsnorm_qkv_rope_ref(x, parts, h_out, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, qoff_add, jmin, alive,
                         q_out, k_cache, v_cache, n, eps, upstream, block_n=16, block_h=16,
                         num_warps=4, split_k=0, bf16_dots=False, f64_dots=False, flat=False, block_k=0):
    """Torch reference with the launcher's signature and in-place effects."""
    B, S, C = x.shape
    H, D = k_cache.shape[1], k_cache.shape[3]
    go = row_go(alive, upstream)
    h = x[:, :n].clone()
    if parts is not None:
        for p in range(parts.shape[0]):
            h = h + parts[p, :, :n]
        h_out[go, :n] = h[go]
    a = ln_w.float() * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))
    if bf16_dots:
        a = bf16_round(a)
    qkv = (a @ w_qkv.float().t()).view(B, n, 3, H, D).permute(2, 0, 3, 1, 4)  # [3, B, H, n, D]
    p = pos[:, :n].long()
    lo, hi = int(p.min()), int(p.max())
    if lo < 0 or hi >= cos_tab.shape[0]:  # torch would wrap a -1 to the last row; the kernel reads outside the table
        raise IndexError(f"pos: positions must lie in [0, {cos_tab.shape[0]}), got [{lo}, {hi}]")
    cs = torch.cat([cos_tab[p], cos_tab[p]], -1)[:, None]  # [B, 1, n, D]
    sn = torch.cat([sin_tab[p], sin_tab[p]], -1)[:, None]

    def rope(t):
        rot = torch.cat([-t[..., D // 2:], t[..., : D // 2]], dim=-1)
        return t * cs + rot * sn

    q, k, v = rope(qkv[0]), rope(qkv[1]), qkv[2]
    for b in range(B):
        if not bool(go[b]):
            continue
        q_out[b, :, :n] = q[b]
        j0 = int(jmin[b])
        r0 = int(qoff[b]) + int(qoff_add)
        if j0 < n:
            k_cache[b, :, r0 + j0:r0 + n] = _cache_cast(k[b, :, j0:], k_cache.dtype)
            v_cache[b, :, r0 + j0:r0 + n] = _cache_cast(v[b, :, j0:], v_cache.dtype)


def _cache_cast(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """K/V values as the kernel stores them: a bf16 cache gets the platform's conversion (see bf16_round)."""
    return bf16_round(t).to(dtype) if dtype == torch.bfloat16 else t.to(dtype)
