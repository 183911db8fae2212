"""Pipeline nodes for codec and rendering integrations: input nodes yield clips (normalised tensors or packed
RGBA), :func:`run_nodes` gazes each one and hands a GazePacket (clip + trace + helpers) to every output node.
Clips, traces, masks and tokens stay on the model's device; nothing syncs to the host unless a helper is asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .pipeline import AutoGazePipeline, GazeOptions, normalised_clip
from .sparse import PyramidTokens, fixation_image_mask, tokenize_masked_image_pyramid
from .trace import GazeTrace


@dataclass(frozen=True)
class Clip:
    """One clip from an input node. pixels: uint8 [T, H, W, C] (kind "packed") or fp32 [T, 3, H, W] normalised
    (kind "normalised"); index: clip number; start_frame: index of its first frame in the source."""

    pixels: Any
    kind: str
    index: int
    start_frame: int


class TensorClipInput:
    """Normalised clips [B, T, C, H, W] (or one [T, C, H, W]): one Clip per batch row, cut into ``clip_len``
    frames when given (default: whole rows). Rows follow each other in ``start_frame``."""

    def __init__(self, video: torch.Tensor, clip_len: int | None = None):
        if not torch.is_tensor(video) or video.dim() not in (4, 5):
            raise ValueError(f"video must be a tensor [B, T, C, H, W] or [T, C, H, W], got "
                             f"{type(video).__name__} {tuple(getattr(video, 'shape', ()))}")
        self.video = video if video.dim() == 5 else video[None]
        self.clip_len = clip_len

    def clips(self) -> Iterator[Clip]:
        index, start = 0, 0
        for row in self.video:
            step = self.clip_len or row.shape[0]
            for s in range(0, row.shape[0], step):
                yield Clip(row[s:s + step], "normalised", index, start)
                index, start = index + 1, start + min(step, row.shape[0] - s)


class RgbaClipInput:
    """Packed uint8 clips: one [T, H, W, 3|4] array/tensor, a batch [B, T, H, W, 3|4], or any iterable of
    [T, H, W, 3|4] clips (e.g. ``video.iter_clips(path)``)."""

    def __init__(self, frames: Any):
        self.frames = frames

    def clips(self) -> Iterator[Clip]:
        f = self.frames
        if isinstance(f, (np.ndarray, torch.Tensor)):
            batch = [f] if f.ndim == 4 else list(f) if f.ndim == 5 else None
            if batch is None:
                raise ValueError(f"frames must be [T, H, W, C] or [B, T, H, W, C], got shape {tuple(f.shape)}")
        else:
            batch = f
        start = 0
        for index, clip in enumerate(batch):
            yield Clip(clip, "packed", index, start)
            start += len(clip)


@runtime_checkable
class OutputNode(Protocol):
    """Anything with ``on_packet(packet)``; an optional ``close()`` is called once the source is exhausted."""

    def on_packet(self, packet: "GazePacket") -> None: ...


@dataclass(frozen=True)
class GazePacket:
    """One gazed clip. clip: the source pixels on the device (uint8 [T, H, W, C] or fp32 [T, 3, H, W]);
    trace: its GazeTrace (rows = tiles); mode: the inference mode; kind: "packed" or "normalised"."""

    clip: torch.Tensor
    trace: GazeTrace
    mode: str
    kind: str
    index: int
    pipeline: AutoGazePipeline

    @property
    def start_frame(self) -> int:
        return self.trace.start_frame

    def frame_tensor(self, t: int) -> torch.Tensor:
        """Source frame ``t`` (clip-local) on the device: uint8 [H, W, C] packed or fp32 [3, H, W] normalised."""
        return self.clip[t]

    def frame_mask(self, t: int, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """[H, W] bool device mask of the gazed source pixels of frame ``t`` (any scale)."""
        return fixation_image_mask(self.trace, t, height, width)

    def frame_pyramid_tokens(self, t: int, levels: int | Sequence[int] = 3, patch_size: int = 16) -> PyramidTokens:
        """Pyramid tokens of frame ``t`` (channels-first; packed frames drop alpha) with gaze-mask densities."""
        frame = self.frame_tensor(t)
        image = frame[..., :3].permute(2, 0, 1) if self.kind == "packed" else frame
        return tokenize_masked_image_pyramid(image, self.frame_mask(t), levels, patch_size)

    def model_inputs(self, tiles: range | None = None) -> torch.Tensor:
        """The exact model inputs the trace was made from, recomputed: [n, T, 3, h, w] fp32 (all tiles by
        default), e.g. for ``sparse.gather_gazed_patches``."""
        p, grid = self.pipeline, self.trace.tiling
        of = p.packed_tiles(self.clip, grid) if self.kind == "packed" else p.normalised_tiles(self.clip, grid)
        return of(tiles if tiles is not None else range(grid.num_tiles))


class ListOutput:
    """Collects every packet in ``packets``."""

    def __init__(self):
        self.packets: list[GazePacket] = []

    def on_packet(self, packet: GazePacket) -> None:
        self.packets.append(packet)


class CallbackOutput:
    """Calls ``fn(packet)`` for every packet."""

    def __init__(self, fn: Callable[[GazePacket], Any]):
        self.fn = fn

    def on_packet(self, packet: GazePacket) -> None:
        self.fn(packet)


def gaze_clips(pipeline: AutoGazePipeline, source: Any, options: GazeOptions | None = None) -> Iterator[GazePacket]:
    """Gaze every clip of an input node (anything with ``clips()``), yielding packets one clip at a time."""
    if not hasattr(source, "clips"):
        raise TypeError(f"source must be an input node with clips(), got {type(source).__name__}")
    opts = options or GazeOptions()
    for clip in source.clips():
        if clip.kind == "packed":
            pixels = pipeline.packed(clip.pixels, f"clip {clip.index}")
            trace = pipeline.run_packed(pixels, opts)
        else:
            pixels = normalised_clip(clip.pixels, pipeline.device, f"clip {clip.index}")
            trace = pipeline.run_normalised(pixels, opts)
        trace = replace(trace, start_frame=clip.start_frame)
        yield GazePacket(pixels, trace, opts.mode, clip.kind, clip.index, pipeline)


def run_nodes(pipeline: AutoGazePipeline, source: Any, outputs: Iterable[OutputNode],
              options: GazeOptions | None = None) -> int:
    """Drive ``source`` -> pipeline -> every output node; returns the number of clips. Outputs' ``close()``
    (when they have one) runs at the end, also after an error."""
    outputs = list(outputs)
    for node in outputs:
        if not isinstance(node, OutputNode):
            raise TypeError(f"output node {type(node).__name__} has no on_packet(packet) method")
    count = 0
    try:
        for packet in gaze_clips(pipeline, source, options):
            for node in outputs:
                node.on_packet(packet)
            count += 1
    finally:
        for node in outputs:
            close = getattr(node, "close", None)
            if callable(close):
                close()
    return count
