"""Final RMSNorm + lm_head + task-loss head on each row's last token, fused with the greedy 10-token choice.

One selection step (SPEC §7.2, step ``s`` of a frame, ``n_step = min(K, M - K*s)`` positions) for each row
that runs (``alive_in[b]``, or any row alive in upstream semantics):

    h       = x[b, last] + sum_p parts[p, b, last]; hn = norm * h / sqrt(mean(h^2) + eps)
    logits  = lm_head(hn) as [K, V];  tl = task_head(hn) [K]
    for i < n_step: c_i = argmax(logits[i] with banned ids, EOS and c_<i at -inf)  (lowest id on ties)
                    conf_i = softmax prob of c_i over the still-allowed ids
    hit_i   = tl[i] <= tau[b] (never for i = 0 of step 0);  ids = EOS where hit or the row is dead (upstream)
    writes: out_ids/out_conf[b, K*s + i], chunk_ids[b, K - n_step + i] (right-aligned), chunk_n[b] = n_step,
            x_next[b, K - n_step + i] = embed[ids_i] (the next feed), ban bits of the real ids, out_len[b],
            alive_out[b] = alive_in[b] and no hit.
Rows that do not run copy ``alive_in`` to ``alive_out`` and touch nothing else.

Grid (B, K * P): program (b, k * P + v) computes part v of head k's logits (``vocab_parts`` P: the vocabulary's
32-row chunks shared out over P programs, so each reads 1/P of the head's lm_head rows); the last of a row's K * P
programs to finish (integer ticket) runs the sequential choice, so there is one kernel per step and no float
atomics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_tensor as _check
from ._fence import fence_gpu, fence_wanted
from ._pdl import gdc_enter, pdl_options, pdl_wanted


@triton.jit
def _take(i, c, mx, n_step, offs_k, offs_v, chosen, mxv, banned, when, EOS: tl.constexpr):
    # Position i's choice c (its max logit mx) joins the step: recorded, and banned for the positions after it.
    c = tl.minimum(c, EOS - 1)  # only non-finite logits could point past the vocabulary
    valid = i < n_step
    chosen = tl.where((offs_k == i) & valid, c, chosen)
    mxv = tl.where(offs_k == i, mx, mxv)
    hitv = (offs_v == c) & valid
    return chosen, mxv, banned | hitv, tl.where(hitv, i, when)


@triton.jit
def _heads_select_kernel(
    x_ptr, part_ptr, last_slot, norm_ptr, lm_ptr, tlw_ptr, alive_in_ptr, alive_out_ptr, tau_ptr,
    logit_ptr, tlv_ptr, cnt_ptr, ban_ptr, embed_ptr, xn_ptr, chunk_ptr, chunk_n_ptr,
    out_ids_ptr, out_conf_ptr, out_len_ptr,
    B, n_parts, part_stride, x_sb, out_sb, step, n_step, eps,
    C: tl.constexpr, K: tl.constexpr, V: tl.constexpr, EOS: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, VCH: tl.constexpr, NV: tl.constexpr, BLOCK_B: tl.constexpr,
    UPSTREAM: tl.constexpr, HAS_TAU: tl.constexpr, FENCE: tl.constexpr, GDC: tl.constexpr,
):
    gdc_enter(GDC)  # first: see _pdl.py
    b = tl.program_id(0)
    pk = tl.program_id(1)  # head k, vocabulary part v: this program's VCH x 32 rows of head k's lm_head
    k = pk // NV
    vpart = pk % NV
    alive_b = tl.load(alive_in_ptr + b)
    if UPSTREAM:
        ob = tl.arange(0, BLOCK_B)
        go = tl.max(tl.load(alive_in_ptr + ob, mask=ob < B, other=0), axis=0)
    else:
        go = alive_b
    if go == 0:
        if pk == 0:
            tl.store(alive_out_ptr + b, alive_b)
    else:
        offs_c = tl.arange(0, BLOCK_C)
        cmask = offs_c < C
        hp = b * x_sb + last_slot * C + offs_c
        h = tl.load(x_ptr + hp, mask=cmask, other=0.0)
        for p in range(n_parts):
            h += tl.load(part_ptr + p * part_stride + hp, mask=cmask, other=0.0)
        var = tl.sum(h * h, axis=0) / C
        nw = tl.load(norm_ptr + offs_c, mask=cmask, other=0.0).to(tl.float32)
        hn = nw * (h * tl.math.rsqrt(var + eps))
        for ci in tl.static_range(VCH):
            rows = (vpart * VCH + ci) * 32 + tl.arange(0, 32)
            rmask = rows < V
            w = tl.load(lm_ptr + (k * V + rows)[:, None] * C + offs_c[None, :],
                        mask=rmask[:, None] & cmask[None, :], other=0.0).to(tl.float32)
            tl.store(logit_ptr + (b * K + k) * V + rows, tl.sum(w * hn[None, :], axis=1), mask=rmask)
        if vpart == 0:
            tw = tl.load(tlw_ptr + k * C + offs_c, mask=cmask, other=0.0).to(tl.float32)
            tl.store(tlv_ptr + b * K + k, tl.sum(tw * hn, axis=0))
        if FENCE:  # each thread's logits are visible GPU-wide before the ticket (see _fence.py)
            fence_gpu(tl.arange(0, 32))
        tl.debug_barrier()  # every thread's logits are written before the ticket is taken
        ticket = tl.atomic_add(cnt_ptr + b, 1, sem="acq_rel")
        if ticket == K * NV - 1:
            if FENCE:  # every thread acquires: the other programs' logits are visible to its loads
                fence_gpu(tl.arange(0, 32))
            tl.atomic_xchg(cnt_ptr + b, 0)
            offs_v = tl.arange(0, BLOCK_V)
            offs_k = tl.arange(0, BLOCK_K)
            base = (tl.load(ban_ptr + b * BLOCK_V + offs_v) != 0) | (offs_v >= EOS)
            banned = base
            chosen = tl.full([BLOCK_K], EOS, tl.int32)
            mxv = tl.zeros([BLOCK_K], tl.float32)
            when = tl.full([BLOCK_V], BLOCK_K, tl.int32)  # the position that chose each id (BLOCK_K: none)
            # Every load the choice needs is issued before its serial chain (the chain's barriers would otherwise
            # wait on each): the K x V logits and task-loss values for the softmax pass after it, and each
            # position's logit row one position ahead of its argmax (a second, L2-resident read of what lg2 holds:
            # taking row i out of lg2 would be a cross-warp reduction, i.e. more barriers on the chain).
            lg2 = tl.load(logit_ptr + (b * K + offs_k)[:, None] * V + offs_v[None, :],
                          mask=(offs_k < K)[:, None] & (offs_v < V)[None, :], other=0.0, cache_modifier=".cg")
            tlv = tl.load(tlv_ptr + b * K + offs_k, mask=offs_k < K, other=0.0, cache_modifier=".cg")
            # the serial part is only the argmax chain; each position's softmax sum is one 2D pass after it
            lg = tl.load(logit_ptr + b * K * V + offs_v, mask=offs_v < V, other=0.0, cache_modifier=".cg")
            for i in tl.static_range(K):
                if i + 1 < K:
                    lg_next = tl.load(logit_ptr + (b * K + i + 1) * V + offs_v, mask=offs_v < V, other=0.0,
                                      cache_modifier=".cg")
                s = tl.where(banned, float("-inf"), lg)
                mx, c = tl.max(s, axis=0, return_indices=True, return_indices_tie_break_left=True)
                c = c.to(tl.int32)
                chosen, mxv, banned, when = _take(i, c, mx, n_step, offs_k, offs_v, chosen, mxv, banned, when,
                                                  EOS)
                if i + 1 < K:
                    lg = lg_next
            kmask = offs_k < n_step
            # position i's allowed ids: not banned before the step, not chosen by a position before i
            out2 = base[None, :] | (when[None, :] < offs_k[:, None])
            den = tl.sum(tl.where(out2, 0.0, tl.exp(lg2 - mxv[:, None])), axis=1)
            confv = tl.where(kmask, 1.0 / den, 0.0)
            pad = (alive_b == 0) | (offs_k < 0)
            keep = alive_b != 0
            if HAS_TAU:
                tau = tl.load(tau_ptr + b)
                hit = (tlv <= tau) & kmask & ~((offs_k == 0) & (step == 0))
                pad = pad | hit
                keep = keep & (tl.max(hit.to(tl.int32), axis=0) == 0)
            ids = tl.where(pad, EOS, chosen)
            conf = tl.where(ids == EOS, 0.0, confv)
            col = step * K + offs_k
            tl.store(out_ids_ptr + b * out_sb + col, ids.to(tl.int64), mask=kmask)
            tl.store(out_conf_ptr + b * out_sb + col, conf, mask=kmask)
            dst = K - n_step + offs_k
            tl.store(chunk_ptr + b * K + dst, ids, mask=kmask)
            tl.store(chunk_n_ptr + b, n_step)
            # every warp has read the ban bits before any is set (the reductions above imply it; say it)
            tl.debug_barrier()
            tl.store(ban_ptr + b * BLOCK_V + ids, 1, mask=kmask & (ids != EOS))
            emb = tl.load(embed_ptr + ids[:, None] * C + offs_c[None, :], mask=kmask[:, None] & cmask[None, :],
                          other=0.0).to(tl.float32)
            tl.store(xn_ptr + b * x_sb + dst[:, None] * C + offs_c[None, :], emb,
                     mask=kmask[:, None] & cmask[None, :])
            tl.store(out_len_ptr + b, step * K + n_step)
            tl.store(alive_out_ptr + b, keep.to(tl.int32))


class SelectScratch:
    """Per-row scratch of :func:`heads_select`: logits [B, K, V], task-loss values [B, K], zeroed tickets [B]."""

    def __init__(self, batch: int, k: int, v: int, device):
        self.logits = torch.zeros(batch, k, v, dtype=torch.float32, device=device)
        self.tl = torch.zeros(batch, k, dtype=torch.float32, device=device)
        self.cnt = torch.zeros(batch, dtype=torch.int32, device=device)


def ban_width(vocab: int) -> int:
    """Columns of the per-row ban bitmap: the vocabulary rounded up to a power of two."""
    return triton.next_power_of_2(vocab)


def _check_args(x, parts, norm_w, lm_w, tl_w, alive_in, alive_out, tau, scratch, ban, embed, x_next, chunk_ids,
                chunk_n, out_ids, out_conf, out_len, last_slot, step, n_step, eos):
    B, S, C = x.shape
    dev = x.device
    f32 = (torch.float32,)
    wdt = (torch.float32, torch.bfloat16)
    i32 = (torch.int32,)
    _check("x", x, (B, S, C), f32, dev)
    if not 0 <= last_slot < S:
        raise ValueError(f"last_slot: expected 0 <= last_slot < {S}, got {last_slot}")
    if parts is not None:
        _check("parts", parts, (parts.shape[0], B, S, C), f32, dev)
    _check("norm_w", norm_w, (C,), wdt, dev)
    K = tl_w.shape[0]
    V = embed.shape[0]
    _check("tl_w", tl_w, (K, C), wdt, dev)
    _check("lm_w", lm_w, (K * V, C), wdt, dev)
    _check("embed", embed, (V, C), wdt, dev)
    if eos != V - 1:
        raise ValueError(f"eos: expected {V - 1}, got {eos}")
    _check("alive_in", alive_in, (B,), i32, dev)
    _check("alive_out", alive_out, (B,), i32, dev)
    if tau is not None:
        _check("tau", tau, (B,), f32, dev)
    _check("scratch.logits", scratch.logits, (B, K, V), f32, dev)
    _check("scratch.tl", scratch.tl, (B, K), f32, dev)
    _check("scratch.cnt", scratch.cnt, (B,), i32, dev)
    _check("ban", ban, (B, ban_width(V)), (torch.int8,), dev)
    _check("x_next", x_next, (B, S, C), f32, dev)
    if S < K:
        raise ValueError(f"x_next: needs at least {K} slots, got {S}")
    _check("chunk_ids", chunk_ids, (B, K), i32, dev)
    _check("chunk_n", chunk_n, (B,), i32, dev)
    Lt = out_ids.shape[1]
    _check("out_ids", out_ids, (B, Lt), (torch.int64,), dev)
    _check("out_conf", out_conf, (B, Lt), f32, dev)
    _check("out_len", out_len, (B,), i32, dev)
    if step < 0 or not 1 <= n_step <= K or step * K + n_step > Lt:
        raise ValueError(f"n_step: step {step} with {n_step} ids does not fit {Lt} output columns")


def heads_select(x, parts, norm_w, lm_w, tl_w, alive_in, alive_out, tau, scratch, ban, embed, x_next, chunk_ids,
                 chunk_n, out_ids, out_conf, out_len, last_slot, step, n_step, eps, eos, upstream, num_warps=4,
                 vocab_parts=1):
    """x [B, S, C] fp32 residual, parts [P, B, S, C] fp32 or None (summed into x at ``last_slot``);
    norm_w [C]; lm_w [K*V, C]; tl_w [K, C]; alive_in/alive_out [B] int32; tau [B] fp32 or None;
    scratch: SelectScratch; ban [B, pow2(V)] int8 per-frame ban bits; embed [V, C]; x_next [B, S, C] fp32
    (slots K-n_step..K-1 receive the chosen ids' embeddings); chunk_ids [B, K] int32; chunk_n, out_len [B]
    int32; out_ids [B, Lt] int64 and out_conf [B, Lt] fp32 (this frame's outputs).
    vocab_parts: programs a head, at most (the 32-row vocabulary chunks are shared out evenly: 9 chunks in 4 parts
    run as 3 parts of 3).
    """
    _check_args(x, parts, norm_w, lm_w, tl_w, alive_in, alive_out, tau, scratch, ban, embed, x_next, chunk_ids,
                chunk_n, out_ids, out_conf, out_len, last_slot, step, n_step, eos)
    B, S, C = x.shape
    K, V = tl_w.shape[0], embed.shape[0]
    P = 0 if parts is None else parts.shape[0]
    chunks = triton.cdiv(V, 32)
    if isinstance(vocab_parts, bool) or not isinstance(vocab_parts, int) or not 1 <= vocab_parts <= chunks:
        raise ValueError(f"vocab_parts: expected an int in 1..{chunks} (32-row chunks of the vocabulary), "
                         f"got {vocab_parts!r}")
    vch = triton.cdiv(chunks, vocab_parts)  # chunks a program; the last part may hold fewer (masked rows)
    nv = triton.cdiv(chunks, vch)
    _heads_select_kernel[(B, K * nv)](
        x, x if parts is None else parts, int(last_slot), norm_w, lm_w, tl_w, alive_in, alive_out,
        alive_in if tau is None else tau, scratch.logits, scratch.tl, scratch.cnt, ban, embed, x_next,
        chunk_ids, chunk_n, out_ids, out_conf, out_len,
        B, P, B * S * C, S * C, out_ids.stride(0), int(step), int(n_step), float(eps),
        C=C, K=K, V=V, EOS=eos, BLOCK_C=triton.next_power_of_2(C), BLOCK_V=ban_width(V),
        BLOCK_K=triton.next_power_of_2(K), VCH=vch, NV=nv, BLOCK_B=triton.next_power_of_2(B),
        UPSTREAM=bool(upstream), HAS_TAU=tau is not None, FENCE=fence_wanted(x),
        **pdl_options(pdl_wanted(x)),
        num_warps=num_warps,
    )


def heads_select_ref(x, parts, norm_w, lm_w, tl_w, alive_in, alive_out, tau, scratch, ban, embed, x_next,
                     chunk_ids, chunk_n, out_ids, out_conf, out_len, last_slot, step, n_step, eps, eos, upstream,
                     num_warps=4, vocab_parts=1):
    """Torch reference with the launcher's signature and in-place effects (scratch.logits/tl also filled)."""
    B, S, C = x.shape
    K, V = tl_w.shape[0], embed.shape[0]
    a = alive_in != 0
    go = a.any().expand_as(a) if upstream else a
    h = x[:, last_slot].clone()
    if parts is not None:
        for p in range(parts.shape[0]):
            h = h + parts[p, :, last_slot]
    hn = norm_w.float() * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))
    logits = (hn @ lm_w.float().t()).view(B, K, V)
    tlv = hn @ tl_w.float().t()
    new_alive = alive_in.clone()
    for b in range(B):
        if not bool(go[b]):
            continue
        scratch.logits[b] = logits[b]
        scratch.tl[b] = tlv[b]
        s = logits[b].clone()
        s[:, ban[b, :V] != 0] = float("-inf")
        s[:, eos] = float("-inf")
        ids, conf = [], []
        for i in range(n_step):
            c = int(s[i].argmax())
            conf.append(torch.softmax(s[i], -1)[c])
            s[i + 1:, c] = float("-inf")
            ids.append(c)
        ids_t = torch.tensor(ids, dtype=torch.long, device=x.device)
        conf_t = torch.stack(conf).float()
        hit = torch.zeros(n_step, dtype=torch.bool, device=x.device)
        if tau is not None:
            hit = tlv[b, :n_step] <= tau[b]
            if step == 0:
                hit[0] = False
        pad = hit | (alive_in[b] == 0)
        ids_t = torch.where(pad, torch.full_like(ids_t, eos), ids_t)
        conf_t = torch.where(ids_t == eos, torch.zeros_like(conf_t), conf_t)
        out_ids[b, step * K:step * K + n_step] = ids_t
        out_conf[b, step * K:step * K + n_step] = conf_t
        chunk_ids[b, K - n_step:] = ids_t.int()
        chunk_n[b] = n_step
        real = ids_t[ids_t != eos]
        ban[b, real] = 1
        x_next[b, K - n_step:K] = embed[ids_t].float()
        out_len[b] = step * K + n_step
        new_alive[b] = int(bool(alive_in[b]) and not bool(hit.any()))
    alive_out.copy_(new_alive)
