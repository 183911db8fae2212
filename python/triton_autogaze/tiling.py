"""Inference modes and tiling: a source frame size + mode -> TileGrid; canvas pixels -> model-input tiles
[n, T, 3, 224, 224]; per-tile gaze masks [n, T, n_s] -> stitched full-frame grids [T, R_s, C_s];
stitched cells -> source-pixel rectangles.

Modes (SPEC §2, §10.2):
- ``resize-224``: the processor's shortest-edge resize, then the model's own bicubic squash to 224: one tile.
- ``anyres-tile-224``: Pillow-resize the source up to the smallest complete grid of 224 px tiles that does not
  shrink it (1920x1080 -> 2016x1120 = 9x5 tiles), each tile gazed on its own.
- ``tiled-full-resolution``: no resize; the bottom and right edges are padded with 0 in normalised space (the
  dataset mean colour, as upstream's res-adapt pads) up to the tile multiple. Stitched grids keep every cell
  that covers at least one source pixel; a cell straddling the edge keeps its row/column and its rectangle is
  clipped to the frame; cells lying wholly in the padding are cropped out of the stitched grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("resize-224", "anyres-tile-224", "tiled-full-resolution")
DEFAULT_MODE = "resize-224"
TILE = 224


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


@dataclass(frozen=True)
class TileGrid:
    """How one source frame size is cut into model inputs, and how gaze cells map back to source pixels.

    source_size: (H, W) source pixels. canvas_size: (H_c, W_c) pixels the model inputs are cut from (the
    processor output for resize-224, nh*224 x nw*224 for anyres, the source itself for full resolution).
    tiles: (nh, nw) tile rows and columns (1 x 1 for resize-224; tiles are row-major). grid_sizes: cells per
    tile side at each scale (2, 4, 7, 14).
    """

    mode: str
    source_size: tuple[int, int]
    canvas_size: tuple[int, int]
    tiles: tuple[int, int]
    tile_size: int
    grid_sizes: tuple[int, ...]

    @property
    def num_tiles(self) -> int:
        return self.tiles[0] * self.tiles[1]

    def tile_origin(self, tile: int) -> tuple[int, int]:
        """(tile row, tile column) of tile index ``tile`` (row-major)."""
        return divmod(tile, self.tiles[1])

    def stitched_shape(self, s: int) -> tuple[int, int]:
        """(rows, cols) of the full-frame grid of scale ``s`` after cropping the padding."""
        g = self.grid_sizes[s]
        nh, nw = self.tiles
        if self.mode != "tiled-full-resolution":
            return nh * g, nw * g
        H, W = self.source_size
        return -(-H * g // self.tile_size), -(-W * g // self.tile_size)  # cells that touch a source pixel

    def _edges(self, s: int, axis: int) -> list[float]:
        g = self.grid_sizes[s]
        n = self.tiles[axis] * g
        src = self.source_size[axis]
        if self.mode == "tiled-full-resolution":
            side = self.tile_size / g
            return [min(i * side, float(src)) for i in range(n + 1)]
        return [i * src / n for i in range(n + 1)]  # the canvas maps edge to edge onto the source

    def row_edges(self, s: int) -> list[float]:
        """Source-pixel y boundaries of the stitched rows of scale ``s``: rows + 1 floats (uncropped grid)."""
        return self._edges(s, 0)

    def col_edges(self, s: int) -> list[float]:
        """Source-pixel x boundaries of the stitched columns of scale ``s``: cols + 1 floats (uncropped grid)."""
        return self._edges(s, 1)

    def cell_rect(self, s: int, row: int, col: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in source pixels of stitched cell (row, col) of scale ``s``, clipped to the frame
        (zero area for a cell lying wholly in full-resolution padding)."""
        ys, xs = self.row_edges(s), self.col_edges(s)
        return xs[col], ys[row], xs[col + 1], ys[row + 1]

    def stitched_cell(self, tile: int, s: int, row: int, col: int) -> tuple[int, int]:
        """Tile-local cell (row, col) of scale ``s`` -> its (row, col) in the full-frame grid."""
        a, c = self.tile_origin(tile)
        g = self.grid_sizes[s]
        return a * g + row, c * g + col

    def to_dict(self) -> dict:
        return {"mode": self.mode, "source_size": list(self.source_size), "canvas_size": list(self.canvas_size),
                "tiles": list(self.tiles), "tile_size": self.tile_size, "grid_sizes": list(self.grid_sizes),
                "stitched_shapes": [list(self.stitched_shape(s)) for s in range(len(self.grid_sizes))]}


def plan_tiles(height: int, width: int, mode: str = DEFAULT_MODE, grid_sizes: Sequence[int] = (2, 4, 7, 14),
               shortest_edge: int | None = 224, tile_size: int = TILE) -> TileGrid:
    """Tile layout of a ``height`` x ``width`` source frame. ``shortest_edge``: the processor's resize target
    (None when the processor does not resize); only resize-224 uses it."""
    check_mode(mode)
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    H, W = int(height), int(width)
    if mode == "resize-224":
        if shortest_edge is None:
            canvas = (H, W)
        else:
            from .processing import output_size

            canvas = output_size(H, W, shortest_edge)
        return TileGrid(mode, (H, W), canvas, (1, 1), tile_size, tuple(grid_sizes))
    nh, nw = math.ceil(H / tile_size), math.ceil(W / tile_size)
    canvas = (nh * tile_size, nw * tile_size) if mode == "anyres-tile-224" else (H, W)
    return TileGrid(mode, (H, W), canvas, (nh, nw), tile_size, tuple(grid_sizes))


