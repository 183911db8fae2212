"""A pipeline trace's record from the engine's full-width per-frame outputs, in one launch (SPEC §7.4, §10.1).

The engine writes each frame's ids into a [B, M] row block (M = the call's largest budget) that holds EOS = NV
past every row's length. The trace wants them as upstream lays them out: frame t's first L_t = max_b lens[t, b]
columns, frames side by side. ``trace_record`` builds, from ids [T, B, M], confidences [T, B, M] and lens [T, B]:

- gazing_pos [B, N] int64 (ids + NV*t; pads hold NV*(t+1)), if_padded_gazing [B, N] bool, confidence [B, N]
  fp32 (N = sum_t L_t), num_gazing_each_frame [T] int64: ``record.assemble_record`` and the confidence ``cat``;
- gazing_mask per scale [B, T, n_s] fp32 0/1: ``assemble_record``'s masks;
- with a tile grid (rows = the tiles of one clip, row-major in nh x nw), the stitched masks per scale
  [T, R_s, C_s] bool, cropped top-left: ``tiling.stitch_masks``.

It replaces ~25 small torch ops (each a host launch) by one: a streamed push's trace was ~0.3-0.45 ms of host
work (RESULTS.md fifteenth pass, item 6). ``trace_record_ref`` is the torch reference: the functions above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import triton
import triton.language as tl

from .mask_scatter import _check_device, _extents, _grid_sides, _pad4, _store_tile_cells


@triton.jit
def _scale_cells(mask_ptr, stitch_ptr, hit, cell, b, t, T, tile_r, tile_c, rows, cols,
                 G: tl.constexpr, STITCH: tl.constexpr):
    # this row's [G*G] mask of one scale (every cell written once), then the tile's cells of the stitched grid
    tl.store(mask_ptr + (b * T + t) * (G * G) + cell, hit.to(tl.float32), mask=(cell >= 0) & (cell < G * G))
    if STITCH:
        _store_tile_cells(stitch_ptr, hit > 0, cell, t, tile_r, tile_c, rows, cols, G)


@triton.jit
def _trace_record_kernel(
    ids_ptr,  # [T, B, M] int64 frame-local ids, EOS = NV past each row's length
    conf_ptr,  # [T, B, M] fp32
    lens_ptr,  # [T, B] int32 / int64 row lengths
    pos_ptr, pad_ptr, cout_ptr,  # [B, N] int64 / bool / fp32
    num_ptr,  # [T] int64
    m0_ptr, m1_ptr, m2_ptr, m3_ptr,  # [B, T, G_s^2] fp32 per scale (unused ones: any pointer)
    s0_ptr, s1_ptr, s2_ptr, s3_ptr,  # [T, R_s, C_s] bool per scale (STITCH only)
    B, T, M, N, nw,  # rows, frames, row width, record width, tiles a row of the tile grid
    rows0, cols0, rows1, cols1, rows2, cols2, rows3, cols3,  # stitched extents per scale
    G0: tl.constexpr, G1: tl.constexpr, G2: tl.constexpr, G3: tl.constexpr,  # grid side per scale
    NUM_SCALES: tl.constexpr, NV: tl.constexpr, NV_PAD: tl.constexpr,
    T_PAD: tl.constexpr, B_BLOCK: tl.constexpr, M_PAD: tl.constexpr, BLOCK_L: tl.constexpr,
    STITCH: tl.constexpr,
):
    # One program per (row, frame). Every output element is written by exactly one program: no zero fill.
    b = tl.program_id(0)
    t = tl.program_id(1)
    # frame widths L_t = max over rows, and where frame t starts in the record
    tt = tl.arange(0, T_PAD)
    width = tl.zeros((T_PAD,), dtype=tl.int32)
    for b0 in range(0, B, B_BLOCK):
        bb = b0 + tl.arange(0, B_BLOCK)
        ln = tl.load(lens_ptr + tt[:, None] * B + bb[None, :], mask=(tt[:, None] < T) & (bb[None, :] < B), other=0)
        width = tl.maximum(width, tl.max(ln.to(tl.int32), axis=1))
    L = tl.sum(tl.where(tt == t, width, 0), axis=0)
    start = tl.sum(tl.where(tt < t, width, 0), axis=0)
    tl.store(num_ptr + t, L.to(tl.int64), mask=b == 0)

    row = (t * B + b).to(tl.int64) * M
    j = tl.arange(0, M_PAD)
    ok = j < L
    ids = tl.load(ids_ptr + row + j, mask=ok, other=NV)
    dst = b.to(tl.int64) * N + start + j
    tl.store(pos_ptr + dst, ids + NV * t, mask=ok)
    tl.store(pad_ptr + dst, ids == NV, mask=ok)
    tl.store(cout_ptr + dst, tl.load(conf_ptr + row + j, mask=ok, other=0.0), mask=ok)

    # masks: compare instead of scatter (pads match no cell); a row holds EOS past its length, so all M columns
    v = tl.arange(0, NV_PAD)
    hit = tl.zeros((NV_PAD,), dtype=tl.int32)
    for l0 in range(0, M, BLOCK_L):
        rl = l0 + tl.arange(0, BLOCK_L)
        blk = tl.load(ids_ptr + row + rl, mask=rl < M, other=-1)
        hit = tl.maximum(hit, tl.max((blk[:, None] == v[None, :]).to(tl.int32), axis=0))
    tile_r = b // nw
    tile_c = b % nw
    _scale_cells(m0_ptr, s0_ptr, hit, v, b, t, T, tile_r, tile_c, rows0, cols0, G0, STITCH)
    if NUM_SCALES > 1:
        _scale_cells(m1_ptr, s1_ptr, hit, v - G0 * G0, b, t, T, tile_r, tile_c, rows1, cols1, G1, STITCH)
    if NUM_SCALES > 2:
        _scale_cells(m2_ptr, s2_ptr, hit, v - G0 * G0 - G1 * G1, b, t, T, tile_r, tile_c, rows2, cols2, G2, STITCH)
    if NUM_SCALES > 3:
        _scale_cells(m3_ptr, s3_ptr, hit, v - G0 * G0 - G1 * G1 - G2 * G2, b, t, T, tile_r, tile_c, rows3, cols3,
                     G3, STITCH)


def _check_inputs(ids, conf, lens, frame_lengths, tokens_per_scale, tiles, crop) -> tuple[list[int], list]:
    """The launcher's checks; returns the grid side per scale and the stitched extents (None without tiles)."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 3 or ids.dtype != torch.int64:
        raise ValueError(f"ids: expected an int64 [T, B, M] tensor, got "
                         f"{getattr(ids, 'dtype', type(ids).__name__)} {tuple(getattr(ids, 'shape', ()))}")
    T, B, M = ids.shape
    if T < 1 or B < 1 or M < 1:
        raise ValueError(f"ids: expected at least one frame, row and column, got {tuple(ids.shape)}")
    _check_device(ids, "ids")
    for name, x, shape, dtypes in (("confidence", conf, (T, B, M), (torch.float32,)),
                                   ("lens", lens, (T, B), (torch.int32, torch.int64))):
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != shape or x.dtype not in dtypes:
            raise ValueError(f"{name}: expected {[str(d) for d in dtypes]} {list(shape)}, got "
                             f"{getattr(x, 'dtype', type(x).__name__)} {tuple(getattr(x, 'shape', ()))}")
        if x.device != ids.device:
            raise ValueError(f"{name}: expected device {ids.device}, got {x.device}")
    for name, x in (("ids", ids), ("confidence", conf), ("lens", lens)):
        if not x.is_contiguous():
            raise ValueError(f"{name}: must be contiguous")
    if frame_lengths is not None and (len(frame_lengths) != T or any(not 0 <= int(n) <= M for n in frame_lengths)):
        raise ValueError(f"frame_lengths: expected None or {T} ints in 0..{M}, got {list(frame_lengths)}")
    sides = _grid_sides(tokens_per_scale)
    if tiles is None:
        return sides, None
    nh, nw = tiles
    if nh < 1 or nw < 1 or nh * nw != B:
        raise ValueError(f"tiles: expected an nh x nw grid of the {B} rows, got {tuple(tiles)}")
    return sides, _extents(sides, nh, nw, crop)


