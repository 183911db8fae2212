"""Gaze masks (SPEC §7.4) and tile stitching (SPEC §10.1 recovery steps 1-2) in one Triton kernel.

frame-local ids [B*nh*nw, T, L] (pads = NV) -> per-scale 0/1 masks, each tile's cells written straight into the
stitched [B, T, nh*g_s, nw*g_s] grid (optionally cropped top-left). With nh = nw = 1 this is the plain per-frame
mask of upstream's ``gazing_mask``. A second kernel stitches masks that already exist.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import triton
import triton.language as tl

from ._checks import interpreting


@triton.jit
def _store_tile_cells(
    out_ptr,  # [B, T, rows, cols] fp32 stitched mask of one scale
    vals,  # [X] fp32 values of the cells below
    cell,  # [X] int32 cell index inside the tile's G x G grid (row-major); outside [0, G*G) is skipped
    frame,  # b*T + t
    tile_r, tile_c,  # the tile's row and column in the nh x nw tile grid
    rows, cols,  # stitched (cropped) extent of this scale
    G: tl.constexpr,  # grid side of this scale inside one tile
):
    r = tile_r * G + cell // G
    c = tile_c * G + cell % G
    ok = (cell >= 0) & (cell < G * G) & (r < rows) & (c < cols)  # cells cropped away are simply not stored
    tl.store(out_ptr + (frame * rows + r) * cols + c, vals, mask=ok)


@triton.jit
def _scatter_stitch_kernel(
    ids_ptr,  # [B*nh*nw, T, L] int32/int64 frame-local ids, pads = NV, unit stride along L
    out0_ptr, out1_ptr, out2_ptr, out3_ptr,  # [B, T, rows_s, cols_s] fp32 per scale (unused ones: any pointer)
    T, L, nh, nw,  # frames, ids per frame, tile grid
    stride_in, stride_it,  # ids strides of the tile and frame dims
    rows0, cols0, rows1, cols1, rows2, cols2, rows3, cols3,  # stitched extents per scale
    G0: tl.constexpr, G1: tl.constexpr, G2: tl.constexpr, G3: tl.constexpr,  # grid side per scale (2, 4, 7, 14)
    NUM_SCALES: tl.constexpr,  # 1..4
    NV_PAD: tl.constexpr,  # power of 2 >= NV = sum G_s^2
    BLOCK_L: tl.constexpr,  # ids compared per step
):
    # One program per (tile, frame). Each output element belongs to exactly one tile cell, so every element of
    # the outputs is written exactly once: no zero-fill pass and no atomics.
    tile = tl.program_id(0)
    t = tl.program_id(1)
    b = tile // (nh * nw)
    tile_r = (tile // nw) % nh
    tile_c = tile % nw
    v = tl.arange(0, NV_PAD)  # frame-local id of each candidate cell
    hit = tl.zeros((NV_PAD,), dtype=tl.int32)
    base = ids_ptr + tile.to(tl.int64) * stride_in + t.to(tl.int64) * stride_it
    for l0 in range(0, L, BLOCK_L):
        rl = l0 + tl.arange(0, BLOCK_L)
        ids = tl.load(base + rl, mask=rl < L, other=-1)
        # compare instead of scatter: pads (NV) and out-of-range ids match no cell of any scale
        hit = tl.maximum(hit, tl.max((ids[:, None] == v[None, :]).to(tl.int32), axis=0))
    vals = hit.to(tl.float32)
    frame = b * T + t
    _store_tile_cells(out0_ptr, vals, v, frame, tile_r, tile_c, rows0, cols0, G0)
    if NUM_SCALES > 1:
        _store_tile_cells(out1_ptr, vals, v - G0 * G0, frame, tile_r, tile_c, rows1, cols1, G1)
    if NUM_SCALES > 2:
        _store_tile_cells(out2_ptr, vals, v - G0 * G0 - G1 * G1, frame, tile_r, tile_c, rows2, cols2, G2)
    if NUM_SCALES > 3:
        _store_tile_cells(out3_ptr, vals, v - G0 * G0 - G1 * G1 - G2 * G2, frame, tile_r, tile_c, rows3, cols3, G3)


@triton.jit
def _stitch_one(in_ptr, out_ptr, tile, t, T, frame, tile_r, tile_c, rows, cols,
                G: tl.constexpr, BLOCK: tl.constexpr):
    # in_ptr: [B*nh*nw, T, G*G] fp32 contiguous tile masks of one scale
    cell = tl.arange(0, BLOCK)
    vals = tl.load(in_ptr + (tile.to(tl.int64) * T + t) * (G * G) + cell, mask=cell < G * G, other=0.0)
    _store_tile_cells(out_ptr, vals, cell, frame, tile_r, tile_c, rows, cols, G)


@triton.jit
def _stitch_kernel(
    in0_ptr, in1_ptr, in2_ptr, in3_ptr,  # [B*nh*nw, T, G_s^2] fp32 contiguous tile masks per scale
    out0_ptr, out1_ptr, out2_ptr, out3_ptr,  # [B, T, rows_s, cols_s] fp32 per scale
    T, nh, nw,  # frames, tile grid
    rows0, cols0, rows1, cols1, rows2, cols2, rows3, cols3,  # stitched extents per scale
    G0: tl.constexpr, G1: tl.constexpr, G2: tl.constexpr, G3: tl.constexpr,  # grid side per scale
    BLOCK0: tl.constexpr, BLOCK1: tl.constexpr, BLOCK2: tl.constexpr, BLOCK3: tl.constexpr,  # pow2 >= G_s^2
    NUM_SCALES: tl.constexpr,  # 1..4
):
    tile = tl.program_id(0)
    t = tl.program_id(1)
    b = tile // (nh * nw)
    tile_r = (tile // nw) % nh
    tile_c = tile % nw
    frame = b * T + t
    _stitch_one(in0_ptr, out0_ptr, tile, t, T, frame, tile_r, tile_c, rows0, cols0, G0, BLOCK0)
    if NUM_SCALES > 1:
        _stitch_one(in1_ptr, out1_ptr, tile, t, T, frame, tile_r, tile_c, rows1, cols1, G1, BLOCK1)
    if NUM_SCALES > 2:
        _stitch_one(in2_ptr, out2_ptr, tile, t, T, frame, tile_r, tile_c, rows2, cols2, G2, BLOCK2)
    if NUM_SCALES > 3:
        _stitch_one(in3_ptr, out3_ptr, tile, t, T, frame, tile_r, tile_c, rows3, cols3, G3, BLOCK3)


# --------------------------------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------------------------------
def _check_device(t: torch.Tensor, what: str) -> None:
    if t.device.type != "cuda" and not interpreting():
        raise ValueError(f"{what}: expected a CUDA tensor (CPU only under TRITON_INTERPRET=1), got device {t.device}")


def _grid_sides(tokens_per_scale: Sequence[int]) -> list[int]:
    sides = [math.isqrt(n) if n > 0 else 0 for n in tokens_per_scale]
    if not 1 <= len(sides) <= 4 or any(g < 1 or g * g != n for g, n in zip(sides, tokens_per_scale)):
        raise ValueError(f"tokens_per_scale: expected 1 to 4 positive perfect squares, got {tuple(tokens_per_scale)}")
    return sides


def _extents(sides: list[int], nh: int, nw: int, crop: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    full = [(nh * g, nw * g) for g in sides]
    if crop is None:
        return full
    if len(crop) != len(sides):
        raise ValueError(f"crop: expected {len(sides)} (rows, cols) pairs, got {len(crop)}")
    out = []
    for s, ((r, c), (fr, fc)) in enumerate(zip(crop, full)):
        if not (0 <= r <= fr and 0 <= c <= fc):
            raise ValueError(f"crop[{s}]: expected rows <= {fr} and cols <= {fc}, got ({r}, {c})")
        out.append((int(r), int(c)))
    return out


def _check_tiles(n_tiles: int, nh: int, nw: int, what: str) -> int:
    if nh < 1 or nw < 1:
        raise ValueError(f"nh, nw: expected >= 1, got ({nh}, {nw})")
    if n_tiles % (nh * nw):
        raise ValueError(f"{what}: expected a leading dim divisible by nh*nw = {nh * nw}, got {n_tiles}")
    return n_tiles // (nh * nw)


def _pad4(xs: list[torch.Tensor]) -> list[torch.Tensor]:
    return xs + [xs[0]] * (4 - len(xs))  # unused scale slots get any valid pointer


def scatter_and_stitch(frame_ids: torch.Tensor, nh: int, nw: int, tokens_per_scale: Sequence[int] = (4, 16, 49, 196),
                       crop: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """Per-tile gaze ids -> stitched per-scale masks, in one launch.

    frame_ids: [B*nh*nw, T, L] int32/int64 frame-local ids (pads = NV = sum(tokens_per_scale), anywhere in a row),
    tiles ordered batch-major, then tile row, then tile column. crop: optional (rows, cols) per scale, top-left.
    Returns per scale s a [B, T, rows_s, cols_s] fp32 0/1 tensor (default rows_s = nh*g_s, cols_s = nw*g_s);
    element [b, t, a*g_s + r, c*g_s + q] is 1 iff id o_s + r*g_s + q is in frame t of tile (b, a, c).
    """
    sides = _grid_sides(tokens_per_scale)
    if frame_ids.dim() != 3:
        raise ValueError(f"frame_ids: expected [B*nh*nw, T, L], got {tuple(frame_ids.shape)}")
    if frame_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"frame_ids: expected int32 or int64, got {frame_ids.dtype}")
    _check_device(frame_ids, "frame_ids")
    if frame_ids.shape[2] > 1 and frame_ids.stride(2) != 1:
        raise ValueError(f"frame_ids: expected unit stride along L, got {frame_ids.stride(2)}")
    n_tiles, T, L = frame_ids.shape
    B = _check_tiles(n_tiles, nh, nw, "frame_ids")
    ext = _extents(sides, nh, nw, crop)
    outs = [torch.empty(B, T, r, c, device=frame_ids.device, dtype=torch.float32) for r, c in ext]
    if n_tiles * T == 0:
        return outs
    nv = sum(g * g for g in sides)
    rc = [x for e in ext + [(0, 0)] * (4 - len(ext)) for x in e]
    _scatter_stitch_kernel[(n_tiles, T)](
        frame_ids, *_pad4(outs), T, L, nh, nw, frame_ids.stride(0), frame_ids.stride(1), *rc,
        *(sides + [1] * (4 - len(sides))), NUM_SCALES=len(sides), NV_PAD=triton.next_power_of_2(nv), BLOCK_L=32)
    return outs


def scatter_masks(frame_ids: torch.Tensor, tokens_per_scale: Sequence[int] = (4, 16, 49, 196)) -> list[torch.Tensor]:
    """frame_ids [B, T, L] int frame-local ids (pads = NV) -> per scale [B, T, n_s] fp32 0/1, as
    ``record.assemble_record``'s ``gazing_mask`` (cell k of scale s is id o_s + k)."""
    masks = scatter_and_stitch(frame_ids, 1, 1, tokens_per_scale)
    return [m.reshape(m.shape[0], m.shape[1], -1) for m in masks]  # [B, T, g, g] -> [B, T, n_s], a view


