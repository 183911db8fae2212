"""Sparse tokens for downstream models: a pipeline GazeTrace -> source-pixel masks, the gazed multi-scale patches
(or feature tokens) with positions, and density-ranked image-pyramid tokens. Everything stays on the device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import torch
import torch.nn.functional as F

from .trace import GazeTrace


def _edge_index(edges: Sequence[float], n_out: int, src: int, device: torch.device) -> torch.Tensor:
    """For each of ``n_out`` output pixels, the cell whose source span holds the pixel's centre: [n_out] int64."""
    e = torch.tensor(edges, dtype=torch.float64, device=device)
    centre = (torch.arange(n_out, dtype=torch.float64, device=device) + 0.5) * (src / n_out)
    return (torch.searchsorted(e, centre, right=True) - 1).clamp_(0, len(edges) - 2)


def fixation_image_mask(trace: GazeTrace, t: int, height: int | None = None, width: int | None = None,
                        scales: Sequence[int] | None = None) -> torch.Tensor:
    """Pixels of frame ``t`` (trace-local) covered by a gazed cell at any of ``scales`` (default all): [H, W] bool
    on the trace's device. height/width default to the source size; another size rescales the source frame.
    A pixel belongs to the cell that holds its centre."""
    if trace.scale_masks is None or trace.tiling is None:
        raise ValueError("fixation_image_mask needs a pipeline trace (scale_masks and tiling)")
    if not 0 <= t < trace.num_frames:
        raise IndexError(f"frame {t} is outside the trace's {trace.num_frames} frames")
    grid = trace.tiling
    H_src, W_src = grid.source_size
    H, W = height or H_src, width or W_src
    if H < 1 or W < 1:
        raise ValueError(f"height, width must be >= 1, got ({H}, {W})")
    dev = trace.scale_masks[0].device
    mask = torch.zeros(H, W, dtype=torch.bool, device=dev)
    for s in (range(len(trace.scale_masks)) if scales is None else scales):
        grid_mask = trace.scale_masks[s][t]  # [R_s, C_s]
        rows = _edge_index(grid.row_edges(s)[:grid_mask.shape[0] + 1], H, H_src, dev)
        cols = _edge_index(grid.col_edges(s)[:grid_mask.shape[1] + 1], W, W_src, dev)
        mask |= grid_mask[rows][:, cols]
    return mask


def apply_image_mask(image: torch.Tensor, mask: torch.Tensor, fill: float | int = 0) -> torch.Tensor:
    """Keep the masked pixels, set the rest to ``fill``. image: [..., C, H, W] or packed [..., H, W, C] (told
    apart by where the mask's [H, W] sits); mask: [H, W] bool. Returns the image's shape and dtype."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be [H, W] bool, got {tuple(mask.shape)} {mask.dtype}")
    mask = mask.to(image.device)
    if tuple(image.shape[-2:]) == tuple(mask.shape):
        m = mask
    elif image.dim() >= 3 and tuple(image.shape[-3:-1]) == tuple(mask.shape):
        m = mask[..., None]
    else:
        raise ValueError(f"image {tuple(image.shape)} has no [H, W] = {tuple(mask.shape)} plane")
    return torch.where(m, image, torch.as_tensor(fill, dtype=image.dtype, device=image.device))


@dataclass(frozen=True)
class GazedPatches:
    """The gazed cells of a trace, padded slots excluded, sequence-major then generation order.

    values: [P, C, p, p] pixels of each cell (its patch of the frame resized to g*p square) or [P, D] feature
    tokens; sequence, frame, scale_index, row, col, token_id: [P] int64 (row/col in the tile's g x g grid, frame
    trace-local); cu_seqlens: [R + 1] int32 per trace row; rects: [P, 4] fp32 source-pixel (x0, y0, x1, y1) for
    pipeline traces (zero area for cells wholly in full-resolution padding), else None.
    """

    values: torch.Tensor
    sequence: torch.Tensor
    frame: torch.Tensor
    scale_index: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    token_id: torch.Tensor
    cu_seqlens: torch.Tensor
    rects: torch.Tensor | None


def _slot_frames(trace: GazeTrace) -> torch.Tensor:
    lengths = trace.num_gazing_each_frame.to(trace.gazing_pos.device)
    frames = torch.arange(trace.num_frames, device=lengths.device).repeat_interleave(lengths)  # [N]
    return frames.expand(trace.batch_size, -1)


def scale_patches(video: torch.Tensor, grid_sizes: Sequence[int], patch_size: int) -> torch.Tensor:
    """[R, T, C, h, w] -> every cell's patch in id order: [R, T, NV, C, p, p]. Scale s resizes the frame to
    (g_s * p)^2 with the model's bicubic (align_corners False; an exact identity at the input size)."""
    R, T, C = video.shape[:3]
    flat = video.reshape(R * T, C, *video.shape[-2:])
    out = []
    for g in grid_sizes:
        side = g * patch_size
        img = flat if tuple(flat.shape[-2:]) == (side, side) else F.interpolate(
            flat, size=(side, side), mode="bicubic", align_corners=False)
        cells = img.reshape(R * T, C, g, patch_size, g, patch_size).permute(0, 2, 4, 1, 3, 5)  # [RT, g, g, C, p, p]
        out.append(cells.reshape(R * T, g * g, C, patch_size, patch_size))
    return torch.cat(out, 1).reshape(R, T, -1, C, patch_size, patch_size)


