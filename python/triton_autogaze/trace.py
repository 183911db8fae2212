"""GazeTrace: the typed result of generation. Raw upstream-layout tensors in, decoded fixations out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

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
class GazeTrace:
    """Gaze of a batch of clips, in upstream's layout.

    gazing_pos: [B, N] int64, ids + NV*t (pads hold NV*(t+1)); if_padded_gazing: [B, N] bool;
    num_gazing_each_frame: [T] int64; gazing_mask: per scale [B, T, n_s] fp32; confidence: [B, N] fp32
    (0 at pads). grid_sizes / scale_offsets describe the per-frame vocabulary of NV ids.
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
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)