def stitch_tile_masks(tile_masks: Sequence[torch.Tensor], nh: int, nw: int,
                      crop: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """tile_masks: per scale [B*nh*nw, T, g_s*g_s] fp32 (tiles batch-major, then tile row, then tile column)
    -> per scale [B, T, nh*g_s, nw*g_s] fp32 (or the top-left (rows, cols) of ``crop[s]``)."""
    masks = list(tile_masks)
    if not masks:
        raise ValueError("tile_masks: expected 1 to 4 tensors, got none")
    first = masks[0]
    _check_device(first, "tile_masks[0]")
    for s, m in enumerate(masks):
        if m.dim() != 3 or m.shape[:2] != first.shape[:2]:
            raise ValueError(f"tile_masks[{s}]: expected [{first.shape[0]}, {first.shape[1]}, g*g], got {tuple(m.shape)}")
        if m.dtype != torch.float32:
            raise ValueError(f"tile_masks[{s}]: expected float32, got {m.dtype}")
        if m.device != first.device:
            raise ValueError(f"tile_masks[{s}]: expected device {first.device}, got {m.device}")
        if not m.is_contiguous():
            raise ValueError(f"tile_masks[{s}]: expected a contiguous tensor, got strides {m.stride()}")
    for s, m in enumerate(masks):
        if math.isqrt(m.shape[2]) ** 2 != m.shape[2] or m.shape[2] == 0:
            raise ValueError(f"tile_masks[{s}]: expected g*g cells in the last dim, got {m.shape[2]}")
    sides = _grid_sides([m.shape[2] for m in masks])
    n_tiles, T = first.shape[:2]
    B = _check_tiles(n_tiles, nh, nw, "tile_masks[0]")
    ext = _extents(sides, nh, nw, crop)
    outs = [torch.empty(B, T, r, c, device=first.device, dtype=torch.float32) for r, c in ext]
    if n_tiles * T == 0:
        return outs
    rc = [x for e in ext + [(0, 0)] * (4 - len(ext)) for x in e]
    _stitch_kernel[(n_tiles, T)](*_pad4(masks), *_pad4(outs), T, nh, nw, *rc,
                                 *(sides + [1] * (4 - len(sides))),
                                 *[triton.next_power_of_2(g * g) for g in sides + [1] * (4 - len(sides))],
                                 NUM_SCALES=len(sides))
    return outs


# --------------------------------------------------------------------------------------------------------------------
# Torch references
# --------------------------------------------------------------------------------------------------------------------
def scatter_masks_ref(frame_ids: torch.Tensor, tokens_per_scale: Sequence[int] = (4, 16, 49, 196)) -> list[torch.Tensor]:
    """Mirror of ``record.assemble_record``'s masks: scatter ones into [B, T, NV + 1], drop the pad column, split."""
    nv = sum(tokens_per_scale)
    B, T, _ = frame_ids.shape
    dense = torch.zeros(B, T, nv + 1, dtype=torch.float32, device=frame_ids.device)
    dense.scatter_(2, frame_ids.long(), 1.0)
    return [m.contiguous() for m in dense[..., :nv].split(list(tokens_per_scale), dim=-1)]


def stitch_tile_masks_ref(tile_masks: Sequence[torch.Tensor], nh: int, nw: int,
                          crop: Sequence[tuple[int, int]] | None = None) -> list[torch.Tensor]:
    """SPEC §10.1 recovery steps 1-2 in torch: tile (a, c) fills rows a*g.. and columns c*g.., then crop."""
    out = []
    for s, m in enumerate(tile_masks):
        n_tiles, T, n = m.shape
        g = math.isqrt(n)
        grid = m.reshape(n_tiles // (nh * nw), nh, nw, T, g, g).permute(0, 3, 1, 4, 2, 5)  # [B, T, nh, g, nw, g]
        grid = grid.reshape(n_tiles // (nh * nw), T, nh * g, nw * g)
        if crop is not None:
            grid = grid[:, :, :crop[s][0], :crop[s][1]]
        out.append(grid.contiguous())
    return out