def gather_gazed_patches(video: torch.Tensor, trace: GazeTrace, patch_size: int = 16,
                         features: torch.Tensor | None = None) -> GazedPatches:
    """The gazed patches of every scale, ready for a ViT that encodes only those (as upstream's SigLIP reads
    gazing_pos: cell (r, c) of scale s is the p x p patch at (r, c) of the frame resized to g_s*p square).

    video: the trace's per-row model inputs [R, T, C, h, w] (R = trace rows: tiles for pipeline traces, e.g.
    ``GazePacket.model_inputs()``), or [T, C, h, w] when R = 1. features: optional [R, T, NV, D] tokens in
    id order; when given they are gathered instead of pixels (video may then be None).
    Syncs with the host to size the output (boolean selection).
    """
    R, T = trace.batch_size, trace.num_frames
    if features is not None:
        if features.dim() != 4 or tuple(features.shape[:3]) != (R, T, trace.num_vision_tokens):
            raise ValueError(f"features must be [R={R}, T={T}, NV={trace.num_vision_tokens}, D], "
                             f"got {tuple(features.shape)}")
        table = features
    else:
        if video.dim() == 4:
            video = video[None]
        if video.dim() != 5 or tuple(video.shape[:2]) != (R, T):
            raise ValueError(f"video must be the trace's model inputs [R={R}, T={T}, C, h, w], got "
                             f"{tuple(video.shape)}")
        table = scale_patches(video, trace.grid_sizes, patch_size)
    dev = trace.gazing_pos.device
    frame = _slot_frames(trace)
    local = trace.gazing_pos - frame * trace.num_vision_tokens  # [R, N] frame-local ids
    keep = ~trace.if_padded_gazing
    seq = torch.arange(R, device=dev)[:, None].expand_as(local)
    sel_seq, sel_frame, sel_id = seq[keep], frame[keep], local[keep]
    offsets = torch.tensor(trace.scale_offsets, device=dev)
    sides = torch.tensor(trace.grid_sizes, device=dev)
    scale = torch.searchsorted(offsets, sel_id, right=True) - 1
    cell = sel_id - offsets[scale]
    row, col = cell // sides[scale], cell % sides[scale]
    cu = torch.zeros(R + 1, dtype=torch.int32, device=dev)
    cu[1:] = keep.sum(1).cumsum(0)
    rects = None if trace.tiling is None else _rects(trace, sel_seq, scale, row, col)
    return GazedPatches(table.to(dev)[sel_seq, sel_frame, sel_id], sel_seq, sel_frame, scale, row, col, sel_id, cu,
                        rects)


def _rects(trace: GazeTrace, seq: torch.Tensor, scale: torch.Tensor, row: torch.Tensor,
           col: torch.Tensor) -> torch.Tensor:
    grid = trace.tiling
    dev = seq.device
    S = len(trace.grid_sizes)
    ys = [grid.row_edges(s) for s in range(S)]
    xs = [grid.col_edges(s) for s in range(S)]
    width = max(len(e) for e in ys + xs)
    # per-scale edge tables padded with their last edge, so any index past a scale's grid gives a zero-area rect
    Ey = torch.tensor([e + [e[-1]] * (width - len(e)) for e in ys], dtype=torch.float32, device=dev)
    Ex = torch.tensor([e + [e[-1]] * (width - len(e)) for e in xs], dtype=torch.float32, device=dev)
    sides = torch.tensor(grid.grid_sizes, device=dev)
    R = seq // grid.tiles[1] * sides[scale] + row
    C = seq % grid.tiles[1] * sides[scale] + col
    return torch.stack([Ex[scale, C], Ey[scale, R], Ex[scale, C + 1], Ey[scale, R + 1]], dim=1)


