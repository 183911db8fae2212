"""Image preprocessing: uint8 RGB/RGBA frames [T, H, W, 3|4] -> float32 model pixels [T, 3, H', W'] (CPU).

Bit-exact with upstream AutoGaze's processor (SPEC §2.1): shortest-edge Pillow-bilinear resize, rescale with
offset, normalise. The native ``_rgba`` extension does the work; the numpy reference here is its oracle/fallback.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch

from .config import PreprocessorConfig

try:
    from . import _rgba
except ImportError:  # extension not built: the numpy reference takes over, same bits, slower
    _rgba = None

HAS_NATIVE = _rgba is not None
PRECISION_BITS = 22  # Pillow's fixed point: 32 bits less 8 for the pixel and 2 of headroom

Frames = Union[np.ndarray, torch.Tensor, Sequence[Union[np.ndarray, torch.Tensor]]]


def output_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """(H', W') of the shortest-edge resize: the short side becomes ``shortest_edge``, the long side
    ``int(shortest_edge * long / short)`` (Python float math, truncated). 360x640 -> (224, 398)."""
    if height < 1 or width < 1:
        raise ValueError(f"height, width: expected >= 1, got ({height}, {width})")
    if shortest_edge < 1:
        raise ValueError(f"shortest_edge: expected >= 1, got {shortest_edge}")
    if width <= height:
        return int(shortest_edge * height / width), shortest_edge
    return shortest_edge, int(shortest_edge * width / height)


def resize_coeffs_reference(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's antialiased bilinear taps for one axis ``in_size -> out_size``.

    Returns ``lo [M] int32`` (first input index), ``count [M] int32`` (taps used) and
    ``weights [M, K] int32`` (fixed point, 2**22 = 1.0, zero past ``count``), all in Pillow's double math.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)  # widen the triangle when shrinking: this is the antialiasing
    support = 1.0 * filterscale
    ksize = math.ceil(support) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    lo = np.maximum((center - support + 0.5).astype(np.int64), 0)  # astype truncates toward zero like C
    count = np.minimum((center + support + 0.5).astype(np.int64), in_size) - lo
    taps = np.arange(ksize)
    # Pillow multiplies by the reciprocal rather than dividing; the last bit matters.
    dist = np.abs(((lo[:, None] + taps) - center[:, None] + 0.5) * (1.0 / filterscale))
    w = np.where((taps < count[:, None]) & (dist < 1.0), 1.0 - dist, 0.0)
    total = np.cumsum(w, axis=1)[:, -1:]  # cumsum adds left to right like Pillow; np.sum is pairwise
    w = w / np.where(total == 0.0, 1.0, total)
    fixed = w * float(1 << PRECISION_BITS)
    weights = np.where(w < 0, fixed - 0.5, fixed + 0.5).astype(np.int32)
    return lo.astype(np.int32), count.astype(np.int32), weights


def _resample_axis(pixels: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One fixed-point pass of ``pixels`` (uint8) along ``axis``; returns uint8 like Pillow's intermediate."""
    lo, _, weights = resize_coeffs_reference(pixels.shape[axis], out_size)
    bshape = [1] * pixels.ndim
    bshape[axis] = out_size
    acc = np.full(pixels.shape[:axis] + (out_size,) + pixels.shape[axis + 1 :], 1 << (PRECISION_BITS - 1), np.int32)
    last = pixels.shape[axis] - 1
    # A loop over taps (K ~ 2 * scale + 3), each vectorised over every pixel; taps past count weigh 0.
    for k in range(weights.shape[1]):
        src = np.take(pixels, np.minimum(lo + k, last), axis=axis).astype(np.int32)
        acc += src * weights[:, k].reshape(bshape)
    return np.clip(acc >> PRECISION_BITS, 0, 255).astype(np.uint8)