# ----- pixels -> model-input tiles ----------------------------------------------------------------------------------
def resize_packed(frames: torch.Tensor, out_height: int, out_width: int) -> torch.Tensor:
    """Pillow BILINEAR resize of uint8 [T, H, W, C>=3] on its device -> uint8 [T, out_height, out_width, 3].

    CPU: the C++ core (numpy reference without it); CUDA: the Triton kernel. Alpha is dropped, never
    premultiplied. Both are bit-exact with the processor (SPEC §2.1).
    """
    if frames.is_cuda:
        from triton_autogaze.kernels.rgba import rgba_resize

        return rgba_resize(frames, out_height, out_width)
    pixels = np.ascontiguousarray(frames.numpy())
    try:
        from . import _rgba

        out = _rgba.resize(pixels, int(out_height), int(out_width))
    except ImportError:
        from .processing import resize_bilinear_reference

        out = resize_bilinear_reference(pixels, int(out_height), int(out_width))
    return torch.from_numpy(np.ascontiguousarray(out))


def affine_lut(config=None) -> torch.Tensor:
    """The processor's rescale/offset/normalise (SPEC §2.1 steps 3-4) of every uint8 value: [3, 256] fp32.

    Built by running the numpy reference on the 256 values, so ``lut[c, u]`` is that path's output bit for bit.
    """
    from dataclasses import replace

    from .config import PreprocessorConfig
    from .processing import preprocess_reference

    cfg = replace(config or PreprocessorConfig(), do_resize=False)
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[None, None, :, None], 3, axis=3)  # [1, 1, 256, 3]
    return torch.from_numpy(preprocess_reference(ramp, cfg)[0, :, 0, :].copy())  # [3, 256]


def apply_lut(pixels: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, C>=3] -> fp32 [..., 3, H, W] through the [3, 256] affine table (exact, any device)."""
    lut = lut.to(pixels.device)
    idx = pixels[..., :3].long() + torch.arange(3, device=pixels.device) * 256  # channel c reads row c
    return lut.reshape(-1)[idx].movedim(-1, -3).contiguous()


def resize_canvas_float(video: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """Normalised fp32 [T, 3, H, W] -> [T, 3, H_c, W_c] for anyres (identity when the size already fits).

    Float input has no uint8 to round, so this is torch's antialiased bilinear (Pillow's triangle filter without
    the fixed point); packed uint8 input goes through the exact Pillow path instead.
    """
    if grid.mode != "anyres-tile-224" or tuple(video.shape[-2:]) == grid.canvas_size:
        return video
    return F.interpolate(video, size=grid.canvas_size, mode="bilinear", align_corners=False, antialias=True)


def cut_tiles(canvas: torch.Tensor, grid: TileGrid, tiles: range, lut: torch.Tensor | None = None) -> torch.Tensor:
    """Model inputs of ``tiles`` (indices, row-major) of one clip: [len(tiles), T, 3, h, w] fp32.

    canvas: fp32 [T, 3, H_c, W_c] normalised, or uint8 [T, H_c, W_c, C] with ``lut`` from :func:`affine_lut`
    (only the tiles asked for are converted, so float memory stays at ``len(tiles)`` tiles).
    resize-224 has one tile, the whole canvas (the model squashes it to 224); other modes give 224 x 224 tiles,
    zero-padded (normalised space) past the canvas.
    """
    packed = canvas.dtype == torch.uint8
    if packed and lut is None:
        raise ValueError("cut_tiles: a uint8 canvas needs the affine lut")
    if grid.mode == "resize-224":
        return (apply_lut(canvas, lut) if packed else canvas)[None]
    ts = grid.tile_size
    out = []
    for tile in tiles:
        a, c = grid.tile_origin(tile)
        if packed:
            px = apply_lut(canvas[:, a * ts:(a + 1) * ts, c * ts:(c + 1) * ts], lut)  # [T, 3, <=ts, <=ts]
        else:
            px = canvas[:, :, a * ts:(a + 1) * ts, c * ts:(c + 1) * ts]
        ph, pw = ts - px.shape[-2], ts - px.shape[-1]
        out.append(F.pad(px, (0, pw, 0, ph)) if ph or pw else px)
    return torch.stack(out)


# ----- per-tile masks -> full-frame grids ---------------------------------------------------------------------------
def stitch_masks(tile_masks: Sequence[torch.Tensor], grid: TileGrid) -> tuple[torch.Tensor, ...]:
    """Per scale [num_tiles, T, g*g] (0/1, tiles row-major) -> per scale [T, R_s, C_s] bool on the same device.

    Tile (a, c) fills rows a*g.. and columns c*g.., row-major inside the tile; full resolution then crops the
    cells that lie wholly in the padding (see the module docstring).
    """
    nh, nw = grid.tiles
    out = []
    for s, m in enumerate(tile_masks):
        g = grid.grid_sizes[s]
        if m.dim() != 3 or m.shape[0] != nh * nw or m.shape[2] != g * g:
            raise ValueError(f"tile_masks[{s}]: expected [{nh * nw}, T, {g * g}], got {tuple(m.shape)}")
        T = m.shape[1]
        full = m.reshape(nh, nw, T, g, g).permute(2, 0, 3, 1, 4).reshape(T, nh * g, nw * g)  # [T, rows, cols]
        R, C = grid.stitched_shape(s)
        out.append((full[:, :R, :C] > 0).contiguous())
    return tuple(out)
