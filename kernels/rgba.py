"""Packed RGB/RGBA uint8 frames [T, H, W, 3|4] on the device -> Pillow-exact bilinear resize -> uint8
[T, H', W', 3] or model pixels fp32 [T, 3, H', W'] (SPEC §2.1): two fixed-point passes, uint8 in between.

Coefficients come from ``_rgba.resize_coeffs`` (the C++ core, or its numpy twin), the affine from a 3x256 lookup
table built with the reference's own float64->float32 math, so every output bit equals the CPU path.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from triton_autogaze.tiling import affine_lut, apply_lut, resize_packed  # noqa: F401  (affine_lut: re-exported)

PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images
BLOCK_X = 128  # output pixels per program along a row
_FIXED = {"PREC": PRECISION_BITS, "HALF": 1 << (PRECISION_BITS - 1)}


@triton.jit
def _resize_rows_kernel(
    src_ptr,  # [T, H, W, C] uint8 source, any strides
    dst_ptr,  # [T, H, W_out, 3] uint8 intermediate, any strides
    lo_ptr,  # [W_out] int32 first source column of each output column
    w_ptr,  # [W_out, K] int32 fixed-point weights, 0 past each column's tap count
    H, W, W_out, K,  # source rows and columns, output columns, taps
    s_t, s_h, s_w, s_c,  # source strides (elements)
    d_t, d_h, d_w, d_c,  # intermediate strides (elements)
    PREC: tl.constexpr,  # fixed-point fraction bits (22)
    HALF: tl.constexpr,  # rounding bias 2^(PREC-1)
    BLOCK: tl.constexpr,  # output columns per program
):
    row = tl.program_id(0)  # t * H + y
    t = row // H
    y = row % H
    x = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = x < W_out
    lo = tl.load(lo_ptr + x, mask=ok, other=0)
    acc0 = tl.full((BLOCK,), HALF, tl.int32)
    acc1 = tl.full((BLOCK,), HALF, tl.int32)
    acc2 = tl.full((BLOCK,), HALF, tl.int32)
    base = src_ptr + t.to(tl.int64) * s_t + y.to(tl.int64) * s_h
    for k in range(0, K):
        wk = tl.load(w_ptr + x * K + k, mask=ok, other=0)
        # taps past a column's count weigh 0; clamping keeps their (ignored) load in bounds, as the reference does
        col = tl.minimum(lo + k, W - 1).to(tl.int64)
        p = base + col * s_w
        acc0 += wk * tl.load(p, mask=ok, other=0).to(tl.int32)
        acc1 += wk * tl.load(p + s_c, mask=ok, other=0).to(tl.int32)
        acc2 += wk * tl.load(p + 2 * s_c, mask=ok, other=0).to(tl.int32)
    out = dst_ptr + t.to(tl.int64) * d_t + y.to(tl.int64) * d_h + x.to(tl.int64) * d_w
    tl.store(out, tl.minimum(tl.maximum(acc0 >> PREC, 0), 255).to(tl.uint8), mask=ok)
    tl.store(out + d_c, tl.minimum(tl.maximum(acc1 >> PREC, 0), 255).to(tl.uint8), mask=ok)
    tl.store(out + 2 * d_c, tl.minimum(tl.maximum(acc2 >> PREC, 0), 255).to(tl.uint8), mask=ok)


@triton.jit
def _resize_cols_kernel(
    src_ptr,  # [T, H, W, C] uint8 (the intermediate, or the source when the width is kept), any strides
    dst_ptr,  # uint8 [T, H_out, W, 3] or fp32 [T, 3, H_out, W], any strides
    lut_ptr,  # [3, 256] fp32 affine lookup table (read only when OUT_FLOAT)
    lo_ptr,  # [H_out] int32 first source row of each output row
    w_ptr,  # [H_out, K] int32 fixed-point weights, 0 past each row's tap count
    H, H_out, W, K,  # source rows, output rows, columns, taps
    s_t, s_h, s_w, s_c,  # source strides (elements)
    d_t, d_h, d_w, d_c,  # output strides (elements)
    OUT_FLOAT: tl.constexpr,  # True: apply the lookup table and store fp32; False: store uint8
    PREC: tl.constexpr,  # fixed-point fraction bits (22)
    HALF: tl.constexpr,  # rounding bias 2^(PREC-1)
    BLOCK: tl.constexpr,  # columns per program
):
    row = tl.program_id(0)  # t * H_out + y
    t = row // H_out
    y = row % H_out
    x = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = x < W
    lo = tl.load(lo_ptr + y)
    acc0 = tl.full((BLOCK,), HALF, tl.int32)
    acc1 = tl.full((BLOCK,), HALF, tl.int32)
    acc2 = tl.full((BLOCK,), HALF, tl.int32)
    base = src_ptr + t.to(tl.int64) * s_t + x.to(tl.int64) * s_w
    for k in range(0, K):
        wk = tl.load(w_ptr + y * K + k)
        p = base + tl.minimum(lo + k, H - 1).to(tl.int64) * s_h
        acc0 += wk * tl.load(p, mask=ok, other=0).to(tl.int32)
        acc1 += wk * tl.load(p + s_c, mask=ok, other=0).to(tl.int32)
        acc2 += wk * tl.load(p + 2 * s_c, mask=ok, other=0).to(tl.int32)
    u0 = tl.minimum(tl.maximum(acc0 >> PREC, 0), 255)
    u1 = tl.minimum(tl.maximum(acc1 >> PREC, 0), 255)
    u2 = tl.minimum(tl.maximum(acc2 >> PREC, 0), 255)
    out = dst_ptr + t.to(tl.int64) * d_t + y.to(tl.int64) * d_h + x.to(tl.int64) * d_w
    if OUT_FLOAT:
        tl.store(out, tl.load(lut_ptr + u0, mask=ok, other=0.0), mask=ok)
        tl.store(out + d_c, tl.load(lut_ptr + 256 + u1, mask=ok, other=0.0), mask=ok)
        tl.store(out + 2 * d_c, tl.load(lut_ptr + 512 + u2, mask=ok, other=0.0), mask=ok)
    else:
        tl.store(out, u0.to(tl.uint8), mask=ok)
        tl.store(out + d_c, u1.to(tl.uint8), mask=ok)
        tl.store(out + 2 * d_c, u2.to(tl.uint8), mask=ok)



# --------------------------------------------------------------------------------------------------------------------
# Host side: coefficients, lookup table, launcher, reference
# --------------------------------------------------------------------------------------------------------------------
_COEFF_CACHE: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor, int]] = {}


def resize_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow bilinear taps for one axis: (lo [M] int32, weights [M, K] int32, zero past each tap count)."""
    try:
        from triton_autogaze import _rgba

        lo, count, weights = _rgba.resize_coeffs(int(in_size), int(out_size))
    except ImportError:
        from triton_autogaze.processing import resize_coeffs_reference

        lo, count, weights = resize_coeffs_reference(int(in_size), int(out_size))
    weights = np.where(np.arange(weights.shape[1])[None, :] < count[:, None], weights, 0).astype(np.int32)
    return np.ascontiguousarray(lo, dtype=np.int32), np.ascontiguousarray(weights)


