"""Rendering in one Triton kernel: uint8 frames [T, H, W, 3] + per-scale gaze grids -> mask image, full-blend or
interframe output, and per-frame partial sums (squared error, covered pixels) for the metrics.
"""

from __future__ import annotations

from typing import Sequence

import torch
import triton
import triton.language as tl

BLOCK = 2048  # bytes of one frame per program: ~683 pixels; 1080p -> 3038 programs
# Each program owns one block of bytes and walks the clip's frames in order, so the interframe output of the
# previous frame stays in registers and the per-scale cell lookups are computed once per clip.


@triton.jit
def _cell(geo_ptr, s, y, x):
    # Stitched cell (row * cols + col) holding pixel (y, x) at scale s: the cell that holds the pixel centre.
    # Integer arithmetic, identical to CellGeometry.row_index / col_index.
    R = tl.load(geo_ptr + s * 6 + 0)
    C = tl.load(geo_ptr + s * 6 + 1)
    ny = tl.load(geo_ptr + s * 6 + 2)
    dy = tl.load(geo_ptr + s * 6 + 3)
    nx = tl.load(geo_ptr + s * 6 + 4)
    dx = tl.load(geo_ptr + s * 6 + 5)
    row = tl.minimum((2 * y + 1) * ny // (2 * dy), R - 1)
    col = tl.minimum((2 * x + 1) * nx // (2 * dx), C - 1)
    return row * C + col, R * C


@triton.jit
def _paint(mask_ptr, t, cell, cells, pal, colour, cov, ok):
    # Finer scales are painted after coarser ones, so the finest gazed cell wins the colour.
    hit = tl.load(mask_ptr + t * cells + cell, mask=ok, other=0) != 0
    return tl.where(hit, pal, colour), cov | hit


@triton.jit
def _render_kernel(
    frames_ptr,  # [T, H, W, 3] uint8 contiguous
    m0_ptr, m1_ptr, m2_ptr, m3_ptr,  # [T, R_s, C_s] uint8 0/1 contiguous per scale (unused: any pointer)
    geo_ptr,  # [NUM_SCALES, 6] int32: rows, cols, num_y, den_y, num_x, den_x
    pal_ptr,  # [NUM_SCALES, 3] int32 palette
    key_ptr,  # [T] int32: 1 where the frame is a keyframe (interframe)
    prev_ptr,  # [H, W, 3] uint8 contiguous: output before frame 0 (read when HAS_PREV)
    mask_out_ptr,  # [T, H, W, 3] uint8, strides (smo_t, smo_y, 3, 1)
    out_ptr,  # [T, H, W, 3] uint8, strides (so_t, so_y, 3, 1)
    copy_ptr,  # [T, H, W, 3] uint8, strides (sc_t, sc_y, 3, 1): a copy of the input (read when COPY_INPUT)
    part_ptr,  # [T, num_programs, 2] int64: squared error, covered pixels of this block
    T, W, n_bytes,  # frames, width, H*W*3
    smo_t, smo_y, so_t, so_y, sc_t, sc_y,  # output strides (frame, row) in bytes
    alpha,  # blend weight of the mask colour in 1/256ths
    BACKGROUND: tl.constexpr,  # mask-image value where no cell is gazed
    NUM_SCALES: tl.constexpr,  # 1..4
    INTERFRAME: tl.constexpr,  # 0: full-blend, 1: interframe
    HAS_PREV: tl.constexpr,  # prev_ptr holds the previous output
    COPY_INPUT: tl.constexpr,  # also copy the input to copy_ptr (the side-by-side's left pane)
    BLOCK: tl.constexpr,  # bytes per program
):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n_bytes
    pix = offs // 3
    ch = offs % 3
    y = pix // W
    x = pix % W
    # Per-scale cell index and palette value are the same for every frame: compute once.
    cell0, n0 = _cell(geo_ptr, 0, y, x)
    pal0 = tl.load(pal_ptr + ch, mask=ok, other=0)
    if NUM_SCALES > 1:
        cell1, n1 = _cell(geo_ptr, 1, y, x)
        pal1 = tl.load(pal_ptr + 3 + ch, mask=ok, other=0)
    if NUM_SCALES > 2:
        cell2, n2 = _cell(geo_ptr, 2, y, x)
        pal2 = tl.load(pal_ptr + 6 + ch, mask=ok, other=0)
    if NUM_SCALES > 3:
        cell3, n3 = _cell(geo_ptr, 3, y, x)
        pal3 = tl.load(pal_ptr + 9 + ch, mask=ok, other=0)
    # int64 running offsets: a clip of 1080p frames passes 2^31 bytes after ~350 frames
    f_off = offs.to(tl.int64)
    mo_off = (y * smo_y + x * 3 + ch).to(tl.int64)
    o_off = (y * so_y + x * 3 + ch).to(tl.int64)
    c_off = (y * sc_y + x * 3 + ch).to(tl.int64)
    if HAS_PREV:
        prev = tl.load(prev_ptr + offs, mask=ok, other=0).to(tl.int32)
    else:
        prev = tl.zeros((BLOCK,), dtype=tl.int32)
    for t in range(T):
        f = tl.load(frames_ptr + f_off, mask=ok, other=0).to(tl.int32)
        colour = tl.full((BLOCK,), BACKGROUND, tl.int32)
        cov = offs < 0  # all False
        colour, cov = _paint(m0_ptr, t, cell0, n0, pal0, colour, cov, ok)
        if NUM_SCALES > 1:
            colour, cov = _paint(m1_ptr, t, cell1, n1, pal1, colour, cov, ok)
        if NUM_SCALES > 2:
            colour, cov = _paint(m2_ptr, t, cell2, n2, pal2, colour, cov, ok)
        if NUM_SCALES > 3:
            colour, cov = _paint(m3_ptr, t, cell3, n3, pal3, colour, cov, ok)
        if INTERFRAME:
            key = tl.load(key_ptr + t) != 0
            out = tl.where(cov | key, f, prev)
            prev = out
        else:
            out = tl.where(cov, (f * (256 - alpha) + colour * alpha + 128) >> 8, f)
        tl.store(mask_out_ptr + mo_off, colour.to(tl.uint8), mask=ok)
        tl.store(out_ptr + o_off, out.to(tl.uint8), mask=ok)
        if COPY_INPUT:
            tl.store(copy_ptr + c_off, f.to(tl.uint8), mask=ok)
        f_off += n_bytes
        mo_off += smo_t
        o_off += so_t
        c_off += sc_t
        d = f - out
        sse = tl.sum(tl.where(ok, d * d, 0), axis=0)  # <= BLOCK * 255^2 < 2^31
        npix = tl.sum((ok & cov & (ch == 0)).to(tl.int32), axis=0)
        base = part_ptr + (t * tl.num_programs(0) + pid) * 2
        tl.store(base, sse.to(tl.int64))
        tl.store(base + 1, npix.to(tl.int64))


# --------------------------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------------------------
def _check_pane(x: torch.Tensor, name: str, shape: tuple, device: torch.device) -> None:
    if x.dtype != torch.uint8 or tuple(x.shape) != shape:
        raise ValueError(f"{name}: expected uint8 {list(shape)}, got {x.dtype} {list(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name}: expected device {device}, got {x.device}")
    if x.stride(3) != 1 or x.stride(2) != 3:
        raise ValueError(f"{name}: expected packed pixels (strides (.., .., 3, 1)), got {x.stride()}")


def render_frames(frames: torch.Tensor, masks: Sequence[torch.Tensor], geometry, settings, keyframe: torch.Tensor,
                  previous: torch.Tensor | None = None, mask_out: torch.Tensor | None = None,
                  output: torch.Tensor | None = None, input_copy: torch.Tensor | None = None):
    """One launch renders a clip. frames: uint8 [T, H, W, 3] contiguous; masks: per scale [T, R_s, C_s]
    bool/uint8 (1 to 4 scales, R_s x C_s = geometry.rows/cols); geometry: ``render.CellGeometry`` of H x W;
    settings: ``render.RenderSettings``; keyframe: bool [T]; previous: uint8 [H, W, 3] or None (then interframe
    needs keyframe[0]); mask_out / output / input_copy: uint8 [T, H, W, 3] with packed pixels, any frame and row
    strides (e.g. panes of a side-by-side buffer). Returns ``render.RenderedClip``.
    """
    from triton_autogaze.render import MASK_BACKGROUND, RenderedClip

    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [T, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    if not frames.is_contiguous():
        raise ValueError(f"frames: expected a contiguous tensor, got strides {frames.stride()}")
    T, H, W, _ = frames.shape
    dev = frames.device
    if (geometry.height, geometry.width) != (H, W):
        raise ValueError(f"geometry: built for {geometry.height}x{geometry.width}, frames are {H}x{W}")
    if not 1 <= len(masks) <= 4 or len(masks) != geometry.num_scales:
        raise ValueError(f"masks: expected {geometry.num_scales} scales (1 to 4), got {len(masks)}")
    mask_u8 = []
    for s, m in enumerate(masks):
        want = (T, geometry.rows[s], geometry.cols[s])
        if tuple(m.shape) != want:
            raise ValueError(f"masks[{s}]: expected {list(want)}, got {list(m.shape)}")
        if m.device != dev:
            raise ValueError(f"masks[{s}]: expected device {dev}, got {m.device}")
        mask_u8.append((m != 0).to(torch.uint8).contiguous())
    if keyframe.dim() != 1 or keyframe.shape[0] != T:
        raise ValueError(f"keyframe: expected [{T}], got {list(keyframe.shape)}")
    interframe = settings.visualization == "interframe"
    if previous is not None:
        if previous.dtype != torch.uint8 or tuple(previous.shape) != (H, W, 3) or previous.device != dev:
            raise ValueError(f"previous: expected uint8 [{H}, {W}, 3] on {dev}, got {previous.dtype} "
                             f"{list(previous.shape)} on {previous.device}")
        previous = previous.contiguous()
    elif interframe and T and not bool(keyframe[0]):
        raise ValueError("previous: interframe needs the previous output when frame 0 is not a keyframe")
    mask_out = torch.empty_like(frames) if mask_out is None else mask_out
    output = torch.empty_like(frames) if output is None else output
    _check_pane(mask_out, "mask_out", (T, H, W, 3), dev)
    _check_pane(output, "output", (T, H, W, 3), dev)
    if input_copy is not None:
        _check_pane(input_copy, "input_copy", (T, H, W, 3), dev)
    n_bytes = H * W * 3
    n_prog = triton.cdiv(n_bytes, BLOCK)
    parts = torch.zeros(T, n_prog, 2, dtype=torch.int64, device=dev)
    if T and n_bytes:
        pads = mask_u8 + [mask_u8[0]] * (4 - len(mask_u8))
        cp = input_copy if input_copy is not None else output
        _render_kernel[(n_prog,)](
            frames, *pads, geometry.table(dev), settings.palette_tensor(len(masks), dev).contiguous(),
            keyframe.to(dev, torch.int32).contiguous(), previous if previous is not None else frames,
            mask_out, output, cp, parts, T, W, n_bytes,
            mask_out.stride(0), mask_out.stride(1), output.stride(0), output.stride(1), cp.stride(0), cp.stride(1),
            settings.alpha256, BACKGROUND=MASK_BACKGROUND, NUM_SCALES=len(masks), INTERFRAME=int(interframe),
            HAS_PREV=previous is not None, COPY_INPUT=input_copy is not None, BLOCK=BLOCK, num_warps=4)
    sums = parts.sum(1)  # [T, 2]
    return RenderedClip(mask_out, output, sums[:, 1], sums[:, 0], keyframe.to(dev, torch.bool))


# --------------------------------------------------------------------------------------------------------------------
# Torch reference
# --------------------------------------------------------------------------------------------------------------------
def render_frames_ref(frames, masks, geometry, settings, keyframe, previous=None, mask_out=None, output=None,
                      input_copy=None):
    """The torch path, ``triton_autogaze.render.render_clip_torch`` (what CPU runs use), with the same arguments."""
    from triton_autogaze.render import render_clip_torch

    out = render_clip_torch(frames, masks, geometry, settings, keyframe, previous, mask_out, output)
    if input_copy is not None:
        input_copy.copy_(frames)
    return out
