"""Split-K attention of new queries over a per-row KV cache, fused with the per-head o_proj partial.

For row ``b`` (if it runs, see ``alive``), head ``h`` and new slot ``j`` (cache index ``r = qoff[b] + qoff_add + j``):

    A[b, h, j]      = softmax_k( q[b,h,j] . K[b,h,k] * scale  over k <= r with keymask[b, k] != 0 ) @ V[b,h,k]
    o_part[h, b, j] = A[b, h, j] @ Wo[:, h*D:(h+1)*D]^T          ([C] per head; the caller sums the H partials)

The key axis is split in chunks of ``chunk`` keys, one program each (flash-decoding), so a single row still
fills the GPU. Each program writes its unnormalised partial (acc, running max, running sum); the last program
of a (row, head, query block) to finish (an integer ticket, no float atomics) merges the partials,
``merge_group`` (8) splits per vector load, in a fixed order (deterministic), applies o_proj for its head and
resets the ticket. Slots below ``jmin[b]`` are junk.
Grid: (B * H * cdiv(n, BQ), cdiv(max key end, chunk)).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._products import bf16_round, mode_dot, tc_mode
from ._checks import check_bf16_dots
from ._checks import check_tensor as _check
from ._fence import fence_gpu, fence_wanted
from ._pdl import gdc_enter, pdl_options, pdl_wanted

NEG = tl.constexpr(-1.0e30)  # finite "minus infinity": keeps fully masked blocks free of inf - inf


@triton.jit
def _attention_kernel(
    q_ptr, k_ptr, v_ptr, km_ptr, qoff_ptr, qoff_add, jmin_ptr, alive_ptr,
    acc_ptr, ml_ptr, cnt_ptr, wo_ptr, out_ptr,
    B, n, nsplit_max, q_sb, q_sh, c_sb, c_sh, c_sl, km_sb, out_sh, out_sb, scale,
    C: tl.constexpr, H: tl.constexpr, D: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr,
    G: tl.constexpr, FENCE: tl.constexpr, OB: tl.constexpr, TC: tl.constexpr,
    GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    pid = tl.program_id(0)
    sp = tl.program_id(1)
    nqb = tl.cdiv(n, BQ)
    b = pid // (H * nqb)
    h = (pid // nqb) % H
    qb = pid % nqb
    if UPSTREAM:
        ob = tl.arange(0, BLOCK_B)
        go = tl.max(tl.load(alive_ptr + ob, mask=ob < B, other=0), axis=0)
    else:
        go = tl.load(alive_ptr + b)
    qoff = tl.load(qoff_ptr + b) + qoff_add
    jmin = tl.load(jmin_ptr + b)
    q_lo = qb * BQ
    q_hi = tl.minimum(n, q_lo + BQ)
    kend = qoff + q_hi  # keys [0, kend) can be seen by this query block
    nsp = tl.cdiv(kend, CHUNK)
    if (go != 0) & (sp < nsp) & (q_hi > jmin):
        offs_q = q_lo + tl.arange(0, BQ)
        offs_d = tl.arange(0, D)
        qmask = offs_q < n
        q = tl.load(q_ptr + b * q_sb + h * q_sh + offs_q[:, None] * D + offs_d[None, :],
                    mask=qmask[:, None], other=0.0)
        qidx = qoff + offs_q
        m_i = tl.full([BQ], NEG, tl.float32)
        l_i = tl.zeros([BQ], tl.float32)
        acc = tl.zeros([BQ, D], tl.float32)
        k_lo = sp * CHUNK
        k_hi = tl.minimum(kend, k_lo + CHUNK)
        kbase = b * c_sb + h * c_sh
        # the key mask of each block is loaded one block ahead: its load is not a product operand, so Triton's
        # pipeliner left it in the loop, where waiting on it took 16% of a decode launch's stall samples (ncu,
        # H100, one row); ahead: 8 clips -4%, 45 rows -7% (RESULTS.md thirteenth pass)
        offs_bk = tl.arange(0, BK)
        bits = tl.load(km_ptr + b * km_sb + k_lo + offs_bk, mask=k_lo + offs_bk < k_hi, other=0)
        for kb in range(k_lo, k_hi, BK):
            offs_k = kb + offs_bk
            kmask = offs_k < k_hi
            bits_next = tl.load(km_ptr + b * km_sb + BK + offs_k, mask=BK + offs_k < k_hi, other=0)
            kv_off = kbase + offs_k[:, None] * c_sl + offs_d[None, :]
            kt = tl.load(k_ptr + kv_off, mask=kmask[:, None], other=0.0)
            s = mode_dot(q, tl.trans(kt), TC) * scale  # QK^T, PV and o_proj in the launch's product mode
            ok = ((bits != 0) & kmask)[None, :] & (offs_k[None, :] <= qidx[:, None])
            s = tl.where(ok, s, NEG)
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp(m_i - m_new)
            p = tl.where(ok, tl.exp(s - m_new[:, None]), 0.0)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            vt = tl.load(v_ptr + kv_off, mask=kmask[:, None], other=0.0)
            # fp64 mode keeps PV an IEEE fp32 product: Triton 3.6 fails an assertion lowering an fp64 product of
            # these probabilities ("fp64 don't support largeK MMA": the int8 key mask in their history sets kWidth;
            # read as 32-bit words it compiles, but measured slower: 8 clips +8%, 45 rows +10%, RESULTS.md)
            acc = acc * alpha[:, None] + mode_dot(p, vt, 0 if TC == 3 else TC)
            m_i = m_new
            bits = bits_next
        slot = pid * nsplit_max + sp
        offs_r = tl.arange(0, BQ)
        tl.store(acc_ptr + slot * BQ * D + offs_r[:, None] * D + offs_d[None, :], acc)
        tl.store(ml_ptr + slot * 2 * BQ + offs_r, m_i)
        tl.store(ml_ptr + slot * 2 * BQ + BQ + offs_r, l_i)
        if FENCE:  # each thread's partial is visible GPU-wide before the ticket (see _fence.py)
            fence_gpu(offs_r)
        tl.debug_barrier()  # every thread's partial is written before the ticket is taken
        ticket = tl.atomic_add(cnt_ptr + pid, 1, sem="acq_rel")
        if ticket == nsp - 1:
            if OB >= C:  # one o_proj product: its weight tile loads beside the merge's partials, not after them
                wo_all = tl.load(wo_ptr + tl.arange(0, OB)[:, None] * C + h * D + offs_d[None, :],
                                 mask=(tl.arange(0, OB) < C)[:, None], other=0.0)
            if FENCE:  # every thread acquires: the other programs' partials are visible to its loads
                fence_gpu(offs_r)
            # merge the splits G at a time: one vector load of G partials, no serial chain per split
            M = tl.full([BQ], NEG, tl.float32)
            L = tl.zeros([BQ], tl.float32)
            A = tl.zeros([BQ, D], tl.float32)
            offs_g = tl.arange(0, G)
            for j0 in range(0, nsp, G):
                js = j0 + offs_g
                jm = js < nsp
                sl = pid * nsplit_max + js
                mj = tl.load(ml_ptr + sl[:, None] * 2 * BQ + offs_r[None, :], mask=jm[:, None], other=NEG,
                             cache_modifier=".cg")  # [G, BQ]
                lj = tl.load(ml_ptr + sl[:, None] * 2 * BQ + BQ + offs_r[None, :], mask=jm[:, None], other=0.0,
                             cache_modifier=".cg")
                oj = tl.load(acc_ptr + sl[:, None, None] * BQ * D + offs_r[None, :, None] * D
                             + offs_d[None, None, :], mask=jm[:, None, None], other=0.0,
                             cache_modifier=".cg")  # [G, BQ, D]
                Mn = tl.maximum(M, tl.max(mj, axis=0))
                a1 = tl.exp(M - Mn)
                a2 = tl.where(jm[:, None], tl.exp(mj - Mn[None, :]), 0.0)
                L = L * a1 + tl.sum(lj * a2, axis=0)
                A = A * a1[:, None] + tl.sum(oj * a2[:, :, None], axis=0)
                M = Mn
            A = A / tl.where(L > 0, L, 1.0)[:, None]
            # o_proj in OB-column blocks (OB = pow2(C): one product; smaller blocks hold fewer registers)
            for c0 in tl.static_range(0, C, OB):
                offs_c = c0 + tl.arange(0, OB)
                cmask = offs_c < C
                if OB >= C:
                    wo = wo_all
                else:
                    wo = tl.load(wo_ptr + offs_c[:, None] * C + h * D + offs_d[None, :], mask=cmask[:, None],
                                 other=0.0)  # [OB, D] = Wo[c0:c0+OB, hD:(h+1)D]
                o = mode_dot(A, tl.trans(wo), TC)  # [BQ, OB]
                tl.store(out_ptr + h * out_sh + b * out_sb + offs_q[:, None] * C + offs_c[None, :], o,
                         mask=qmask[:, None] & cmask[None, :])
            tl.atomic_xchg(cnt_ptr + pid, 0)


class AttentionScratch:
    """Split-K workspace for :func:`attention`: partial accumulators, (max, sum) pairs and zeroed tickets.

    Sized for ``rows`` (B * H * query blocks) programs of ``nsplit`` splits with ``bq`` queries each.
    """

    def __init__(self, rows: int, nsplit: int, bq: int, head_dim: int, device):
        self.rows, self.nsplit, self.bq = rows, nsplit, bq
        self.acc = torch.zeros(self.acc_size(rows, nsplit, bq, head_dim), dtype=torch.float32, device=device)
        self.ml = torch.zeros(rows * nsplit * 2 * bq, dtype=torch.float32, device=device)
        self.cnt = torch.zeros(rows, dtype=torch.int32, device=device)

    @staticmethod
    def acc_size(rows: int, nsplit: int, bq: int, head_dim: int) -> int:
        """Elements of the partial accumulators (the largest buffer: the one the kernel's offsets must reach)."""
        return rows * nsplit * bq * head_dim


def attention_splits(n: int, max_key_end: int, chunk: int) -> int:
    """Number of key splits a launch needs when no query sees more than ``max_key_end`` keys."""
    return max(1, triton.cdiv(max_key_end, chunk))


def attention(q, k_cache, v_cache, keymask, qoff, qoff_add, jmin, alive, w_o, out, scratch, n, max_key_end,
              upstream, block_q=16, chunk=256, block_k=64, num_warps=4, merge_group=8, oproj_block=None,
              bf16_dots=False, f64_dots=False, num_stages=None):
    """q [B, H, S, D] fp32 (first n slots used); k_cache, v_cache [B, H, Lmax, D] fp32|bf16; keymask [B, Lmax]
    int8; qoff, jmin, alive [B] int32; w_o [C, C]; out [H, B, S, C] fp32 per-head o_proj partials (slots < n
    written for running rows); scratch: AttentionScratch; max_key_end: host upper bound of qoff[b]+qoff_add+n.
    merge_group: split partials the merging program loads at once (a power of two; capped at the split count).
    oproj_block: output columns of o_proj per product (a power of two >= 16; None: all C columns in one).
    bf16_dots (bf16 cache and w_o only): QK^T, PV and o_proj on tensor cores, their fp32 operands (queries,
    probabilities, the merged head output) rounded to bf16; fp32 accumulation.
    f64_dots: QK^T and o_proj on fp64 tensor cores (PV stays an IEEE fp32 product: see the kernel).
    num_stages: Triton's software-pipelining depth of the key-block loop (None: Triton's default).
    """
    B, H, S, D = q.shape
    C = H * D
    dev = q.device
    _check("q", q, (B, H, S, D), (torch.float32,), dev)
    if not 1 <= n <= S:
        raise ValueError(f"n: expected 1 <= n <= {S}, got {n}")
    Lmax = k_cache.shape[2]
    _check("k_cache", k_cache, (B, H, Lmax, D), (torch.float32, torch.bfloat16), dev)
    _check("v_cache", v_cache, (B, H, Lmax, D), (k_cache.dtype,), dev)
    _check("keymask", keymask, (B, Lmax), (torch.int8,), dev)
    for nm, t in (("qoff", qoff), ("jmin", jmin), ("alive", alive)):
        _check(nm, t, (B,), (torch.int32,), dev)
    _check("w_o", w_o, (C, C), (torch.float32, torch.bfloat16), dev)
    _check("out", out, (H, B, out.shape[2], C), (torch.float32,), dev)
    if out.shape[2] < n:
        raise ValueError(f"out: needs at least n={n} slots, got {out.shape[2]}")
    if max_key_end > Lmax:
        raise ValueError(f"max_key_end: {max_key_end} exceeds the cache capacity {Lmax}")
    check_bf16_dots(bf16_dots, w_o, "w_o")
    check_bf16_dots(bf16_dots, k_cache, "k_cache")
    nqb = triton.cdiv(n, block_q)
    nsplit = attention_splits(n, max_key_end, chunk)
    if scratch.rows < B * H * nqb or scratch.nsplit < nsplit or scratch.bq != block_q or \
            scratch.acc.numel() != scratch.acc_size(scratch.rows, scratch.nsplit, block_q, D):
        raise ValueError(f"scratch: too small for {B * H * nqb} programs x {nsplit} splits of {block_q} queries "
                         f"of head dim {D}")
    if chunk % block_k:
        raise ValueError("chunk must be a multiple of block_k")
    if merge_group < 1 or merge_group & (merge_group - 1):
        raise ValueError(f"merge_group: expected a power of two >= 1, got {merge_group}")
    block_c = triton.next_power_of_2(C)
    ob = block_c if oproj_block is None else oproj_block
    if ob < 16 or ob & (ob - 1) or ob > block_c:
        raise ValueError(f"oproj_block: expected a power of two in 16..{block_c}, got {oproj_block}")
    grid = (B * H * nqb, nsplit)
    _attention_kernel[grid](
        q, k_cache, v_cache, keymask, qoff, int(qoff_add), jmin, alive,
        scratch.acc, scratch.ml, scratch.cnt, w_o, out,
        B, n, scratch.nsplit, q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        keymask.stride(0), out.stride(0), out.stride(1), float(D) ** -0.5,
        C=C, H=H, D=D, BQ=block_q, BK=block_k, CHUNK=chunk,
        BLOCK_B=triton.next_power_of_2(B), UPSTREAM=bool(upstream), G=min(merge_group, triton.next_power_of_2(nsplit)),
        FENCE=fence_wanted(q), OB=ob, TC=tc_mode(bf16_dots, f64_dots), **pdl_options(pdl_wanted(q)),
        num_warps=num_warps,
        **({} if num_stages is None else {"num_stages": num_stages}),
    )


def attention_ref(q, k_cache, v_cache, keymask, qoff, qoff_add, jmin, alive, w_o, out, scratch, n, max_key_end,
                  upstream, block_q=16, chunk=256, block_k=64, num_warps=4, merge_group=8, oproj_block=None,
                  bf16_dots=False, f64_dots=False, num_stages=None):
    """Torch reference with the launcher's signature and in-place effects (dense softmax per row). With
    ``bf16_dots`` the queries and the head outputs are rounded to bf16 as the kernel rounds them; the
    kernel's per-block probabilities are rounded too, which a dense softmax cannot mirror (a ~1e-3 relative
    difference)."""
    B, H, S, D = q.shape
    a = alive != 0
    go = a.any().expand_as(a) if upstream else a
    for b in range(B):
        if not bool(go[b]):
            continue
        r0 = int(qoff[b]) + int(qoff_add)
        kend = r0 + n
        kk = k_cache[b, :, :max(kend, 0)].float()
        vv = v_cache[b, :, :max(kend, 0)].float()
        idx = torch.arange(max(kend, 0), device=q.device)
        allowed = (idx[None, :] <= (r0 + torch.arange(n, device=q.device))[:, None]) & (keymask[b, :max(kend, 0)] != 0)
        qq = bf16_round(q[b, :, :n]) if bf16_dots else q[b, :, :n]
        s = (qq @ kk.transpose(-1, -2)) * float(D) ** -0.5
        s = s.masked_fill(~allowed[None], float("-inf"))
        p = torch.softmax(s, -1).nan_to_num(0.0)
        A = p @ vv  # [H, n, D]
        if bf16_dots:
            A = bf16_round(A)
        wo = w_o.float()
        for h in range(H):
            out[h, b, :n] = A[h] @ wo[:, h * D:(h + 1) * D].t()
