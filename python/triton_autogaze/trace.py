"""GazeTrace: the typed result of generation. Raw upstream-layout tensors in, decoded fixations out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Fixation:
    """One gazed cell. ``rect`` is (x0, y0, x1, y1) normalised to [0, 1] of the model input frame."""

    frame: int
    token_id: int  # frame-local id in 0..NV-1
    scale_index: int  # 0 = coarsest
    grid_size: int  # cells per side at this scale (2, 4, 7, 14)
    row: int
    col: int
    rect: tuple[float, float, float, float]
    confidence: float  # softmax probability of this id among the ids still allowed when it was chosen

    def to_dict(self) -> dict:
        return {"frame": self.frame, "token_id": self.token_id, "scale_index": self.scale_index,
                "grid_size": self.grid_size, "row": self.row, "col": self.col,
                "rect": list(self.rect), "confidence": self.confidence}


@dataclass(frozen=True)
class SourceFixation:
    """One gazed cell mapped back to the source frame (pipeline traces).

    ``rect`` is (x0, y0, x1, y1) in source-frame pixels (floats; cells straddling a full-resolution crop are
    clipped to the frame). ``row``/``col`` index the stitched full-frame grid of the scale; ``token_id`` is the
    frame-local id inside ``tile`` (row-major tile index); ``frame`` is absolute (trace start_frame + t).
    """

    frame: int
    tile: int
    token_id: int
    scale_index: int
    grid_size: int  # cells per tile side at this scale
    row: int
    col: int
    rect: tuple[float, float, float, float]
    confidence: float  # NaN where the producing call does not report it

    def to_dict(self) -> dict:
        return {"frame": self.frame, "tile": self.tile, "token_id": self.token_id, "scale_index": self.scale_index,
                "grid_size": self.grid_size, "row": self.row, "col": self.col, "rect": list(self.rect),
                "confidence": self.confidence}


@dataclass(frozen=True)
class GazeTrace:
    """Gaze of a batch of clips, in upstream's layout.

    gazing_pos: [B, N] int64, ids + NV*t (pads hold NV*(t+1)); if_padded_gazing: [B, N] bool;
    num_gazing_each_frame: [T] int64; gazing_mask: per scale [B, T, n_s] fp32; confidence: [B, N] fp32
    (0 at pads). grid_sizes / scale_offsets describe the per-frame vocabulary of NV ids.

    Pipeline traces (one clip, rows = tiles row-major) also carry scale_masks: per scale [T, R_s, C_s] bool,
    the tiles' masks stitched into the full frame; tiling: the ``tiling.TileGrid`` mapping cells to source
    pixels; start_frame: index of frame 0 in the video.
    """

    gazing_pos: torch.Tensor
    if_padded_gazing: torch.Tensor
    num_gazing_each_frame: torch.Tensor
    gazing_mask: list[torch.Tensor]
    confidence: torch.Tensor
    grid_sizes: tuple[int, ...]
    scale_offsets: tuple[int, ...]
    num_vision_tokens: int
    task_loss_requirement: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    scale_masks: tuple[torch.Tensor, ...] | None = None
    tiling: Any = None
    start_frame: int = 0

    @property
    def mode(self) -> str | None:
        """The pipeline inference mode, or None for a plain model trace."""
        return None if self.tiling is None else self.tiling.mode

    @property
    def batch_size(self) -> int:
        return self.gazing_pos.shape[0]

    @property
    def num_frames(self) -> int:
        return self.num_gazing_each_frame.shape[0]

    def frame_slices(self) -> list[slice]:
        out, start = [], 0
        for L in self.num_gazing_each_frame.tolist():
            out.append(slice(start, start + L))
            start += L
        return out

    def decode_id(self, frame_local_id: int) -> tuple[int, int, int, int]:
        """frame-local id -> (scale_index, grid_size, row, col)."""
        for s in reversed(range(len(self.scale_offsets))):
            if frame_local_id >= self.scale_offsets[s]:
                g = self.grid_sizes[s]
                r, c = divmod(frame_local_id - self.scale_offsets[s], g)
                if r >= g:
                    break
                return s, g, r, c
        raise ValueError(f"id {frame_local_id} is outside the per-frame vocabulary of {self.num_vision_tokens}")

    def fixations(self, b: int = 0) -> list[list[Fixation]]:
        """Per frame, the non-padded fixations of batch row ``b`` in generation order."""
        pos = self.gazing_pos[b].tolist()
        pad = self.if_padded_gazing[b].tolist()
        conf = self.confidence[b].tolist()
        out: list[list[Fixation]] = []
        for t, sl in enumerate(self.frame_slices()):
            fr = []
            for j in range(sl.start, sl.stop):
                if pad[j]:
                    continue
                tid = pos[j] - self.num_vision_tokens * t
                s, g, r, c = self.decode_id(tid)
                fr.append(Fixation(t, tid, s, g, r, c, (c / g, r / g, (c + 1) / g, (r + 1) / g), conf[j]))
            out.append(fr)
        return out

    def source_fixations(self) -> list[list[SourceFixation]]:
        """Per frame, every non-padded fixation of every tile (tiles row-major, then generation order), mapped to
        source pixels. Cells lying wholly in full-resolution padding cover no source pixel and are left out."""
        if self.tiling is None:
            raise ValueError("this trace has no tiling (a plain model trace): use fixations(b), whose rects are "
                             "normalised to the model input frame, or trace through AutoGazePipeline")
        grid = self.tiling
        pos, pad, conf = self.gazing_pos.tolist(), self.if_padded_gazing.tolist(), self.confidence.tolist()
        rows_cols = [grid.stitched_shape(s) for s in range(len(self.grid_sizes))]
        out: list[list[SourceFixation]] = []
        for t, sl in enumerate(self.frame_slices()):
            fr = []
            for tile in range(self.batch_size):
                for j in range(sl.start, sl.stop):
                    if pad[tile][j]:
                        continue
                    tid = pos[tile][j] - self.num_vision_tokens * t
                    s, g, r, c = self.decode_id(tid)
                    R, C = grid.stitched_cell(tile, s, r, c)
                    if R >= rows_cols[s][0] or C >= rows_cols[s][1]:
                        continue
                    fr.append(SourceFixation(self.start_frame + t, tile, tid, s, g, R, C, grid.cell_rect(s, R, C),
                                             conf[tile][j]))
            out.append(fr)
        return out

    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-padded gazing_pos of every row concatenated, with int32 cu_seqlens [B + 1] (varlen layout)."""
        keep = ~self.if_padded_gazing
        counts = keep.sum(1)
        cu = torch.zeros(self.batch_size + 1, dtype=torch.int32, device=counts.device)
        cu[1:] = counts.cumsum(0)
        return self.gazing_pos[keep], cu

    def to_dict(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "batch_size": self.batch_size,
            "num_vision_tokens_each_frame": self.num_vision_tokens,
            "grid_sizes": list(self.grid_sizes),
            "num_gazing_each_frame": self.num_gazing_each_frame.tolist(),
            "sequences": [
                {"frames": [{"frame": t, "fixations": [f.to_dict() for f in fr]}
                            for t, fr in enumerate(self.fixations(b))]}
                for b in range(self.batch_size)
            ],
        } | ({} if self.tiling is None else {
            "mode": self.mode,
            "start_frame": self.start_frame,
            "tiling": self.tiling.to_dict(),
            "source_frames": [{"frame": self.start_frame + t, "fixations": [f.to_dict() for f in fr]}
                              for t, fr in enumerate(self.source_fixations())],
        })

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)
