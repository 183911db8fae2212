"""Start of a frame (SPEC §6.3-§6.4): lay out the prefill and reset the per-frame selection state, per row.

Row ``b`` enters with ``clen`` cached tokens, ``ccount`` of them unmasked, and a pending chunk of ``m =
chunk_n[b]`` ids right-aligned in ``chunk_ids[b]`` (its embeddings already sit in x slots K-m..K-1). This kernel:

- copies the frame's N vision embeddings into x slots K..K+N-1;
- writes prefill positions ``cumsum(mask) - 1`` (pending pads share the previous position) for slots 0..K+N-1,
  and the frozen decode positions (those of the last K prefill tokens);
- writes key-mask bits: pending ``id != EOS``, vision 1, and 1 for the ``nfeed`` decode-fed slots of this frame;
- sets prefill cache offsets (slot j -> cache index ``clen - (K - m) + j``, valid for j >= K - m), ``fstart`` (first
  decode-fed cache index), advances ``clen``/``ccount`` past the prefill, sets alive, clears the ban bits and the
  frame's outputs.
Grid: (B, cdiv(N, TB)); program (b, 0) also does the bookkeeping.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._checks import check_tensor as _check


@triton.jit
def _frame_setup_kernel(
    vis_ptr, x_ptr, chunk_ptr, chunk_n_ptr, clen_ptr, ccount_ptr, km_ptr, pos_ptr, dpos_ptr,
    pre_qoff_ptr, pre_jmin_ptr, fstart_ptr, alive_ptr, ban_ptr, out_ids_ptr, out_conf_ptr, out_len_ptr,
    vis_sb, x_sb, km_sb, pos_sb, out_sb, Lt, nfeed,
    C: tl.constexpr, N: tl.constexpr, K: tl.constexpr, EOS: tl.constexpr, TB: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_F: tl.constexpr,
    BLOCK_V: tl.constexpr, BLOCK_L: tl.constexpr,
):
    b = tl.program_id(0)
    seg = tl.program_id(1)
    offs_t = seg * TB + tl.arange(0, TB)
    offs_c = tl.arange(0, BLOCK_C)
    m2 = (offs_t < N)[:, None] & (offs_c < C)[None, :]
    v = tl.load(vis_ptr + b * vis_sb + offs_t[:, None] * C + offs_c[None, :], mask=m2, other=0.0)
    tl.store(x_ptr + b * x_sb + (K + offs_t)[:, None] * C + offs_c[None, :], v, mask=m2)
    if seg == 0:
        m = tl.load(chunk_n_ptr + b)
        jmin = K - m
        L = tl.load(clen_ptr + b)
        cnt = tl.load(ccount_ptr + b)
        offs_k = tl.arange(0, BLOCK_K)
        kin = offs_k < K
        pend = tl.load(chunk_ptr + b * K + offs_k, mask=kin, other=EOS)
        valid = kin & (offs_k >= jmin)
        bits = ((pend != EOS) & valid).to(tl.int32)
        cum = tl.cumsum(bits, axis=0)
        pv = tl.sum(bits, axis=0)
        # junk pending slots (j < jmin) of a fresh clip would get position -1: the RoPE table read at row -1
        # lies before the table (an illegal address when the table starts a memory segment), so clamp at 0
        tl.store(pos_ptr + b * pos_sb + offs_k, tl.maximum(cnt + cum - 1, 0), mask=kin)
        offs_n = tl.arange(0, BLOCK_N)
        nin = offs_n < N
        tl.store(pos_ptr + b * pos_sb + K + offs_n, cnt + pv + offs_n, mask=nin)
        tl.store(km_ptr + b * km_sb + L + offs_k - jmin, bits.to(tl.int8), mask=valid)
        tl.store(km_ptr + b * km_sb + L + m + offs_n, tl.full([BLOCK_N], 1, tl.int8), mask=nin)
        offs_f = tl.arange(0, BLOCK_F)
        tl.store(km_ptr + b * km_sb + L + m + N + offs_f, tl.full([BLOCK_F], 1, tl.int8), mask=offs_f < nfeed)
        tl.store(dpos_ptr + b * K + offs_k, cnt + pv + N - K + offs_k, mask=kin)
        tl.store(pre_qoff_ptr + b, L - jmin)
        tl.store(pre_jmin_ptr + b, jmin)
        tl.store(fstart_ptr + b, L + m + N)
        # clen and ccount are read above by every warp and overwritten below by one thread: without the barrier
        # a warp that reaches its loads late (its vision copy stalled) reads the new values and writes key-mask
        # bits and positions shifted by a frame (found on the H100 by bench/race_bisect.py, 2 runs in 5)
        tl.debug_barrier()
        tl.store(clen_ptr + b, L + m + N)
        tl.store(ccount_ptr + b, cnt + pv + N)
        tl.store(alive_ptr + b, 1)
        offs_v = tl.arange(0, BLOCK_V)
        tl.store(ban_ptr + b * BLOCK_V + offs_v, tl.zeros([BLOCK_V], tl.int8))
        offs_l = tl.arange(0, BLOCK_L)
        lmask = offs_l < Lt
        tl.store(out_ids_ptr + b * out_sb + offs_l, tl.full([BLOCK_L], EOS, tl.int64), mask=lmask)
        tl.store(out_conf_ptr + b * out_sb + offs_l, tl.zeros([BLOCK_L], tl.float32), mask=lmask)
        tl.store(out_len_ptr + b, 0)


def frame_setup(vision, x, chunk_ids, chunk_n, clen, ccount, keymask, pos, dpos, pre_qoff, pre_jmin, fstart, alive,
                ban, out_ids, out_conf, out_len, nfeed, eos):
    """vision [B, N, C] fp32 (this frame, rows contiguous); x [B, S >= K+N, C] fp32; chunk_ids [B, K] int32;
    chunk_n, clen, ccount, pre_qoff, pre_jmin, fstart, alive, out_len [B] int32; keymask [B, Lmax] int8;
    pos [B, S] int32; dpos [B, K] int32; ban [B, Vp] int8; out_ids [B, Lt] int64; out_conf [B, Lt] fp32;
    nfeed: decode-fed slots this frame will at most use (their mask bits are set to 1)."""
    B, N, C = vision.shape
    dev = vision.device
    i32 = (torch.int32,)
    if vision.dtype != torch.float32 or vision.device != dev or vision.stride(2) != 1 or vision.stride(1) != C:
        raise ValueError("vision: expected fp32 [B, N, C] with contiguous rows")
    K = chunk_ids.shape[1]
    S = x.shape[1]
    _check("x", x, (B, S, C), (torch.float32,), dev)
    if S < K + N:
        raise ValueError(f"x: needs {K + N} slots, got {S}")
    _check("chunk_ids", chunk_ids, (B, K), i32, dev)
    for nm, t in (("chunk_n", chunk_n), ("clen", clen), ("ccount", ccount), ("pre_qoff", pre_qoff),
                  ("pre_jmin", pre_jmin), ("fstart", fstart), ("alive", alive), ("out_len", out_len)):
        _check(nm, t, (B,), i32, dev)
    _check("keymask", keymask, (B, keymask.shape[1]), (torch.int8,), dev)
    _check("pos", pos, (B, S), i32, dev)
    _check("dpos", dpos, (B, K), i32, dev)
    _check("ban", ban, (B, ban.shape[1]), (torch.int8,), dev)
    Lt = out_ids.shape[1]
    _check("out_ids", out_ids, (B, Lt), (torch.int64,), dev)
    _check("out_conf", out_conf, (B, Lt), (torch.float32,), dev)
    TB = 32
    _frame_setup_kernel[(B, triton.cdiv(N, TB))](
        vision, x, chunk_ids, chunk_n, clen, ccount, keymask, pos, dpos, pre_qoff, pre_jmin, fstart, alive, ban,
        out_ids, out_conf, out_len,
        vision.stride(0), S * C, keymask.stride(0), S, out_ids.stride(0), Lt, int(nfeed),
        C=C, N=N, K=K, EOS=eos, TB=TB, BLOCK_C=triton.next_power_of_2(C), BLOCK_N=triton.next_power_of_2(N),
        BLOCK_K=triton.next_power_of_2(K), BLOCK_F=triton.next_power_of_2(max(int(nfeed), 1)),
        BLOCK_V=ban.shape[1], BLOCK_L=triton.next_power_of_2(max(Lt, 1)), num_warps=4,
    )


def frame_setup_ref(vision, x, chunk_ids, chunk_n, clen, ccount, keymask, pos, dpos, pre_qoff, pre_jmin, fstart,
                    alive, ban, out_ids, out_conf, out_len, nfeed, eos):
    """Torch reference with the launcher's signature and in-place effects."""
    B, N, C = vision.shape
    K = chunk_ids.shape[1]
    x[:, K:K + N] = vision
    for b in range(B):
        m = int(chunk_n[b])
        jmin = K - m
        L = int(clen[b])
        cnt = int(ccount[b])
        pend = chunk_ids[b].long()
        bits = ((pend != eos) & (torch.arange(K, device=x.device) >= jmin)).int()
        pv = int(bits.sum())
        pos[b, :K] = (cnt + bits.cumsum(0) - 1).clamp_min(0)
        pos[b, K:K + N] = cnt + pv + torch.arange(N, device=x.device)
        keymask[b, L:L + m] = bits[jmin:].to(torch.int8)
        keymask[b, L + m:L + m + N + nfeed] = 1
        dpos[b] = cnt + pv + N - K + torch.arange(K, device=x.device)
        pre_qoff[b], pre_jmin[b], fstart[b] = L - jmin, jmin, L + m + N
        clen[b], ccount[b] = L + m + N, cnt + pv + N
    alive.fill_(1)
    ban.zero_()
    out_ids.fill_(eos)
    out_conf.zero_()
    out_len.zero_()
