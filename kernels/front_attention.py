"""A decode feed's layer front fused into its split-K attention: RMSNorm + q / k / v projection + llama3 RoPE +
KV-cache write + attention over the cache + the per-head o_proj partial, one launch instead of
``rmsnorm_qkv_rope`` then ``attention``.

For row ``b`` (if it runs, see ``alive``), head ``h`` and new slot ``j < n`` (cache index ``qoff[b] + qoff_add
+ j``), with ``a = ln * x[b, j] / sqrt(mean(x[b, j]^2) + eps)``:

    q, k, v         = rope(a @ Wq_h^T), rope(a @ Wk_h^T), a @ Wv_h^T          (Wq_h: rows h*D .. h*D + D - 1)
    cache[b, h, r]  = k, v                                                    (r = qoff[b] + qoff_add + j)
    o_part[h, b, j] = softmax_k(q . K[b, h, k] * scale over the old keys k < qoff + qoff_add with their
                      mask bit, and the feed's own keys j' <= j with theirs) @ V @ Wo[:, h*D:(h+1)*D]^T

Exactly ``rmsnorm_qkv_rope`` (no residual partials, ``jmin`` 0) followed by ``attention`` for a feed of at most
``block_q`` slots, up to the summation order of the softmax's blocks. Every split program projects its head's
queries itself as rmsnorm_qkv_rope does (the halves of its rotation pairs, two [C] x [D/2] products), and the key
loop multiplies the two halves of q and of each key block (one rounding in fp64 mode). The splits cover the old
keys only; the last one also projects the feed's own keys and values, stores them for later steps and attends to
them from registers as one extra block, so no program waits on a store. Splits, tickets and the merge are
``attention``'s (its scratch).
Grid: (B * H, cdiv(max key end, chunk)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_bf16_dots, split_slices
from ._checks import check_tensor as _check
from ._fence import fence_gpu, fence_wanted
from ._norm import rms_normed_rows, rms_normed_slices
from ._pdl import gdc_enter, pdl_options, pdl_wanted
from ._products import mode_dot, slice_dot, tc_mode
from .attention import NEG, attention_ref, check_attention_io, split_launch
from .rmsnorm_qkv_rope import check_projection_args, rmsnorm_qkv_rope_ref


@triton.jit
def _project(a, w_ptr, rows, cols, C: tl.constexpr, S: tl.constexpr, TC: tl.constexpr):
    """a @ W[rows]^T -> [BQ, len(rows)] fp32: a [BQ, BLOCK_C] rows (S == 1, cols [BLOCK_C]) or [S, BQ, KS] slices
    (cols [S, KS, 1], the weight columns of each slice) of the normed activations."""
    if S == 1:
        w = tl.load(w_ptr + rows[:, None] * C + cols[None, :], mask=(cols < C)[None, :], other=0.0)
        out = mode_dot(a, tl.trans(w), TC)
    else:
        w = tl.load(w_ptr + rows[None, None, :] * C + cols, mask=cols < C, other=0.0).to(tl.float32)
        out = slice_dot(a, w, TC)
    return out


@triton.jit
def _qk(q1, q2, k1, k2, TC: tl.constexpr):
    """q . k over the two halves of the head dim (q1, q2 [BQ, D/2]; k1, k2 [BK, D/2]) -> [BQ, BK] fp32, one
    product in the launch's mode: with TC == 3 both halves' fp64 products are summed in fp64 and rounded once."""
    if TC == 3:
        out = (tl.dot(q1.to(tl.float64), tl.trans(k1).to(tl.float64))
               + tl.dot(q2.to(tl.float64), tl.trans(k2).to(tl.float64))).to(tl.float32)
    else:
        out = mode_dot(q1, tl.trans(k1), TC) + mode_dot(q2, tl.trans(k2), TC)
    return out


@triton.jit
def _online(s, ok, vt, m_i, l_i, acc, TC: tl.constexpr):
    """One block of the online softmax: scores s [BQ, BK] (ok: visible), values vt [BK, D]."""
    s = tl.where(ok, s, NEG)
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp(m_i - m_new)
    p = tl.where(ok, tl.exp(s - m_new[:, None]), 0.0)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + mode_dot(p, vt, 0 if TC == 3 else TC)  # PV: see attention.py
    return m_new, l_i, acc


@triton.jit
def _front_attention_kernel(
    x_ptr, ln_ptr, w_ptr, cos_ptr, sin_ptr, pos_ptr, qoff_ptr, qoff_add, alive_ptr,
    k_ptr, v_ptr, km_ptr, acc_ptr, ml_ptr, cnt_ptr, wo_ptr, out_ptr,
    B, n, nsplit_max, x_sb, pos_sb, c_sb, c_sh, c_sl, km_sb, out_sh, out_sb, scale, eps,
    C: tl.constexpr, H: tl.constexpr, D: tl.constexpr, BLOCK_C: tl.constexpr, BQ: tl.constexpr,
    BK: tl.constexpr, CHUNK: tl.constexpr, BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr, G: tl.constexpr,
    FENCE: tl.constexpr, OB: tl.constexpr, TC: tl.constexpr, KS: tl.constexpr, S: tl.constexpr,
    GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    pid = tl.program_id(0)
    sp = tl.program_id(1)
    b = pid // H
    h = pid % H
    if UPSTREAM:
        ob = tl.arange(0, BLOCK_B)
        go = tl.max(tl.load(alive_ptr + ob, mask=ob < B, other=0), axis=0)
    else:
        go = tl.load(alive_ptr + b)
    qoff = tl.load(qoff_ptr + b) + qoff_add  # the feed's first cache index: the old keys are [0, qoff)
    nsp = tl.maximum(tl.cdiv(qoff, CHUNK), 1)
    if (go != 0) & (sp < nsp):
        HALF: tl.constexpr = D // 2
        offs_q = tl.arange(0, BQ)
        offs_d = tl.arange(0, D)
        qmask = offs_q < n
        k_lo = sp * CHUNK
        k_hi = tl.minimum(qoff, k_lo + CHUNK)
        kbase = b * c_sb + h * c_sh
        km_row = km_ptr + b * km_sb
        offs_bk = tl.arange(0, BK)
        offs_h = tl.arange(0, HALF)
        # the first key block (its two halves) and its mask bits load before the front's products, so they overlap
        kmask0 = k_lo + offs_bk < k_hi
        kp0 = k_ptr + kbase + (k_lo + offs_bk)[:, None] * c_sl + offs_h[None, :]
        k1 = tl.load(kp0, mask=kmask0[:, None], other=0.0)
        k2 = tl.load(kp0 + HALF, mask=kmask0[:, None], other=0.0)
        bits = tl.load(km_row + k_lo + offs_bk, mask=kmask0, other=0)
        pos = tl.load(pos_ptr + b * pos_sb + offs_q, mask=qmask, other=0)
        tab = pos[:, None] * HALF + offs_h[None, :]
        cs = tl.load(cos_ptr + tab, mask=qmask[:, None], other=0.0)
        sn = tl.load(sin_ptr + tab, mask=qmask[:, None], other=0.0)
        # the front: normed rows of the feed, as rmsnorm_qkv_rope holds them
        if S == 1:
            cols = tl.arange(0, BLOCK_C)
            cmask = cols < C
            xr = tl.load(x_ptr + b * x_sb + offs_q[:, None] * C + cols[None, :], mask=qmask[:, None] & cmask[None, :],
                         other=0.0)
            a = rms_normed_rows(xr, ln_ptr, cols, cmask, eps, C)
        else:
            col_a = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, None, :]  # [S, 1, KS]
            xr = tl.load(x_ptr + b * x_sb + offs_q[None, :, None] * C + col_a,
                         mask=qmask[None, :, None] & (col_a < C), other=0.0)
            a = rms_normed_slices(xr, ln_ptr, col_a, eps, C)
            cols = tl.arange(0, S)[:, None, None] * KS + tl.arange(0, KS)[None, :, None]  # [S, KS, 1]
        # a head's rotation pairs: dims d and d + D/2 of its rows (rmsnorm_qkv_rope's pairs)
        r1 = h * D + offs_h
        x1 = _project(a, w_ptr, r1, cols, C, S, TC)
        x2 = _project(a, w_ptr, r1 + HALF, cols, C, S, TC)
        q1 = x1 * cs - x2 * sn
        q2 = x2 * cs + x1 * sn
        last = sp == nsp - 1
        kn1 = tl.zeros([BQ, HALF], k_ptr.dtype.element_ty)
        kn2 = tl.zeros([BQ, HALF], k_ptr.dtype.element_ty)
        vn = tl.zeros([BQ, D], v_ptr.dtype.element_ty)
        if last:  # the feed's own keys and values: projected here, stored for later steps
            y1 = _project(a, w_ptr, C + r1, cols, C, S, TC)
            y2 = _project(a, w_ptr, C + r1 + HALF, cols, C, S, TC)
            kn1 = (y1 * cs - y2 * sn).to(k_ptr.dtype.element_ty)
            kn2 = (y2 * cs + y1 * sn).to(k_ptr.dtype.element_ty)
            vn = _project(a, w_ptr, 2 * C + h * D + offs_d, cols, C, S, TC).to(v_ptr.dtype.element_ty)
            cp = kbase + (qoff + offs_q)[:, None] * c_sl
            tl.store(k_ptr + cp + offs_h[None, :], kn1, mask=qmask[:, None])
            tl.store(k_ptr + cp + HALF + offs_h[None, :], kn2, mask=qmask[:, None])
            tl.store(v_ptr + cp + offs_d[None, :], vn, mask=qmask[:, None])
        m_i = tl.full([BQ], NEG, tl.float32)
        l_i = tl.zeros([BQ], tl.float32)
        acc = tl.zeros([BQ, D], tl.float32)
        for kb in range(k_lo, k_hi, BK):  # the old keys: every query sees each one its mask bit allows
            offs_k = kb + offs_bk
            kmask = offs_k < k_hi
            nmask = BK + offs_k < k_hi
            bits_next = tl.load(km_row + BK + offs_k, mask=nmask, other=0)
            kp = k_ptr + kbase + (BK + offs_k)[:, None] * c_sl + offs_h[None, :]
            k1_next = tl.load(kp, mask=nmask[:, None], other=0.0)
            k2_next = tl.load(kp + HALF, mask=nmask[:, None], other=0.0)
            s = _qk(q1, q2, k1, k2, TC) * scale
            vt = tl.load(v_ptr + kbase + offs_k[:, None] * c_sl + offs_d[None, :], mask=kmask[:, None], other=0.0)
            m_i, l_i, acc = _online(s, ((bits != 0) & kmask)[None, :], vt, m_i, l_i, acc, TC)
            bits = bits_next
            k1 = k1_next
            k2 = k2_next
        if last:  # the feed's own keys, from registers: key j is visible to queries j and later
            s = _qk(q1, q2, kn1, kn2, TC) * scale
            nbits = tl.load(km_row + qoff + offs_q, mask=qmask, other=0)
            ok = ((nbits != 0) & qmask)[None, :] & (offs_q[None, :] <= offs_q[:, None])
            m_i, l_i, acc = _online(s, ok, vn, m_i, l_i, acc, TC)
        # hand in the partial; the last split to finish merges and projects: attention.py's tail, copied, not
        # shared: moving it into a jit helper changed _attention_kernel's sm_90 code (ENGINE_NOTES, session 21)
        slot = pid * nsplit_max + sp
        tl.store(acc_ptr + slot * BQ * D + offs_q[:, None] * D + offs_d[None, :], acc)
        tl.store(ml_ptr + slot * 2 * BQ + offs_q, m_i)
        tl.store(ml_ptr + slot * 2 * BQ + BQ + offs_q, l_i)
        if FENCE:
            fence_gpu(offs_q)
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid, 1, sem="acq_rel")
        if ticket == nsp - 1:
            if OB >= C:
                wo_all = tl.load(wo_ptr + tl.arange(0, OB)[:, None] * C + h * D + offs_d[None, :],
                                 mask=(tl.arange(0, OB) < C)[:, None], other=0.0)
            if FENCE:
                fence_gpu(offs_q)
            M = tl.full([BQ], NEG, tl.float32)
            L = tl.zeros([BQ], tl.float32)
            A = tl.zeros([BQ, D], tl.float32)
            offs_g = tl.arange(0, G)
            for j0 in range(0, nsp, G):
                js = j0 + offs_g
                jm = js < nsp
                sl = pid * nsplit_max + js
                mj = tl.load(ml_ptr + sl[:, None] * 2 * BQ + offs_q[None, :], mask=jm[:, None], other=NEG,
                             cache_modifier=".cg")
                lj = tl.load(ml_ptr + sl[:, None] * 2 * BQ + BQ + offs_q[None, :], mask=jm[:, None], other=0.0,
                             cache_modifier=".cg")
                oj = tl.load(acc_ptr + sl[:, None, None] * BQ * D + offs_q[None, :, None] * D
                             + offs_d[None, None, :], mask=jm[:, None, None], other=0.0, cache_modifier=".cg")
                Mn = tl.maximum(M, tl.max(mj, axis=0))
                a1 = tl.exp(M - Mn)
                a2 = tl.where(jm[:, None], tl.exp(mj - Mn[None, :]), 0.0)
                L = L * a1 + tl.sum(lj * a2, axis=0)
                A = A * a1[:, None] + tl.sum(oj * a2[:, :, None], axis=0)
                M = Mn
            A = A / tl.where(L > 0, L, 1.0)[:, None]
            for c0 in tl.static_range(0, C, OB):
                offs_c = c0 + tl.arange(0, OB)
                cmask_o = offs_c < C
                if OB >= C:
                    wo = wo_all
                else:
                    wo = tl.load(wo_ptr + offs_c[:, None] * C + h * D + offs_d[None, :], mask=cmask_o[:, None],
                                 other=0.0)
                o = mode_dot(A, tl.trans(wo), TC)
                tl.store(out_ptr + h * out_sh + b * out_sb + offs_q[:, None] * C + offs_c[None, :], o,
                         mask=qmask[:, None] & cmask_o[None, :])
            tl.atomic_xchg(cnt_ptr + pid, 0)


def front_attention(x, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, qoff_add, alive, k_cache, v_cache, keymask,
                    w_o, out, scratch, n, max_key_end, eps, upstream, block_q=16, chunk=256, block_k=64,
                    num_warps=4, merge_group=8, oproj_block=None, split_k=0, bf16_dots=False, f64_dots=False):
    """Launch on a decode feed's first ``n <= block_q`` slots. x [B, S, C] fp32 residual; ln_w [C]; w_qkv [3C, C];
    cos_tab, sin_tab [Pmax, D/2] fp32; pos [B, >=n] int32; qoff, alive [B] int32 (the feed starts at cache index
    qoff[b] + qoff_add); k_cache, v_cache [B, H, Lmax, D] fp32|bf16; keymask [B, Lmax] int8 (the feed's own bits
    included); w_o [C, C]; out [H, B, >=n, C] fp32 per-head o_proj partials; scratch: AttentionScratch of at least
    B * H programs of ``block_q`` queries; max_key_end: host upper bound of qoff[b] + qoff_add + n.
    ``split_k``, ``bf16_dots``, ``f64_dots``: the products as in rmsnorm_qkv_rope (the projections) and attention
    (QK^T, PV, o_proj); the rest as in attention."""
    B, S, C = x.shape
    dev = x.device
    _check("x", x, (B, S, C), (torch.float32,), dev)
    if not 1 <= n <= min(S, block_q):
        raise ValueError(f"n: expected 1 <= n <= min(slots {S}, block_q {block_q}), got {n}")
    check_projection_args(x, ln_w, w_qkv, cos_tab, sin_tab, pos, k_cache, v_cache, n)
    H, D = k_cache.shape[1], k_cache.shape[3]
    if D & (D - 1):
        raise ValueError(f"k_cache: head dim {D} must be a power of two")
    for nm, t in (("qoff", qoff), ("alive", alive)):
        _check(nm, t, (B,), (torch.int32,), dev)
    check_attention_io(keymask, w_o, out, k_cache, n, max_key_end)
    for nm, t in (("w_qkv", w_qkv), ("w_o", w_o), ("k_cache", k_cache)):
        check_bf16_dots(bf16_dots, t, nm)
    nsplit, ob = split_launch(scratch, B * H, n, max_key_end, chunk, block_q, block_k, merge_group, oproj_block,
                              C, D)
    ks, nks = split_slices(0 if bf16_dots else split_k, C, block_q, D)
    _front_attention_kernel[(B * H, nsplit)](
        x, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, int(qoff_add), alive,
        k_cache, v_cache, keymask, scratch.acc, scratch.ml, scratch.cnt, w_o, out,
        B, n, scratch.nsplit, S * C, pos.shape[1], k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        keymask.stride(0), out.stride(0), out.stride(1), float(D) ** -0.5, float(eps),
        C=C, H=H, D=D, BLOCK_C=triton.next_power_of_2(C), BQ=block_q, BK=block_k, CHUNK=chunk,
        BLOCK_B=triton.next_power_of_2(B), UPSTREAM=bool(upstream),
        G=min(merge_group, triton.next_power_of_2(nsplit)),
        FENCE=fence_wanted(x), OB=ob, TC=tc_mode(bf16_dots, f64_dots), KS=ks, S=nks,
        **pdl_options(pdl_wanted(x)), num_warps=num_warps,
    )


def front_attention_ref(x, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, qoff_add, alive, k_cache, v_cache, keymask,
                        w_o, out, scratch, n, max_key_end, eps, upstream, block_q=16, chunk=256, block_k=64,
                        num_warps=4, merge_group=8, oproj_block=None, split_k=0, bf16_dots=False, f64_dots=False):
    """Torch reference with the launcher's signature and in-place effects: rmsnorm_qkv_rope_ref then
    attention_ref (no residual partials, jmin 0)."""
    B, S, C = x.shape
    H, D = k_cache.shape[1], k_cache.shape[3]
    q = torch.zeros(B, H, n, D, dtype=torch.float32, device=x.device)
    jmin = torch.zeros(B, dtype=torch.int32, device=x.device)
    rmsnorm_qkv_rope_ref(x, None, None, ln_w, w_qkv, cos_tab, sin_tab, pos, qoff, qoff_add, jmin, alive, q,
                         k_cache, v_cache, n, eps, upstream, bf16_dots=bf16_dots)
    attention_ref(q, k_cache, v_cache, keymask, qoff, qoff_add, jmin, alive, w_o, out, scratch, n, max_key_end,
                  upstream, bf16_dots=bf16_dots)

