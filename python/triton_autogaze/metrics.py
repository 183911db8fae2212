"""Per-frame metrics of a rendered run: RenderedClip sums + gaze grids -> mask ratio, update ratio, PSNR and
fixations per scale for each frame, plus exponential moving averages and a per-scale histogram over the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .render import RenderedClip

EMA_ALPHA = 0.1  # weight of the newest frame: ~10-frame memory


def psnr_db(sse: int, num_values: int, peak: int = 255) -> float:
    """10 log10(peak^2 / MSE) over ``num_values`` uint8 values; ``inf`` when input and output are identical."""
    if num_values < 1:
        raise ValueError(f"num_values must be >= 1, got {num_values}")
    if sse <= 0:
        return math.inf
    return 10.0 * math.log10(peak * peak * num_values / sse)


def scale_names(grid_sizes: Sequence[int]) -> list[str]:
    """(2, 4, 7, 14) -> ["2x2", "4x4", "7x7", "14x14"]."""
    return [f"{g}x{g}" for g in grid_sizes]


@dataclass(frozen=True)
class FrameMetrics:
    """One frame. mask_ratio: pixels under the mask / frame pixels; update_ratio: pixels the output refreshed
    from this frame / frame pixels (1 on keyframes and in full-blend); psnr_db: input vs output (inf when equal);
    fixations: gazed cells per scale, coarsest first (stitched over tiles in tiled modes)."""

    frame: int
    keyframe: bool
    mask_ratio: float
    update_ratio: float
    psnr_db: float
    fixations: tuple[int, ...]

    def to_dict(self, names: Sequence[str]) -> dict:
        return {"frame": self.frame, "keyframe": self.keyframe, "mask_ratio": self.mask_ratio,
                "update_ratio": self.update_ratio, "psnr_db": _json_float(self.psnr_db),
                "num_fixations": sum(self.fixations), "fixations": dict(zip(names, self.fixations))}


def _json_float(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no inf: identical frames are null


def frame_metrics(rendered: RenderedClip, masks: Sequence[torch.Tensor], start_frame: int,
                  visualization: str) -> list[FrameMetrics]:
    """rendered: one clip (T frames of H x W); masks: its per-scale grids [T, R_s, C_s] bool; start_frame: the
    absolute index of its frame 0. One host sync for the whole clip."""
    T, H, W, _ = rendered.output.shape
    pixels = H * W
    fix = torch.stack([m.flatten(1).sum(1) for m in masks], 1).cpu().tolist()  # [T, S]
    covered, sse, key = rendered.covered.cpu().tolist(), rendered.sse.cpu().tolist(), rendered.keyframe.cpu().tolist()
    out = []
    for t in range(T):
        mask_ratio = covered[t] / pixels
        update = 1.0 if visualization == "full-blend" or key[t] else mask_ratio
        out.append(FrameMetrics(start_frame + t, bool(key[t]), mask_ratio, update, psnr_db(sse[t], pixels * 3),
                                tuple(int(v) for v in fix[t])))
    return out


class Ema:
    """Exponential moving average: the first value seeds it, then ema += alpha * (x - ema); non-finite values
    (identical-frame PSNR) are skipped."""

    def __init__(self, alpha: float = EMA_ALPHA):
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha, self.value = alpha, None

    def update(self, x: float) -> float | None:
        if math.isfinite(x):
            self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value


KEYS = ("mask_ratio", "update_ratio", "psnr_db")


@dataclass
class RunMetrics:
    """Accumulates FrameMetrics over a run: per-frame entries with the EMAs after each frame, run means and a
    per-scale fixation histogram."""

    grid_sizes: tuple[int, ...]
    ema_alpha: float = EMA_ALPHA
    frames: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.names = scale_names(self.grid_sizes)
        self._ema = {k: Ema(self.ema_alpha) for k in KEYS}
        self._sum = {k: 0.0 for k in KEYS}
        self._n = {k: 0 for k in KEYS}
        self._hist = [0] * len(self.grid_sizes)

    def add(self, metrics: Sequence[FrameMetrics]) -> None:
        for m in metrics:
            entry = m.to_dict(self.names)
            ema = {}
            for k in KEYS:
                v = getattr(m, k)
                e = self._ema[k].update(v)
                ema[k] = None if e is None else e
                if math.isfinite(v):
                    self._sum[k] += v
                    self._n[k] += 1
            entry["ema"] = ema
            self._hist = [h + f for h, f in zip(self._hist, m.fixations)]
            self.frames.append(entry)

    def histogram(self) -> dict:
        """Fixations per scale summed over the run, and their mean per frame."""
        n = max(len(self.frames), 1)
        return {"scales": list(self.names), "fixations": list(self._hist),
                "mean_per_frame": [h / n for h in self._hist]}

    def summary(self) -> dict:
        """Run means (finite values only; PSNR null when every frame was identical) and the final EMAs."""
        return {
            "num_frames": len(self.frames),
            "mean": {k: (self._sum[k] / self._n[k] if self._n[k] else None) for k in KEYS},
            "ema": {k: self._ema[k].value for k in KEYS},
            "ema_alpha": self.ema_alpha,
            "keyframes": sum(1 for f in self.frames if f["keyframe"]),
            "mean_fixations_per_frame": sum(self._hist) / max(len(self.frames), 1),
        }