def trace_record(ids: torch.Tensor, conf: torch.Tensor, lens: torch.Tensor, frame_lengths: Sequence[int] | None,
                 tokens_per_scale: Sequence[int], tiles: tuple[int, int] | None = None,
                 crop: Sequence[tuple[int, int]] | None = None) -> dict[str, object]:
    """ids [T, B, M] int64 (EOS = NV = sum(tokens_per_scale) past each row's length), conf [T, B, M] fp32, lens
    [T, B] int32/int64 row lengths; frame_lengths: the T values max_b lens[t] (the caller read them at its sync:
    they size the outputs), or None to launch before that sync: gazing_pos, if_padded_gazing and confidence are
    then [B, T*M] and only their first N = sum_t L_t columns are written (:func:`cut_record` takes them once
    the widths are known). tiles: (nh, nw) with nh*nw = B to also stitch; crop: per scale the stitched (rows,
    cols) kept top-left (default nh*g_s x nw*g_s; as ``mask_scatter.scatter_and_stitch``).

    Returns ``assemble_record``'s dict (gazing_pos, if_padded_gazing, num_gazing_each_frame, gazing_mask) plus
    confidence [B, N] and, with tiles, scale_masks (a tuple of [T, R_s, C_s] bool)."""
    sides, ext = _check_inputs(ids, conf, lens, frame_lengths, tokens_per_scale, tiles, crop)
    T, B, M = ids.shape
    dev = ids.device
    nv = sum(g * g for g in sides)
    N = T * M if frame_lengths is None else sum(int(n) for n in frame_lengths)
    pos = torch.empty(B, N, dtype=torch.int64, device=dev)
    pad = torch.empty(B, N, dtype=torch.bool, device=dev)
    cout = torch.empty(B, N, dtype=torch.float32, device=dev)
    num = torch.empty(T, dtype=torch.int64, device=dev)
    masks = [torch.empty(B, T, g * g, dtype=torch.float32, device=dev) for g in sides]
    stitch = tiles is not None
    nw = tiles[1] if stitch else B
    ext = ext if stitch else [(0, 0)] * len(sides)
    stitched = [torch.empty(T, r, c, dtype=torch.bool, device=dev) for r, c in ext] if stitch else []
    fill = 4 - len(sides)
    rc = [x for e in ext + [(0, 0)] * fill for x in e]
    _trace_record_kernel[(B, T)](
        ids, conf, lens, pos, pad, cout, num, *_pad4(masks), *(_pad4(stitched) if stitch else [pos] * 4),
        B, T, M, N, nw, *rc, *(sides + [1] * fill),
        NUM_SCALES=len(sides), NV=nv, NV_PAD=triton.next_power_of_2(nv), T_PAD=triton.next_power_of_2(T),
        B_BLOCK=min(64, triton.next_power_of_2(B)), M_PAD=triton.next_power_of_2(M), BLOCK_L=32, STITCH=stitch)
    out = {"gazing_pos": pos, "if_padded_gazing": pad, "num_gazing_each_frame": num, "gazing_mask": masks,
           "confidence": cout}
    if stitch:
        out["scale_masks"] = tuple(stitched)
    return out