@dataclass(frozen=True)
class PyramidTokens:
    """Patch tokens of an image pyramid with the share of each token's source pixels under a mask.

    tokens: [N, C*p*p] fp32 flattened patches (level by level, row-major); density: [N] fp32 in [0, 1];
    level, row, col: [N] int64; rects: [N, 4] fp32 source-pixel (x0, y0, x1, y1), clipped to the image.
    factors: downsampling factor of each level; patch_size: p.
    """

    tokens: torch.Tensor
    density: torch.Tensor
    level: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    rects: torch.Tensor
    factors: tuple[int, ...]
    patch_size: int

    def select(self, index: torch.Tensor) -> "PyramidTokens":
        """The tokens at ``index`` ([k] int64 on the device), in that order."""
        per_token = {f.name: getattr(self, f.name)[index] for f in fields(self)
                     if f.name not in ("factors", "patch_size")}
        return PyramidTokens(**per_token, factors=self.factors, patch_size=self.patch_size)


def _levels(levels: int | Sequence[int]) -> tuple[int, ...]:
    factors = tuple(2 ** i for i in range(levels)) if isinstance(levels, int) else tuple(int(f) for f in levels)
    if not factors or any(f < 1 for f in factors):
        raise ValueError(f"levels must be a count >= 1 or positive downsampling factors, got {levels!r}")
    return factors


def tokenize_masked_image_pyramid(image: torch.Tensor, mask: torch.Tensor, levels: int | Sequence[int] = 3,
                                  patch_size: int = 16) -> PyramidTokens:
    """image: [C, H, W] (any dtype; packed [H, W, C] uint8 is accepted too), mask: [H, W] bool.

    Level with factor f box-filters the image by f and cuts p x p tokens, each covering p*f source pixels a
    side; the image is zero-padded on the bottom/right to whole tokens and padding counts as unmasked.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [H, W], got {tuple(mask.shape)}")
    hw = tuple(mask.shape)
    if image.dim() == 3 and tuple(image.shape[:2]) == hw and tuple(image.shape[1:]) != hw:
        image = image.permute(2, 0, 1)  # packed [H, W, C] -> [C, H, W]
    if image.dim() != 3 or tuple(image.shape[1:]) != tuple(mask.shape):
        raise ValueError(f"image must be [C, H, W] matching mask {tuple(mask.shape)}, got {tuple(image.shape)}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    C, H, W = image.shape
    img = image.float()[None]
    m = mask.to(image.device).float()[None, None]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("tokens", "density", "level", "row", "col", "rects")}
    factors = _levels(levels)
    for li, f in enumerate(factors):
        span = patch_size * f
        nr, nc = -(-H // span), -(-W // span)
        pad = (0, nc * span - W, 0, nr * span - H)
        lvl = F.avg_pool2d(F.pad(img, pad), f) if f > 1 else F.pad(img, pad)  # [1, C, nr*p, nc*p]
        tok = lvl.reshape(C, nr, patch_size, nc, patch_size).permute(1, 3, 0, 2, 4).reshape(nr * nc, -1)
        dens = F.avg_pool2d(F.pad(m, pad), span).reshape(-1)
        r = torch.arange(nr, device=img.device).repeat_interleave(nc)
        c = torch.arange(nc, device=img.device).repeat(nr)
        rect = torch.stack([c * span, r * span, ((c + 1) * span).clamp(max=W), ((r + 1) * span).clamp(max=H)], 1)
        for k, v in zip(parts, (tok, dens, torch.full_like(r, li), r, c, rect.float())):
            parts[k].append(v)
    return PyramidTokens(**{k: torch.cat(v) for k, v in parts.items()}, factors=factors, patch_size=patch_size)


def sparsify_image_pyramid_tokens(tokens: PyramidTokens, k: int) -> PyramidTokens:
    """The ``k`` tokens of highest mask density (all of them when k >= N), densest first, ties to the earlier
    token (finer level, then row-major). Runs on the device: one stable sort, no host sync."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be an int >= 0, got {k!r}")
    order = torch.sort(tokens.density, descending=True, stable=True).indices[:k]
    return tokens.select(order)