def resize_bilinear_reference(frames: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Pillow ``Image.resize((W', H'), BILINEAR)`` on uint8 RGB, in numpy.

    frames: [..., H, W, C] uint8, C >= 3 (channels past 3, e.g. alpha, are dropped, never premultiplied).
    Returns [..., out_height, out_width, 3] uint8. Horizontal pass first, uint8 in between, and a pass is
    skipped when its axis keeps its size (SPEC §2.1).
    """
    pixels = frames[..., :3]
    if out_width != pixels.shape[-2]:
        pixels = _resample_axis(pixels, pixels.ndim - 2, out_width)
    if out_height != pixels.shape[-3]:
        pixels = _resample_axis(pixels, pixels.ndim - 3, out_height)
    return np.ascontiguousarray(pixels)


def preprocess_reference(frames: np.ndarray, config: PreprocessorConfig | None = None) -> np.ndarray:
    """The whole recipe in numpy: frames [T, H, W, 3|4] uint8 -> [T, 3, H', W'] float32."""
    cfg = config or PreprocessorConfig()
    frames = _check_frames(frames)
    _, h, w, _ = frames.shape
    oh, ow = output_size(h, w, cfg.shortest_edge) if cfg.do_resize else (h, w)
    pixels = resize_bilinear_reference(frames, oh, ow)
    x = pixels.astype(np.float32)
    if cfg.do_rescale:
        # Upstream multiplies in float64, stores float32, then subtracts the offset in float32.
        x = (pixels.astype(np.float64) * cfg.rescale_factor).astype(np.float32)
        if cfg.offset:
            x = x - np.float32(1.0)
    if cfg.do_normalize:
        x = (x - np.asarray(cfg.image_mean, np.float32)) / np.asarray(cfg.image_std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _to_numpy(frame: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(frame, torch.Tensor):
        if frame.dtype != torch.uint8:
            raise ValueError(f"{name}: expected dtype torch.uint8, got {frame.dtype}")
        return frame.detach().cpu().numpy()
    if isinstance(frame, np.ndarray):
        if frame.dtype != np.uint8:
            raise ValueError(f"{name}: expected dtype uint8, got {frame.dtype}")
        return frame
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(frame).__name__}")


def _check_frames(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, C] or [H, W, C] uint8 -> [T, H, W, C], C in {3, 4}; ValueError names what is wrong."""
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4:
        raise ValueError(f"frames: expected rank 4 (T, H, W, C) or 3 (H, W, C), got shape {tuple(frames.shape)}")
    t, h, w, c = frames.shape
    if c not in (3, 4):
        raise ValueError(f"frames: expected C (last dim) 3 (RGB) or 4 (RGBA), got {c} in shape {tuple(frames.shape)}")
    if t < 1 or h < 1 or w < 1:
        raise ValueError(f"frames: expected T, H, W >= 1, got shape {tuple(frames.shape)}")
    return frames


def _stack(frames: Frames) -> np.ndarray:
    if isinstance(frames, (np.ndarray, torch.Tensor)):
        return _check_frames(_to_numpy(frames, "frames"))
    if not isinstance(frames, (list, tuple)):
        raise TypeError(f"frames: expected an array, tensor or list of frames, got {type(frames).__name__}")
    if not frames:
        raise ValueError("frames: expected at least one frame, got an empty list")
    arrays = [_to_numpy(f, f"frames[{i}]") for i, f in enumerate(frames)]
    for i, a in enumerate(arrays):
        if a.ndim != 3:
            raise ValueError(f"frames[{i}]: expected rank 3 (H, W, C), got shape {tuple(a.shape)}")
        if a.shape != arrays[0].shape:
            raise ValueError(
                f"frames[{i}]: shape {tuple(a.shape)} differs from frames[0] shape {tuple(arrays[0].shape)}"
            )
    return _check_frames(np.stack(arrays))


class AutoGazeImageProcessor:
    """Upstream ``AutoGazeImageProcessor`` for video frames, bit-exact, on CPU.

    ``config`` comes from ``preprocessor_config.json`` (the NVIDIA values when omitted). ``num_threads``
    caps the native worker threads (frames run in parallel); 0 uses every hardware thread.
    """

    def __init__(self, config: PreprocessorConfig | None = None, num_threads: int = 0) -> None:
        if num_threads < 0:
            raise ValueError(f"num_threads: expected >= 0 (0 = auto), got {num_threads}")
        self.config = config or PreprocessorConfig()
        self.num_threads = num_threads

    @classmethod
    def from_pretrained(cls, path: str | Path, num_threads: int = 0) -> "AutoGazeImageProcessor":
        """Reads ``preprocessor_config.json`` from a checkpoint folder (or that file's own path)."""
        path = Path(path)
        if path.is_dir():
            path = path / "preprocessor_config.json"
        return cls(PreprocessorConfig.from_file(path), num_threads=num_threads)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') this processor gives a height x width frame."""
        return output_size(height, width, self.config.shortest_edge) if self.config.do_resize else (height, width)

    def __call__(self, frames: Frames) -> torch.Tensor:
        """frames: [T, H, W, 3|4] or [H, W, 3|4] uint8 array/tensor, or a list of [H, W, 3|4] frames of one size.

        Returns [T, 3, H', W'] float32 on CPU. Alpha is dropped, never premultiplied. Non-uint8 input is
        rejected rather than cast, since a float frame's value range is ambiguous.
        """
        pixels = _stack(frames)
        cfg = self.config
        if _rgba is None:
            return torch.from_numpy(preprocess_reference(pixels, cfg))
        out = _rgba.preprocess(
            pixels,
            shortest_edge=cfg.shortest_edge,
            do_resize=cfg.do_resize,
            do_rescale=cfg.do_rescale,
            rescale_factor=cfg.rescale_factor,
            offset=cfg.offset,
            do_normalize=cfg.do_normalize,
            image_mean=cfg.image_mean,
            image_std=cfg.image_std,
            num_threads=self.num_threads,
        )
        return torch.from_numpy(out)
