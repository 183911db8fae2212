"""Host -> GPU upload of packed uint8 frames through a reusable pinned staging buffer.

A pageable host tensor reaches the GPU through the driver's own staging: one thread copies it into small pinned
buffers and the DMA waits on that copy (measured ~6-9 GB/s for a 133 MB 1080p RGBA clip on H100/H200 hosts, more
time than the model takes on one 224 px row). Here C++ threads (``_stage.OrderedCopy``; started once per process
and kept between uploads) copy the source into one pinned buffer that lives as long as the pipeline, taking 1 MiB
pieces in source order, and the copied prefix is sent by DMA on a copy stream piece by piece, so the copy, the DMA
and the kernels overlap: a consumer waits only for the frames it needs next (:meth:`HostUploader.staged`; the first
frame of a 1080p clip is staged after a fraction of a millisecond). No Python thread takes part, so the main thread
keeps the interpreter to itself while it launches the model. The buffer is reused only after the previous upload's
DMA has finished (a CUDA event).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

try:
    from ._stage import OrderedCopy
except ImportError:  # the package run from a source tree without its extensions: uploads take torch's copy
    OrderedCopy = None

# Below this size the driver's pageable path is as fast (one frame of 720p RGBA is 3.7 MB); above the upper
# bound (a 16-frame 4K RGBA clip is 530 MB) the stage would pin too much host memory for the pipeline's life.
# A 1080p frame (6.2 MB RGB) alone uploads faster pageable (H100: 0.48 vs 0.96 ms to a sync), but the stage
# returns to the host at once while a pageable copy blocks it, so streamed 1080p pushes (resize-224) take
# 2.6 ms a frame staged vs 3.3 pageable (bench/bench_pipeline.py, bench/RESULTS.md section 4, session 11).
MIN_STAGED_BYTES = 4 << 20
MAX_STAGED_BYTES = 1 << 30
# copied bytes sent per DMA while draining a whole upload (fewer, larger DMAs; the last one takes the rest)
DMA_BYTES = 8 << 20


class HostUploader:
    """Copies CPU tensors to one CUDA device through a pinned buffer filled by ``threads`` C++ threads.

    ``pin=False`` stages through ordinary memory (the CPU-only tests of the staging logic). ``piece``: bytes a
    copy thread takes at a time.
    """

    def __init__(self, device: torch.device | str, threads: int | None = None, pin: bool = True,
                 piece: int = 1 << 20):
        self.device = torch.device(device)
        # 8 by default: 16 copy threads on a 16-core host took the cores the main thread launches the model from
        # (H200: 23.1 vs 22.4 ms end to end; bench/RESULTS.md section 4)
        self.threads = max(1, threads or min(8, os.cpu_count() or 1))
        self.pin, self.piece = pin, piece
        self._buf: torch.Tensor | None = None
        self._done: torch.cuda.Event | None = None
        self._stream: torch.cuda.Stream | None = None  # the DMA stream (CUDA only)
        self._lock = threading.Lock()
        # False once pinning failed (or without the _stage extension): every upload takes torch's plain copy
        self._usable = OrderedCopy is not None

    def wanted(self, src: torch.Tensor) -> bool:
        """Whether ``src`` goes through the stage (a large, contiguous CPU tensor bound for this device)."""
        nbytes = src.numel() * src.element_size()
        return (self._usable and src.device.type == "cpu" and not src.is_pinned() and src.is_contiguous()
                and MIN_STAGED_BYTES <= nbytes <= MAX_STAGED_BYTES)

    def __call__(self, src: torch.Tensor) -> torch.Tensor:
        """src: CPU tensor [T, ...] -> the same values on ``self.device`` (the current stream waits for the copy)."""
        with self.staged(src) as up:
            pass
        return up.out

    @contextmanager
    def staged(self, src: torch.Tensor) -> Iterator["StagedUpload"]:
        """Start uploading ``src`` (CPU [T, ...]) and yield the :class:`StagedUpload` in flight, so the caller can
        start on the first frames (``up.wait(stop)``) while later ones are still copied. On exit the current
        stream waits for every frame, and the stage is free for the next upload once that DMA is done."""
        with self._lock:
            up = self._start(src)
            try:
                yield up
            finally:
                up.finish()
                self._done = up.done

    def _start(self, src: torch.Tensor) -> "StagedUpload":
        if src.device.type != "cpu":
            raise ValueError(f"src: expected a CPU tensor, got device {src.device}")
        src = src.contiguous()
        nbytes = src.numel() * src.element_size()
        if self._done is not None:
            self._done.synchronize()  # the previous upload's DMA has read the buffer
        if self._usable and (self._buf is None or self._buf.numel() < nbytes):
            self._buf = None
            try:
                self._buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
            except RuntimeError as e:  # the host cannot pin this much: keep working without the stage
                warnings.warn(f"pinned upload stage of {nbytes} bytes unavailable ({e}); using plain copies",
                              RuntimeWarning, stacklevel=4)
                self._usable = False
        if not self._usable:  # no _stage extension, or pinning failed: torch's plain copy
            return StagedUpload(src, None, src.to(self.device), None, None)
        stage = self._buf[:nbytes]
        out = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        cuda = self.device.type == "cuda"
        if cuda and self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        copier = OrderedCopy(src.data_ptr(), stage.data_ptr(), nbytes, self.threads, self.piece)
        return StagedUpload(src, stage, out, copier, self._stream if cuda else None, non_blocking=self.pin)

    def close(self) -> None:
        """Free the pinned buffer (after its last DMA); a later upload allocates it again."""
        with self._lock:
            if self._done is not None:
                self._done.synchronize()
                self._done = None
            self._buf = None


class StagedUpload:
    """An upload in flight: ``out`` (on the device) is filled in source order, the copied prefix of the pinned
    stage sent by DMA on the uploader's stream as the consumer asks for it."""

    def __init__(self, src: torch.Tensor, stage: torch.Tensor | None, out: torch.Tensor,
                 copier: OrderedCopy | None, stream: torch.cuda.Stream | None, non_blocking: bool = True):
        self.out = out
        self._src, self._stage, self._copier, self._stream = src, stage, copier, stream  # src: kept alive
        self._non_blocking = non_blocking
        self._flat = out.view(-1).view(torch.uint8)
        self._frame_bytes = out[0].numel() * out.element_size() if out.dim() and out.shape[0] else 0
        self._sent = 0  # leading bytes whose DMA is queued
        self._event: torch.cuda.Event | None = None  # recorded after the last queued DMA
        self._waited = 0  # leading bytes the consumer's stream waits for
        self.done: torch.cuda.Event | None = None

    def _send(self, need: int) -> None:
        """Queue the DMA of every copied byte once at least ``need`` leading bytes are copied."""
        ready = self._copier.wait(need)
        if ready <= self._sent:
            return
        a, b = self._sent, ready
        if self._stream is None:
            self._flat[a:b].copy_(self._stage[a:b])
        else:
            with torch.cuda.device(self.out.device), torch.cuda.stream(self._stream):
                self._flat[a:b].copy_(self._stage[a:b], non_blocking=self._non_blocking)
                self._event = torch.cuda.Event()
                self._event.record(self._stream)
        self._sent = b

    def _consume(self) -> None:
        if self._event is not None and self._waited < self._sent:
            torch.cuda.current_stream(self.out.device).wait_event(self._event)
        self._waited = self._sent

    def wait(self, stop: int) -> None:
        """Make the current stream wait until frames [0, stop) are on the device (blocks the host only until
        their bytes are copied into the stage and their DMA is queued)."""
        if self._copier is None:
            return
        need = min(stop * self._frame_bytes, self._flat.numel())
        if self._waited >= need:
            return
        self._send(need)
        self._consume()

    def finish(self) -> None:
        """Send every byte (DMAs of at least DMA_BYTES while the copy runs) and make the current stream wait for
        them; ``done`` then marks the end of the stage's last DMA."""
        if self._copier is None:
            return
        total = self._flat.numel()
        try:
            while self._sent < total:
                self._send(min(total, self._sent + DMA_BYTES))
            self._consume()
        finally:
            self._copier.join()
        if self._stream is not None:
            self.done = torch.cuda.Event()
            self.done.record(self._stream)
