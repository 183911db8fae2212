"""Rendering: a clip's frames uint8 [T, H, W, 3] + its gaze (per-scale cell grids) -> mask image, full-blend or
interframe output, and the per-frame sums the metrics need. Triton on CUDA, the torch functions here elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .trace import GazeTrace

VISUALIZATIONS = ("full-blend", "interframe")
# One colour per scale, coarsest first (Okabe-Ito, readable with colour-blindness): 2x2 blue, 4x4 bluish green,
# 7x7 yellow, 14x14 vermillion. Finer cells are drawn on top of coarser ones.
PALETTE: tuple[tuple[int, int, int], ...] = ((0, 114, 178), (0, 158, 115), (240, 228, 66), (213, 94, 0))
MASK_BACKGROUND = 0  # value of every channel of mask-image pixels no cell covers
BLEND_ALPHA = 0.55
KEYFRAME_DURATION = 12


@dataclass(frozen=True)
class RenderSettings:
    """visualization: "full-blend" (frame + mask blended at blend_alpha) or "interframe" (keep the previous
    output outside the mask, a full keyframe every keyframe_duration frames); palette: RGB per scale, coarsest
    first (scales past its length reuse the last colour)."""

    visualization: str = "full-blend"
    blend_alpha: float = BLEND_ALPHA
    keyframe_duration: int = KEYFRAME_DURATION
    palette: tuple[tuple[int, int, int], ...] = PALETTE

    def __post_init__(self):
        if self.visualization not in VISUALIZATIONS:
            raise ValueError(f"visualization must be one of {VISUALIZATIONS}, got {self.visualization!r}")
        if not 0.0 <= self.blend_alpha <= 1.0:  # also rejects NaN
            raise ValueError(f"blend_alpha must be in [0, 1], got {self.blend_alpha}")
        k = self.keyframe_duration
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"keyframe_duration must be an int >= 1, got {k!r}")
        if not self.palette or any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise ValueError(f"palette must be RGB triples of 0..255, got {self.palette!r}")

    @property
    def alpha256(self) -> int:
        """blend_alpha in 1/256ths: the blend is integer arithmetic so Triton and torch agree bit for bit."""
        return int(round(self.blend_alpha * 256))

    def palette_tensor(self, num_scales: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[num_scales, 3] int32."""
        cols = [self.palette[min(s, len(self.palette) - 1)] for s in range(num_scales)]
        return torch.tensor(cols, dtype=torch.int32, device=device)


