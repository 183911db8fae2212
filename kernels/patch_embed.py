"""Vision encoder + connector (SPEC §3-§4) as two fused Triton kernels.

video [B, T, 3, 224, 224] (normalised, already squashed to 224) -> kernel A: 16x16 patch GEMM + bias + LayerNorm
-> z [B, 2 + T, 196, C] (two conv-cache frames first) -> kernel B: causal 3x3x3 conv as an implicit GEMM + bias +
ReLU, 1x1 out_proj + bias, + pos_embed -> vision_embeds [B, T, 196, C] fp32, plus the new conv cache.

This file is ~400 lines because it holds both stages of one op, which share the z layout and the weight prep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import triton
import triton.language as tl

from ._checks import interpreting, num_sms


# C (192) is not a power of 2, and Triton tiles must be. Rather than pad to 256 (a third more GEMM work), both
# kernels split the C output channels into NCH (<= 4) chunks of BLOCK_N = C // NCH, each with its own accumulator;
# one A tile feeds all NCH dots, so the activations are read once per K step.
@triton.jit
def _mma(a, b, acc, DOT_F32: tl.constexpr):
    """acc += a @ b with fp32 accumulation. IEEE precision: never TF32, fp32 parity needs exact-rounding FMA.
    DOT_F32 upcasts the operands first: Triton 3.9's CPU interpreter evaluates a bf16 tl.dot on the raw bit
    patterns; the upcast is exact (a bf16 x bf16 product fits in fp32)."""
    if DOT_F32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


# --------------------------------------------------------------------------------------------------------------------
# Kernel A: patch projection (a GEMM over patches x (3*P*P -> C)) fused with LayerNorm over the C channels.
# A program owns BLOCK_M whole rows of C channels, so the LayerNorm statistics never leave registers.
# --------------------------------------------------------------------------------------------------------------------
@triton.jit
def _patch_ln_kernel(
    video_ptr,  # [B, T, 3, H, W] fp32 or bf16
    w_ptr,  # [3*P*P, C] patch weight in the compute dtype, row k = (c*P + ky)*P + kx
    bias_ptr,  # [C] fp32 patch bias
    lnw_ptr,  # [C] fp32 LayerNorm weight
    lnb_ptr,  # [C] fp32 LayerNorm bias
    z_ptr,  # [B, CF + T, N, C] compute dtype: LayerNorm output, written at frames CF.. (CF = cache frames)
    M,  # B*T*N patches
    T,  # frames per row of the batch
    stride_vb, stride_vt, stride_vc, stride_vh, stride_vw,  # video strides (elements; Triton specialises 1s)
    eps,  # LayerNorm epsilon
    C: tl.constexpr,  # channels (192) = NCH * BLOCK_N
    G: tl.constexpr,  # patch grid side (14)
    P: tl.constexpr,  # patch side in pixels (16)
    CF: tl.constexpr,  # conv-cache frames ahead of the clip in z (2)
    BLOCK_M: tl.constexpr,  # patches per program
    BLOCK_N: tl.constexpr,  # channels per accumulator
    NCH: tl.constexpr,  # accumulators (1..4)
    BLOCK_K: tl.constexpr,  # reduction chunk; divides P*P so a chunk never straddles a colour plane
    DOT_F32: tl.constexpr,  # upcast GEMM operands to fp32 (interpreter only, see _mma)
):
    N: tl.constexpr = G * G
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = rm < M
    rm = tl.where(m_ok, rm, 0).to(tl.int64)  # masked rows keep in-bounds addresses
    f = rm // N
    p = rm % N
    b = f // T
    t = f % T
    row_base = b * stride_vb + t * stride_vt + ((p // G) * P) * stride_vh + ((p % G) * P) * stride_vw  # top-left
    rk = tl.arange(0, BLOCK_K)
    rn = tl.arange(0, BLOCK_N)

    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, 3 * P * P, BLOCK_K):
        k = k0 + rk
        col = (k // (P * P)) * stride_vc + ((k // P) % P) * stride_vh + (k % P) * stride_vw  # [BLOCK_K]
        a = tl.load(video_ptr + row_base[:, None] + col[None, :], mask=m_ok[:, None], other=0.0)
        w_ptrs = w_ptr + k[:, None] * C + rn[None, :]
        a = a.to(w_ptr.dtype.element_ty)  # bf16 mode rounds the pixels here, not in a separate pass
        acc0 = _mma(a, tl.load(w_ptrs), acc0, DOT_F32)
        if NCH > 1:
            acc1 = _mma(a, tl.load(w_ptrs + BLOCK_N), acc1, DOT_F32)
        if NCH > 2:
            acc2 = _mma(a, tl.load(w_ptrs + 2 * BLOCK_N), acc2, DOT_F32)
        if NCH > 3:
            acc3 = _mma(a, tl.load(w_ptrs + 3 * BLOCK_N), acc3, DOT_F32)

    # LayerNorm over the NCH chunks: two-pass biased variance, like torch
    acc0 += tl.load(bias_ptr + rn)[None, :]
    mean = tl.sum(acc0, axis=1)
    if NCH > 1:
        acc1 += tl.load(bias_ptr + BLOCK_N + rn)[None, :]
        mean += tl.sum(acc1, axis=1)
    if NCH > 2:
        acc2 += tl.load(bias_ptr + 2 * BLOCK_N + rn)[None, :]
        mean += tl.sum(acc2, axis=1)
    if NCH > 3:
        acc3 += tl.load(bias_ptr + 3 * BLOCK_N + rn)[None, :]
        mean += tl.sum(acc3, axis=1)
    mean = mean / C
    acc0 -= mean[:, None]
    var = tl.sum(acc0 * acc0, axis=1)
    if NCH > 1:
        acc1 -= mean[:, None]
        var += tl.sum(acc1 * acc1, axis=1)
    if NCH > 2:
        acc2 -= mean[:, None]
        var += tl.sum(acc2 * acc2, axis=1)
    if NCH > 3:
        acc3 -= mean[:, None]
        var += tl.sum(acc3 * acc3, axis=1)
    rstd = 1.0 / tl.sqrt(var / C + eps)
    z_row = (b * (CF + T) + CF + t) * N + p
    z_ptrs = z_ptr + z_row[:, None] * C + rn[None, :]
    _ln_store(z_ptrs, acc0, rstd, lnw_ptr, lnb_ptr, rn, m_ok)
    if NCH > 1:
        _ln_store(z_ptrs + BLOCK_N, acc1, rstd, lnw_ptr, lnb_ptr, BLOCK_N + rn, m_ok)
    if NCH > 2:
        _ln_store(z_ptrs + 2 * BLOCK_N, acc2, rstd, lnw_ptr, lnb_ptr, 2 * BLOCK_N + rn, m_ok)
    if NCH > 3:
        _ln_store(z_ptrs + 3 * BLOCK_N, acc3, rstd, lnw_ptr, lnb_ptr, 3 * BLOCK_N + rn, m_ok)


@triton.jit
def _ln_store(z_ptrs, centred, rstd, lnw_ptr, lnb_ptr, cols, m_ok):
    # one channel chunk of the LayerNorm output: (x - mean) * rstd * weight + bias, in z's dtype
    z = centred * rstd[:, None] * tl.load(lnw_ptr + cols)[None, :] + tl.load(lnb_ptr + cols)[None, :]
    tl.store(z_ptrs, z.to(z_ptrs.dtype.element_ty), mask=m_ok[:, None])


# --------------------------------------------------------------------------------------------------------------------
# Kernel B: causal KTxKSxKS conv over [cache, z] as an implicit GEMM (KT*KS*KS*C -> C) + bias + ReLU, then the 1x1
# out_proj GEMM, its bias and pos_embed, for BLOCK_M tokens. The hidden activations never leave registers: NCH
# chunks h_n, then each out chunk is sum_n h_n @ W_out[n, chunk]. Taps and K chunks form one flat loop so the
# compiler can software-pipeline it.
# --------------------------------------------------------------------------------------------------------------------
@triton.jit
def _temporal_block_kernel(
    z_ptr,  # [B, CF + T, N, C] compute dtype: cache frames then LayerNorm features of the clip
    wc_ptr,  # [KT*KS*KS*C, C] conv weight, row = ((dt*KS + dy)*KS + dx)*C + c_in, column = c_out
    bc_ptr,  # [C] fp32 conv bias
    wo_ptr,  # [C, C] out_proj weight (in x out), compute dtype
    bo_ptr,  # [C] fp32 out_proj bias
    pos_ptr,  # [N, C] fp32 pos_embed
    out_ptr,  # [B, T, N, C] fp32 vision_embeds
    part_ptr,  # [KSPLIT, M, C] fp32 conv partial sums (MODE 1 writes, MODE 2 reads)
    M,  # B*T*N output tokens
    T,  # frames per row of the batch
    C: tl.constexpr,  # channels (192) = NCH * BLOCK_N
    G: tl.constexpr,  # patch grid side (14)
    KT: tl.constexpr,  # temporal taps (3); CF = KT - 1 cache frames
    KS: tl.constexpr,  # spatial taps (3), zero padding KS // 2
    BLOCK_M: tl.constexpr,  # tokens per program
    BLOCK_N: tl.constexpr,  # channels per accumulator
    NCH: tl.constexpr,  # accumulators (1..4)
    BLOCK_K: tl.constexpr,  # input channels per step; divides C so a step never straddles two taps
    DOT_F32: tl.constexpr,  # upcast GEMM operands to fp32 (interpreter only, see _mma)
    MODE: tl.constexpr,  # 0: the whole op; 1: conv partial sums over program_id(1)'s K slice; 2: op from partials
    KSPLIT: tl.constexpr,  # K slices of modes 1 and 2
):
    N: tl.constexpr = G * G
    KTOT: tl.constexpr = KT * KS * KS * C
    pid = tl.program_id(0)
    rm = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = rm < M
    rm = tl.where(m_ok, rm, 0).to(tl.int64)
    f = rm // N
    p = rm % N
    b = f // T
    t = f % T
    i = p // G
    j = p % G
    # z frame of tap dt is t + dt: output frame t reads z_{t-2}, z_{t-1}, z_t (the cache frames sit at 0..CF-1)
    z_row0 = (b * (KT - 1 + T) + t) * N
    rk = tl.arange(0, BLOCK_K)
    rn = tl.arange(0, BLOCK_N)

    acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc3 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_lo = 0
    k_hi = KTOT
    if MODE == 1:
        k_lo = tl.program_id(1) * (KTOT // KSPLIT)
        k_hi = k_lo + KTOT // KSPLIT
    if MODE == 2:
        k_hi = 0  # no conv steps: the sums come from the partials, in slice order
        for sl in range(KSPLIT):
            pp = part_ptr + (sl * M + rm)[:, None] * C + rn[None, :]
            acc0 += tl.load(pp)
            if NCH > 1:
                acc1 += tl.load(pp + BLOCK_N)
            if NCH > 2:
                acc2 += tl.load(pp + 2 * BLOCK_N)
            if NCH > 3:
                acc3 += tl.load(pp + 3 * BLOCK_N)
    for kk in range(k_lo, k_hi, BLOCK_K):
        tap = kk // C
        si = i + (tap // KS) % KS - KS // 2
        sj = j + tap % KS - KS // 2
        ok = m_ok & (si >= 0) & (si < G) & (sj >= 0) & (sj < G)  # spatial zero padding
        src = z_row0 + (tap // (KS * KS)) * N + si * G + sj
        a = tl.load(z_ptr + src[:, None] * C + (kk % C + rk)[None, :], mask=ok[:, None], other=0.0)
        w_ptrs = wc_ptr + (kk + rk)[:, None] * C + rn[None, :]
        acc0 = _mma(a, tl.load(w_ptrs), acc0, DOT_F32)
        if NCH > 1:
            acc1 = _mma(a, tl.load(w_ptrs + BLOCK_N), acc1, DOT_F32)
        if NCH > 2:
            acc2 = _mma(a, tl.load(w_ptrs + 2 * BLOCK_N), acc2, DOT_F32)
        if NCH > 3:
            acc3 = _mma(a, tl.load(w_ptrs + 3 * BLOCK_N), acc3, DOT_F32)
    if MODE == 1:
        pp = part_ptr + (tl.program_id(1) * M + rm)[:, None] * C + rn[None, :]
        tl.store(pp, acc0, mask=m_ok[:, None])
        if NCH > 1:
            tl.store(pp + BLOCK_N, acc1, mask=m_ok[:, None])
        if NCH > 2:
            tl.store(pp + 2 * BLOCK_N, acc2, mask=m_ok[:, None])
        if NCH > 3:
            tl.store(pp + 3 * BLOCK_N, acc3, mask=m_ok[:, None])
    else:
        # ReLU(conv + bias), rounded to the GEMM dtype (bf16 mode feeds out_proj bf16 operands)
        h_ty = wo_ptr.dtype.element_ty
        h0 = tl.maximum(acc0 + tl.load(bc_ptr + rn)[None, :], 0.0).to(h_ty)
        h1 = h0  # unused chunks alias h0; their dots are compiled out
        h2 = h0
        h3 = h0
        if NCH > 1:
            h1 = tl.maximum(acc1 + tl.load(bc_ptr + BLOCK_N + rn)[None, :], 0.0).to(h_ty)
        if NCH > 2:
            h2 = tl.maximum(acc2 + tl.load(bc_ptr + 2 * BLOCK_N + rn)[None, :], 0.0).to(h_ty)
        if NCH > 3:
            h3 = tl.maximum(acc3 + tl.load(bc_ptr + 3 * BLOCK_N + rn)[None, :], 0.0).to(h_ty)
        for c0 in range(0, C, BLOCK_N):
            wo_ptrs = wo_ptr + rn[:, None] * C + (c0 + rn)[None, :]
            o = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            o = _mma(h0, tl.load(wo_ptrs), o, DOT_F32)
            if NCH > 1:
                o = _mma(h1, tl.load(wo_ptrs + BLOCK_N * C), o, DOT_F32)
            if NCH > 2:
                o = _mma(h2, tl.load(wo_ptrs + 2 * BLOCK_N * C), o, DOT_F32)
            if NCH > 3:
                o = _mma(h3, tl.load(wo_ptrs + 3 * BLOCK_N * C), o, DOT_F32)
            o += tl.load(bo_ptr + c0 + rn)[None, :]
            o += tl.load(pos_ptr + p[:, None] * C + (c0 + rn)[None, :])
            tl.store(out_ptr + rm[:, None] * C + (c0 + rn)[None, :], o, mask=m_ok[:, None])


# --------------------------------------------------------------------------------------------------------------------
# Weight prep and launcher
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchEmbedWeights:
    """Vision-encoder weights rearranged once for the two GEMMs (build with :func:`prepare_patch_embed_weights`).

    GEMM operands are in ``dtype`` (fp32, or bf16 for the fast mode); biases, LayerNorm params and pos_embed stay
    fp32 because they are applied to fp32 accumulators.
    """

    w_patch: torch.Tensor  # [3*P*P, C] dtype, row (c*P + ky)*P + kx
    b_patch: torch.Tensor  # [C] fp32
    ln_w: torch.Tensor  # [C] fp32
    ln_b: torch.Tensor  # [C] fp32
    w_conv: torch.Tensor  # [KT*KS*KS*C, C] dtype, row ((dt*KS + dy)*KS + dx)*C + c_in
    b_conv: torch.Tensor  # [C] fp32
    w_out: torch.Tensor  # [C, C] dtype, (in, out)
    b_out: torch.Tensor  # [C] fp32
    pos_embed: torch.Tensor  # [N, C] fp32
    channels: int  # C
    patch: int  # P
    grid: int  # G, with N = G*G
    kt: int  # temporal taps of the block conv
    ks: int  # spatial taps of the block conv
    dtype: torch.dtype  # GEMM operand dtype = z / conv-cache dtype


_NAMES = ("vision_model.temporal_conv.weight", "vision_model.temporal_conv.bias", "vision_model.norm.weight",
          "vision_model.norm.bias", "vision_model.blocks.0.conv3d.weight", "vision_model.blocks.0.conv3d.bias",
          "vision_model.out_proj.weight", "vision_model.out_proj.bias", "connector.pos_embed")


def prepare_patch_embed_weights(weights: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32,
                                device: torch.device | str | None = None) -> PatchEmbedWeights:
    """Checkpoint tensors (names without ``gazing_model.``) -> :class:`PatchEmbedWeights` on ``device`` (default:
    where the weights are). Cache the result: it copies every tensor."""
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"patch_embed weights: dtype must be float32 or bfloat16, got {dtype}")
    missing = [n for n in _NAMES if n not in weights]
    if missing:
        raise ValueError(f"patch_embed weights: missing tensor(s) {', '.join(missing)}")
    g = {k: weights[k].detach().to(device=device, dtype=torch.float32) for k in _NAMES}
    wp = g["vision_model.temporal_conv.weight"]  # [C, 3, 1, P, P]
    wc = g["vision_model.blocks.0.conv3d.weight"]  # [C_out, C_in, KT, KS, KS]
    pos = g["connector.pos_embed"]  # [N, C]
    C, P, KT, KS = wp.shape[0], wp.shape[-1], wc.shape[2], wc.shape[3]
    G = math.isqrt(pos.shape[0])
    if (wp.shape != (C, 3, 1, P, P) or wc.shape != (C, C, KT, KS, KS) or KS % 2 != 1
            or G * G != pos.shape[0] or pos.shape[1] != C
            or g["vision_model.out_proj.weight"].shape != (C, C, 1, 1, 1)):
        raise ValueError(f"patch_embed weights: unsupported shapes temporal_conv {tuple(wp.shape)}, conv3d "
                         f"{tuple(wc.shape)}, out_proj {tuple(g['vision_model.out_proj.weight'].shape)}, "
                         f"pos_embed {tuple(pos.shape)}")
    return PatchEmbedWeights(
        w_patch=wp.reshape(C, 3 * P * P).t().contiguous().to(dtype),
        b_patch=g["vision_model.temporal_conv.bias"].contiguous(),
        ln_w=g["vision_model.norm.weight"].contiguous(),
        ln_b=g["vision_model.norm.bias"].contiguous(),
        w_conv=wc.permute(2, 3, 4, 1, 0).reshape(KT * KS * KS * C, C).contiguous().to(dtype),
        b_conv=g["vision_model.blocks.0.conv3d.bias"].contiguous(),
        w_out=g["vision_model.out_proj.weight"].reshape(C, C).t().contiguous().to(dtype),
        b_out=g["vision_model.out_proj.bias"].contiguous(),
        pos_embed=pos.contiguous(),
        channels=C, patch=P, grid=G, kt=KT, ks=KS, dtype=dtype,
    )


def _configs(M: int, C: int, P: int, taps: int, dtype: torch.dtype, device: torch.device) -> tuple[dict, dict]:
    """(kernel A, kernel B) launch parameters (taps: the block conv's KT*KS*KS). Fixed rather than autotuned, so
    CUDA-graph capture never tunes; the values come from sweeps on an H100 (triton 3.6) at B*T = 1, 16, 64 and
    720 frames."""
    if device.type != "cuda":  # interpreter: few, large programs (fewer numpy calls), little row padding
        bm = min((64, 128, 256, 512), key=lambda m: triton.cdiv(M, m) * (m + 64))
        a, b = dict(BLOCK_M=bm, BLOCK_K=256), dict(BLOCK_M=bm, BLOCK_K=64)
    else:
        if dtype == torch.bfloat16:
            a = dict(BLOCK_M=64, BLOCK_K=32, num_warps=4, num_stages=3)
            b = dict(BLOCK_M=64, BLOCK_K=64, num_warps=4, num_stages=3)
        else:  # fp32 goes through FMA, not tensor cores: 8 warps share the 3 x [64, 64] accumulators
            a = dict(BLOCK_M=32, BLOCK_K=32, num_warps=4, num_stages=3)
            b = dict(BLOCK_M=64, BLOCK_K=64, num_warps=8, num_stages=3)
        # small clips (a streamed frame is 196 tokens): shrink BLOCK_M until the grid fills half the SMs
        half = num_sms(device) // 2
        for d in (a, b):
            while d["BLOCK_M"] > 16 and triton.cdiv(M, d["BLOCK_M"]) < half:
                d["BLOCK_M"] //= 2
            if d["BLOCK_M"] == 16:
                d["num_warps"] = 4  # a 16-row tile has too little work for 8 warps
    # C splits into NCH <= 4 power-of-2 chunks of >= 16 (tl.dot's minimum); K chunks tile C (a step never
    # straddles two taps) and P*P (never two colour planes)
    nch = next((n for n in (1, 2, 3, 4) if C % n == 0 and C // n <= 64 and (C // n) & (C // n - 1) == 0), 0)
    if nch == 0 or C // nch < 16 or (P * P) & -(P * P) < 16:
        raise ValueError(f"weights: channels {C} must be 1-4 chunks of a power of 2 in [16, 64]; "
                         f"patch area {P * P} a multiple of 16")
    a["BLOCK_K"] = min(a["BLOCK_K"], (P * P) & -(P * P))
    b["BLOCK_K"] = min(b["BLOCK_K"], C & -C)
    for d in (a, b):
        d["BLOCK_N"], d["NCH"] = C // nch, nch
    b["KSPLIT"] = 1
    if device.type == "cuda":
        # still under half the SMs at 16 rows a program (a streamed frame: 13 programs, each a 5184-long fp32
        # FMA chain): cut the conv's K steps into slices summed by a second launch
        steps, progs = taps * C // b["BLOCK_K"], triton.cdiv(M, b["BLOCK_M"])
        if progs < half:
            b["KSPLIT"] = next((d for d in range(2, steps + 1) if steps % d == 0 and progs * d >= half), steps)
    return a, b


def patch_embed(video: torch.Tensor, weights: PatchEmbedWeights | Mapping[str, torch.Tensor],
                conv_cache: torch.Tensor | None = None, k_split: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fused vision encoder + connector on 224x224 frames (the bicubic squash stays outside, in torch).

    video: [B, T, 3, H, W] fp32 or bf16, H = W = G*P (224). Any strides (a tile view needs no copy); unit
    stride along W keeps the loads coalesced.
    weights: :class:`PatchEmbedWeights` (preferred; its ``dtype`` picks fp32 or bf16 GEMM operands) or the raw
    checkpoint dict (prepared in fp32 on every call).
    conv_cache: [B, C, KT-1, G, G] in the weights' dtype, post-LayerNorm features of the previous frames (oldest
    first), or None for a fresh clip.
    k_split: the temporal conv's K steps in this many slices computed side by side, then summed in slice order
    by a second launch (None: automatic, >1 only for calls of a few frames on the GPU, whose 16-row programs
    would not fill half the SMs); other values for tests. The fp32 sums then round in another order.
    Returns (vision_embeds [B, T, G*G, C] fp32, new conv cache [B, C, KT-1, G, G] in the weights' dtype).
    """
    pw = weights if isinstance(weights, PatchEmbedWeights) else prepare_patch_embed_weights(weights, device=video.device)
    C, P, G, KT, KS = pw.channels, pw.patch, pw.grid, pw.kt, pw.ks
    N, CF, HW = G * G, KT - 1, G * P
    if not isinstance(video, torch.Tensor) or video.dim() != 5 or tuple(video.shape[2:]) != (3, HW, HW):
        raise ValueError(f"video: expected [B, T, 3, {HW}, {HW}], got {tuple(getattr(video, 'shape', ()))}")
    if video.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"video: expected float32 or bfloat16, got {video.dtype}")
    B, T = video.shape[:2]
    if B == 0 or T == 0:
        raise ValueError(f"video: expected at least one row and one frame, got B={B}, T={T}")
    dev = video.device
    if dev.type != "cuda" and not interpreting():
        raise ValueError(f"video: expected a CUDA tensor (CPU only under TRITON_INTERPRET=1), got device {dev}")
    for name in ("w_patch", "b_patch", "ln_w", "ln_b", "w_conv", "b_conv", "w_out", "b_out", "pos_embed"):
        if getattr(pw, name).device != dev:
            raise ValueError(f"weights.{name}: expected device {dev} (the video's), got {getattr(pw, name).device}")

    z = torch.empty(B, CF + T, N, C, device=dev, dtype=pw.dtype)  # [B, CF + T, N, C]
    if conv_cache is None:
        z[:, :CF].zero_()  # a fresh clip: zeros in post-LayerNorm space
    else:
        want = (B, C, CF, G, G)
        if tuple(conv_cache.shape) != want:
            raise ValueError(f"conv_cache: expected shape {want}, got {tuple(conv_cache.shape)}")
        if conv_cache.dtype != pw.dtype:
            raise ValueError(f"conv_cache: expected dtype {pw.dtype} (the weights' dtype), got {conv_cache.dtype}")
        if conv_cache.device != dev:
            raise ValueError(f"conv_cache: expected device {dev}, got {conv_cache.device}")
        z[:, :CF] = conv_cache.permute(0, 2, 3, 4, 1).reshape(B, CF, N, C)  # channel-major -> token-major
    out = torch.empty(B, T, N, C, device=dev, dtype=torch.float32)

    M = B * T * N
    cfg_a, cfg_b = _configs(M, C, P, KT * KS * KS, pw.dtype, dev)
    if k_split is not None:
        steps = KT * KS * KS * C // cfg_b["BLOCK_K"]
        if isinstance(k_split, bool) or not isinstance(k_split, int) or k_split < 1 or steps % k_split:
            raise ValueError(f"k_split: expected a divisor of the conv's {steps} K steps, got {k_split!r}")
        cfg_b["KSPLIT"] = k_split
    upcast = pw.dtype == torch.bfloat16 and dev.type != "cuda"  # see _mma
    _patch_ln_kernel[(triton.cdiv(M, cfg_a["BLOCK_M"]),)](
        video, pw.w_patch, pw.b_patch, pw.ln_w, pw.ln_b, z, M, T, *video.stride(), 1e-5,
        C=C, G=G, P=P, CF=CF, DOT_F32=upcast, **cfg_a)
    ksplit = cfg_b.pop("KSPLIT")
    rows = triton.cdiv(M, cfg_b["BLOCK_M"])
    block_args = (z, pw.w_conv, pw.b_conv, pw.w_out, pw.b_out, pw.pos_embed, out)
    if ksplit == 1:
        _temporal_block_kernel[(rows,)](*block_args, out, M, T, C=C, G=G, KT=KT, KS=KS, DOT_F32=upcast, MODE=0,
                                        KSPLIT=1, **cfg_b)
    else:  # conv partial sums of K slices side by side, then the op from their sum (fixed slice order)
        part = torch.empty(ksplit, M, C, device=dev, dtype=torch.float32)
        _temporal_block_kernel[(rows, ksplit)](*block_args, part, M, T, C=C, G=G, KT=KT, KS=KS, DOT_F32=upcast,
                                               MODE=1, KSPLIT=ksplit, **cfg_b)
        _temporal_block_kernel[(rows,)](*block_args, part, M, T, C=C, G=G, KT=KT, KS=KS, DOT_F32=upcast, MODE=2,
                                        KSPLIT=ksplit, **cfg_b)
    new_cache = z[:, T:].reshape(B, CF, G, G, C).permute(0, 4, 1, 2, 3).contiguous()  # [B, C, CF, G, G]
    return out, new_cache


def patch_embed_ref(video: torch.Tensor, weights: Mapping[str, torch.Tensor], conv_cache: torch.Tensor | None = None,
                    allow_tf32: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The pure-torch oracle: :func:`triton_autogaze.reference.vision.encode_video` with the default (NVIDIA)
    vision config. Same shapes as :func:`patch_embed`; fp32 in and out. On CUDA, cuDNN's convs would use TF32 by
    default (errors ~1e-3); the oracle turns that off unless ``allow_tf32`` (for timing PyTorch's default)."""
    from triton_autogaze.config import AutoGazeConfig
    from triton_autogaze.reference.vision import encode_video

    old = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    try:
        return encode_video(weights, AutoGazeConfig(), video, conv_cache)
    finally:
        torch.backends.cudnn.allow_tf32 = old
