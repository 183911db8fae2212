"""Video file I/O through PyAV (the optional ``video`` extra).

A video path or open container -> uint8 RGB frames [T, H, W, 3] (all at once, one by one, or in clips);
uint8 frames [T, H, W, 3] -> an H.264 (or MPEG-4) file.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import numpy as np

PathLike = str | os.PathLike


def _require_av() -> Any:
    try:
        import av
    except ImportError:
        raise ImportError(
            "reading and writing video files needs PyAV: pip install 'triton_autogaze[video]'"
        ) from None
    return av


def open_video(path: PathLike) -> Any:
    """Open ``path`` for decoding; returns a PyAV input container holding at least one video stream.

    Raises FileNotFoundError when the file is missing and ValueError (chained to PyAV's error) when it cannot
    be read as a video.
    """
    p = Path(path)  # the path first: a missing file is reported as missing whether or not PyAV is installed
    if not p.exists():
        raise FileNotFoundError(f"video file not found: {p}")
    if not p.is_file():
        raise ValueError(f"not a video file: {p}")
    av = _require_av()
    try:
        container = av.open(str(p), mode="r")
    except av.FFmpegError as e:
        raise ValueError(f"cannot read video {p}: {e}") from e
    if not container.streams.video:
        container.close()
        raise ValueError(f"cannot read video {p}: it has no video stream")
    return container


def _frames_of(container: Any, name: str, start: int, max_frames: int | None) -> Iterator[np.ndarray]:
    av = _require_av()
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    if max_frames is not None and max_frames < 0:
        raise ValueError(f"max_frames must be >= 0 or None, got {max_frames}")
    if max_frames == 0:
        return
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame- and slice-threaded decoding; order of output is unchanged
    emitted = 0
    try:
        for i, frame in enumerate(container.decode(stream)):
            if i < start:
                continue
            yield frame.to_ndarray(format="rgb24")
            emitted += 1
            if max_frames is not None and emitted >= max_frames:
                return
    except av.FFmpegError as e:
        raise ValueError(f"cannot decode video {name}: {e}") from e


def iter_frames(path_or_container: PathLike | Any, start: int = 0,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames one at a time: yields uint8 [H, W, 3] RGB arrays, skipping the first ``start``.

    Memory stays at one frame. A path is opened and closed here; a container passed in is left open.
    """
    if isinstance(path_or_container, (str, os.PathLike)):
        container = open_video(path_or_container)
        try:
            yield from _frames_of(container, str(path_or_container), start, max_frames)
        finally:
            container.close()
    else:
        yield from _frames_of(path_or_container, getattr(path_or_container, "name", "<container>"),
                              start, max_frames)


def iter_clips(path_or_container: PathLike | Any, clip_len: int = 16, start: int = 0,
               max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode consecutive clips: yields uint8 [clip_len, H, W, 3] arrays; the last one may be shorter.

    Memory stays at one clip.
    """
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    buf: list[np.ndarray] = []
    for frame in iter_frames(path_or_container, start=start, max_frames=max_frames):
        buf.append(frame)
        if len(buf) == clip_len:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def read_video(path_or_container: PathLike | Any, max_frames: int | None = None, start: int = 0) -> np.ndarray:
    """Decode a whole video (or ``max_frames`` of it from frame ``start``): uint8 [T, H, W, 3] RGB.

    Raises ValueError when no frame could be decoded.
    """
    frames = list(iter_frames(path_or_container, start=start, max_frames=max_frames))
    if not frames:
        name = path_or_container if isinstance(path_or_container, (str, os.PathLike)) else "<container>"
        raise ValueError(f"no frames decoded from video {name} (start={start}, max_frames={max_frames})")
    return np.stack(frames)


def video_fps(path_or_container: PathLike | Any, default: float = 30.0) -> float:
    """Frames per second of the first video stream (its average rate), or ``default`` when it declares none."""
    own = isinstance(path_or_container, (str, os.PathLike))
    container = open_video(path_or_container) if own else path_or_container
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return float(rate) if rate else float(default)
    finally:
        if own:
            container.close()


def _even_size(frames: np.ndarray) -> np.ndarray:
    """Pad an odd height or width by one replicated edge pixel: yuv420p subsamples chroma by 2 each way."""
    _, h, w, _ = frames.shape
    if h % 2 == 0 and w % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: PathLike, frames: np.ndarray, fps: float = 30.0, codec: str | None = None,
                crf: int = 18) -> Path:
    """Encode uint8 RGB frames [T, H, W, 3] to ``path`` (yuv420p) and return the path.

    ``codec`` defaults to libx264 when this FFmpeg build has it, else mpeg4. An odd H or W is padded to even
    by repeating the last row or column, so the file may be one pixel larger than the frames.
    """
    av = _require_av()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got shape {tuple(frames.shape)}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"frames must be non-empty, got shape {tuple(frames.shape)}")
    if not (fps > 0 and np.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if codec is None:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    frames = _even_size(frames)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf)}
        else:  # no crf here; FFmpeg's default 200 kb/s would smear overlays, so ~0.5 bit a pixel
            stream.bit_rate = max(int(frames.shape[1] * frames.shape[2] * fps * 0.5), 200_000)
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