@dataclass(frozen=True)
class CellGeometry:
    """Which stitched cell holds each pixel of an H x W frame, per scale: the cell holding the pixel's centre,
    row = min((2y + 1) * num_y // (2 * den_y), rows - 1) (integer, so every backend picks the same cell; the
    same rule as ``sparse.fixation_image_mask``), col likewise with x."""

    height: int
    width: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    num_y: tuple[int, ...]
    den_y: tuple[int, ...]
    num_x: tuple[int, ...]
    den_x: tuple[int, ...]

    @property
    def num_scales(self) -> int:
        return len(self.rows)

    def table(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[num_scales, 6] int32: rows, cols, num_y, den_y, num_x, den_x (the kernel's geometry argument)."""
        return torch.tensor(list(zip(self.rows, self.cols, self.num_y, self.den_y, self.num_x, self.den_x)),
                            dtype=torch.int32, device=device)

    def row_index(self, s: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[H] int64 stitched row of each pixel row at scale s."""
        y = torch.arange(self.height, device=device, dtype=torch.int64)
        return ((2 * y + 1) * self.num_y[s] // (2 * self.den_y[s])).clamp_(max=self.rows[s] - 1)

    def col_index(self, s: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """[W] int64 stitched column of each pixel column at scale s."""
        x = torch.arange(self.width, device=device, dtype=torch.int64)
        return ((2 * x + 1) * self.num_x[s] // (2 * self.den_x[s])).clamp_(max=self.cols[s] - 1)


def _ratio(num: int, den: int) -> tuple[int, int]:
    g = math.gcd(num, den)
    return num // g, den // g


def cell_geometry(trace: GazeTrace, height: int, width: int) -> CellGeometry:
    """Pixel -> cell mapping of ``trace``'s grids on frames of height x width (normally the source size).

    Pipeline traces: the stitched grids of trace.tiling (resize-224 and anyres grids span the frame edge to edge;
    tiled-full-resolution cells are tile_size / g source pixels, the last row/column clipped). Plain model
    traces: g x g cells spanning the frame.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height, width must be >= 1, got ({height}, {width})")
    grid = trace.tiling
    rows, cols, ny, dy, nx, dx = [], [], [], [], [], []
    for s, g in enumerate(trace.grid_sizes):
        if grid is None:
            R, C, a, b = g, g, _ratio(g, height), _ratio(g, width)
        else:
            R, C = grid.stitched_shape(s)
            H_src, W_src = grid.source_size
            if grid.mode == "tiled-full-resolution":  # cell side tile_size / g source px; frame px -> source px
                a, b = _ratio(H_src * g, height * grid.tile_size), _ratio(W_src * g, width * grid.tile_size)
            else:
                a, b = _ratio(grid.tiles[0] * g, height), _ratio(grid.tiles[1] * g, width)
        rows.append(R), cols.append(C), ny.append(a[0]), dy.append(a[1]), nx.append(b[0]), dx.append(b[1])
    return CellGeometry(int(height), int(width), *map(tuple, (rows, cols, ny, dy, nx, dx)))


def scale_grids(trace: GazeTrace, b: int = 0) -> list[torch.Tensor]:
    """Per scale [T, R_s, C_s] bool on the trace's device: ``scale_masks`` when the trace has them (pipeline
    traces, stitched over tiles), else batch row b's ``gazing_mask`` reshaped to [T, g, g]."""
    if trace.scale_masks is not None:
        return [m.bool() for m in trace.scale_masks]
    return [m[b].reshape(m.shape[1], g, g) > 0 for m, g in zip(trace.gazing_mask, trace.grid_sizes)]


@dataclass(frozen=True)
class RenderedClip:
    """mask, output: uint8 [T, H, W, 3] (views into the side-by-side buffer when one was given);
    covered: int64 [T] pixels under the mask; sse: int64 [T] sum of squared input - output differences over
    the H*W*3 values; keyframe: bool [T]."""

    mask: torch.Tensor
    output: torch.Tensor
    covered: torch.Tensor
    sse: torch.Tensor
    keyframe: torch.Tensor


def check_frames(frames: torch.Tensor, name: str = "frames") -> None:
    if not torch.is_tensor(frames) or frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 [T, H, W, 3], got "
                         f"{getattr(frames, 'dtype', type(frames).__name__)} {tuple(getattr(frames, 'shape', ()))}")


def render_clip_torch(frames: torch.Tensor, masks: Sequence[torch.Tensor], geometry: CellGeometry,
                      settings: RenderSettings, keyframe: torch.Tensor, previous: torch.Tensor | None = None,
                      mask_out: torch.Tensor | None = None, output: torch.Tensor | None = None,
                      input_copy: torch.Tensor | None = None) -> RenderedClip:
    """The torch path (and the Triton kernel's reference). frames: uint8 [T, H, W, 3]; masks: per scale
    [T, R_s, C_s] bool/0-1; keyframe: bool [T]; previous: uint8 [H, W, 3], the output before frame 0 (needed
    by interframe unless frame 0 is a keyframe); mask_out/output/input_copy: optional uint8 [T, H, W, 3] to
    write the mask image, the output and a copy of the input into (e.g. panes of a side-by-side buffer).
    Works frame by frame, so memory stays at a few frames whatever T."""
    check_frames(frames)
    T, H, W, _ = frames.shape
    dev = frames.device
    mask_out = torch.empty_like(frames) if mask_out is None else mask_out
    output = torch.empty_like(frames) if output is None else output
    pal = settings.palette_tensor(len(masks), dev)
    rows = [geometry.row_index(s, dev) for s in range(len(masks))]
    cols = [geometry.col_index(s, dev) for s in range(len(masks))]
    a = settings.alpha256
    covered = torch.zeros(T, dtype=torch.int64, device=dev)
    sse = torch.zeros(T, dtype=torch.int64, device=dev)
    prev = None if previous is None else previous.to(torch.int32)
    for t in range(T):
        f = frames[t].to(torch.int32)  # [H, W, 3]
        colour = torch.full_like(f, MASK_BACKGROUND)
        cov = torch.zeros(H, W, dtype=torch.bool, device=dev)
        for s, m in enumerate(masks):  # coarse to fine: finer cells paint over coarser ones
            hit = (m[t] != 0)[rows[s]][:, cols[s]]  # [H, W] nearest cell lookup
            colour = torch.where(hit[..., None], pal[s], colour)
            cov |= hit
        if settings.visualization == "full-blend":
            out = torch.where(cov[..., None], (f * (256 - a) + colour * a + 128) >> 8, f)
        elif bool(keyframe[t]):
            out = f
        else:
            if prev is None:
                raise ValueError("previous: interframe needs the previous output when frame 0 is not a keyframe")
            out = torch.where(cov[..., None], f, prev)
        prev = out
        mask_out[t] = colour.to(torch.uint8)
        output[t] = out.to(torch.uint8)
        covered[t] = cov.sum()
        sse[t] = ((f - out) ** 2).sum(dtype=torch.int64)
    if input_copy is not None:
        input_copy.copy_(frames)
    return RenderedClip(mask_out, output, covered, sse, keyframe.to(dev, torch.bool))


def render_clip(frames: torch.Tensor, masks: Sequence[torch.Tensor], geometry: CellGeometry,
                settings: RenderSettings, keyframe: torch.Tensor, previous: torch.Tensor | None = None,
                mask_out: torch.Tensor | None = None, output: torch.Tensor | None = None,
                input_copy: torch.Tensor | None = None, backend: str = "auto") -> RenderedClip:
    """Render one clip (arguments as :func:`render_clip_torch`). backend: "auto" (Triton on CUDA tensors,
    torch otherwise), "torch" or "triton"."""
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be auto, torch or triton, got {backend!r}")
    if backend == "triton" or (backend == "auto" and frames.is_cuda):
        from triton_autogaze.kernels.render import render_frames

        return render_frames(frames.contiguous(), masks, geometry, settings, keyframe, previous, mask_out, output,
                             input_copy)
    return render_clip_torch(frames, masks, geometry, settings, keyframe, previous, mask_out, output, input_copy)


def side_by_side_buffer(T: int, H: int, W: int, device: torch.device | str) -> torch.Tensor:
    """uint8 [T, H, 3W, 3] for input | mask | output; render into its views :func:`panes` returns."""
    return torch.empty(T, H, 3 * W, 3, dtype=torch.uint8, device=device)


def panes(buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views (input, mask, output) [T, H, W, 3] of a side-by-side buffer [T, H, 3W, 3]."""
    W = buffer.shape[2] // 3
    return buffer[:, :, :W], buffer[:, :, W:2 * W], buffer[:, :, 2 * W:]


class Renderer:
    """Renders consecutive clips of one video: keeps the frame count (keyframes fall on absolute frame indices
    0, K, 2K, ...) and, for interframe, the last output frame across clips."""

    def __init__(self, settings: RenderSettings | None = None, backend: str = "auto"):
        self.settings = settings or RenderSettings()
        self.backend = backend
        self.frames_seen = 0
        self._previous: torch.Tensor | None = None  # uint8 [H, W, 3]

    def keyframes(self, T: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """bool [T]: which of the next T frames are keyframes (every frame in full-blend)."""
        t = torch.arange(self.frames_seen, self.frames_seen + T, device=device)
        if self.settings.visualization == "full-blend":
            return torch.ones(T, dtype=torch.bool, device=device)
        return t % self.settings.keyframe_duration == 0

    def render(self, frames: torch.Tensor, trace: GazeTrace, side_by_side: torch.Tensor | None = None,
               b: int = 0) -> RenderedClip:
        """frames: uint8 [T, H, W, 3] on the render device; trace: that clip's gaze (masks are moved to the
        frames' device). side_by_side: optional uint8 [T, H, 3W, 3] from :func:`side_by_side_buffer`; the
        input is copied into its left pane and mask/output rendered into the others."""
        check_frames(frames)
        T, H, W, _ = frames.shape
        if trace.num_frames != T:
            raise ValueError(f"trace has {trace.num_frames} frames but frames has {T}")
        masks = [m.to(frames.device) for m in scale_grids(trace, b)]
        geometry = cell_geometry(trace, H, W)
        inp = mask_out = output = None
        if side_by_side is not None:
            if tuple(side_by_side.shape) != (T, H, 3 * W, 3) or side_by_side.dtype != torch.uint8:
                raise ValueError(f"side_by_side: expected uint8 [{T}, {H}, {3 * W}, 3], got "
                                 f"{side_by_side.dtype} {tuple(side_by_side.shape)}")
            inp, mask_out, output = panes(side_by_side)
        if self._previous is not None and tuple(self._previous.shape) != (H, W, 3):
            self._previous = None  # a new frame size restarts the stream; its frame 0 is forced to a keyframe
        key = self.keyframes(T, frames.device)
        if self._previous is None:
            key[0] = True
        out = render_clip(frames, masks, geometry, self.settings, key, self._previous, mask_out, output, inp,
                          self.backend)
        self._previous = out.output[-1].clone()
        self.frames_seen += T
        return out