def _identity_coeffs(n: int) -> tuple[np.ndarray, np.ndarray]:
    # (2^21 + 2^22 * u) >> 22 == u: a skipped pass expressed as a pass
    return np.arange(n, dtype=np.int32), np.full((n, 1), 1 << PRECISION_BITS, np.int32)


def _device_coeffs(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int]:
    key = (in_size, out_size, str(device))
    hit = _COEFF_CACHE.get(key)
    if hit is None:
        lo, w = _identity_coeffs(in_size) if in_size == out_size else resize_coeffs(in_size, out_size)
        hit = (torch.from_numpy(lo).to(device), torch.from_numpy(w).contiguous().to(device), int(w.shape[1]))
        if len(_COEFF_CACHE) > 64:
            _COEFF_CACHE.clear()
        _COEFF_CACHE[key] = hit
    return hit


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(frames):
        raise TypeError(f"frames: expected a torch.Tensor [T, H, W, 3|4] uint8, got {type(frames).__name__}")
    if frames.dim() == 3:
        frames = frames[None]
    if frames.dim() != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"frames: expected [T, H, W, 3|4], got shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames: expected dtype torch.uint8, got {frames.dtype}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"frames: expected T, H, W >= 1, got shape {tuple(frames.shape)}")
    return frames


def rgba_resize(frames: torch.Tensor, out_height: int, out_width: int,
                lut: torch.Tensor | None = None) -> torch.Tensor:
    """Pillow BILINEAR resize of packed frames on their device, alpha dropped (never premultiplied).

    frames: [T, H, W, 3|4] (or [H, W, 3|4]) uint8, any strides. lut: None, or [3, 256] fp32 from
    :func:`triton_autogaze.tiling.affine_lut` to fuse the processor affine into the second pass.
    Returns [T, out_height, out_width, 3] uint8 (lut None) or [T, 3, out_height, out_width] fp32.
    Horizontal pass first with a uint8 intermediate; a pass whose axis keeps its size is skipped (SPEC §2.1).
    """
    frames = _check_frames(frames)
    if out_height < 1 or out_width < 1:
        raise ValueError(f"out_height, out_width: expected >= 1, got ({out_height}, {out_width})")
    dev = frames.device
    T, H, W, _ = frames.shape
    if lut is not None:
        if tuple(lut.shape) != (3, 256) or lut.dtype != torch.float32:
            raise ValueError(f"lut: expected [3, 256] float32, got {tuple(lut.shape)} {lut.dtype}")
        lut = lut.to(dev).contiguous()
    src = frames
    if out_width != W:
        lo, w, K = _device_coeffs(W, out_width, dev)
        src = torch.empty(T, H, out_width, 3, dtype=torch.uint8, device=dev)
        _resize_rows_kernel[(T * H, triton.cdiv(out_width, BLOCK_X))](
            frames, src, lo, w, H, W, out_width, K, *frames.stride(), *src.stride(), **_FIXED, BLOCK=BLOCK_X)
    lo, w, K = _device_coeffs(H, out_height, dev)  # identity taps when the height is kept
    if lut is None:
        out = torch.empty(T, out_height, out_width, 3, dtype=torch.uint8, device=dev)
        d_strides = out.stride()
    else:
        out = torch.empty(T, 3, out_height, out_width, dtype=torch.float32, device=dev)
        st, sc, sh, sw = out.stride()
        d_strides = (st, sh, sw, sc)
    _resize_cols_kernel[(T * out_height, triton.cdiv(out_width, BLOCK_X))](
        src, out, lut if lut is not None else out, lo, w, H, out_height, out_width, K, *src.stride(), *d_strides,
        OUT_FLOAT=lut is not None, **_FIXED, BLOCK=BLOCK_X)
    return out


def rgba_resize_ref(frames: torch.Tensor, out_height: int, out_width: int,
                    lut: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`rgba_resize` through the C++ core (or the numpy reference) on the CPU; same shapes and dtypes."""
    frames = _check_frames(frames)
    u8 = resize_packed(frames.detach().cpu(), int(out_height), int(out_width))
    if lut is None:
        return u8.to(frames.device)
    return apply_lut(u8, lut).to(frames.device)