def cut_record(rec: dict[str, object], frame_lengths: Sequence[int]) -> dict[str, object]:
    """A record :func:`trace_record` built with ``frame_lengths=None`` -> the same as with them: gazing_pos,
    if_padded_gazing and confidence cut to their first sum(frame_lengths) columns (views for one row, copies
    otherwise, so that every field stays contiguous); the other fields as they are."""
    n = sum(int(x) for x in frame_lengths)
    out = dict(rec)
    for k in ("gazing_pos", "if_padded_gazing", "confidence"):
        out[k] = rec[k][:, :n].contiguous()
    return out


def trace_record_ref(ids: torch.Tensor, conf: torch.Tensor, lens: torch.Tensor, frame_lengths: Sequence[int],
                     tokens_per_scale: Sequence[int], tiles: tuple[int, int] | None = None,
                     crop: Sequence[tuple[int, int]] | None = None) -> dict[str, object]:
    """Torch reference of :func:`trace_record`: the per-frame [B, L_t] slices through the functions it replaces
    (``lens`` only checked: the slices' pads are EOS)."""
    from types import SimpleNamespace

    from triton_autogaze.record import assemble_record
    from triton_autogaze.tiling import stitch_masks

    sides = [math.isqrt(n) for n in tokens_per_scale]
    T, B, _ = ids.shape
    cfg = SimpleNamespace(num_vision_tokens_each_frame=sum(tokens_per_scale), eos_id=sum(tokens_per_scale),
                          tokens_per_scale=tuple(tokens_per_scale))
    frames = [ids[t, :, :n] for t, n in enumerate(frame_lengths)]
    out = dict(assemble_record(cfg, frames))
    out["confidence"] = torch.cat([conf[t, :, :n] for t, n in enumerate(frame_lengths)], dim=1)
    if tiles is not None:
        nh, nw = tiles
        ext = list(crop) if crop is not None else [(nh * g, nw * g) for g in sides]
        grid = SimpleNamespace(tiles=(nh, nw), grid_sizes=tuple(sides), stitched_shape=lambda s: ext[s])
        out["scale_masks"] = stitch_masks(out["gazing_mask"], grid)
    return out
