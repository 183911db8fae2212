"""Host -> GPU upload of packed uint8 frames through a reusable pinned staging buffer.

A pageable host tensor reaches the GPU through the driver's own staging: one thread copies it into small pinned
buffers and the DMA waits on that copy (measured ~6 GB/s for a 133 MB 1080p RGBA clip on the H100 host, more
time than the model takes on one 224 px row). Here several threads copy groups of frames into one pinned buffer
that lives as long as the pipeline, and each group's DMA is queued on a copy stream as soon as the group is
staged, so the copies, the DMA and the kernels overlap: a consumer waits only for the frames it needs next
(:meth:`HostUploader.staged`; the pipeline starts the model on a clip's first frames while the rest are still
on their way). The buffer is reused only after the previous upload's DMA has finished (a CUDA event).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

# Below this size the driver's pageable path is as fast (one frame of 720p RGBA is 3.7 MB); above the upper
# bound (a 16-frame 4K RGBA clip is 530 MB) the stage would pin too much host memory for the pipeline's life.
MIN_STAGED_BYTES = 16 << 20
MAX_STAGED_BYTES = 1 << 30


class HostUploader:
    """Copies CPU uint8 tensors to one CUDA device through a pinned buffer filled by ``threads`` threads.

    ``pin=False`` stages through ordinary memory (the CPU-only tests of the staging logic).
    """

    def __init__(self, device: torch.device | str, threads: int | None = None, pin: bool = True):
        self.device = torch.device(device)
        self.threads = max(1, threads or min(8, os.cpu_count() or 1))
        self.pin = pin
        self._buf: torch.Tensor | None = None
        self._done: torch.cuda.Event | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stream: torch.cuda.Stream | None = None  # the DMA stream (CUDA only)
        self._lock = threading.Lock()
        self._usable = True  # False once pinning failed: every upload then takes torch's plain copy

    def wanted(self, src: torch.Tensor) -> bool:
        """Whether ``src`` goes through the stage (a large, contiguous CPU tensor bound for this device)."""
        nbytes = src.numel() * src.element_size()
        return (self._usable and src.device.type == "cpu" and not src.is_pinned() and src.is_contiguous()
                and MIN_STAGED_BYTES <= nbytes <= MAX_STAGED_BYTES)

    def __call__(self, src: torch.Tensor) -> torch.Tensor:
        """src: contiguous CPU tensor [T, ...] -> the same values on ``self.device`` (the current stream waits for
        the copy)."""
        with self.staged(src) as up:
            pass
        return up.out

    @contextmanager
    def staged(self, src: torch.Tensor) -> Iterator["StagedUpload"]:
        """Start uploading ``src`` (contiguous CPU [T, ...]) and yield the :class:`StagedUpload` in flight, so the
        caller can start on the first frames (``up.wait(stop)``) while later groups are still copied. On exit the
        current stream waits for every group, and the stage is free for the next upload once that DMA is done."""
        with self._lock:
            up = self._start(src)
            try:
                yield up
            finally:
                up.finish()
                self._done = up.done

    def _start(self, src: torch.Tensor) -> "StagedUpload":
        nbytes = src.numel() * src.element_size()
        if self._done is not None:
            self._done.synchronize()  # the previous upload's DMA has read the buffer
        if self._buf is None or self._buf.numel() < nbytes:
            self._buf = None
            try:
                self._buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
            except RuntimeError as e:  # the host cannot pin this much: keep working without the stage
                warnings.warn(f"pinned upload stage of {nbytes} bytes unavailable ({e}); using plain copies",
                              RuntimeWarning, stacklevel=4)
                self._usable = False
                return StagedUpload(src.to(self.device), [(0, src.shape[0])], [], None)
        stage = self._buf[:nbytes].view(src.dtype).view(src.shape)
        out = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="autogaze-upload")
        cuda = self.device.type == "cuda"
        if cuda and self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        T = src.shape[0]
        step = max(1, -(-T // (2 * self.threads)))  # about two groups a thread: the first DMA starts early
        groups = [(a, min(T, a + step)) for a in range(0, T, step)]
        sn, dn = src.numpy(), stage.numpy()

        def move(a: int, b: int):
            # numpy copy: one plain memcpy a thread, GIL released (torch's copy_ would open an OpenMP team in
            # every worker thread and oversubscribe the cores); then this group's DMA on the copy stream
            np.copyto(dn[a:b], sn[a:b])
            if not cuda:
                out[a:b].copy_(stage[a:b])
                return None
            with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
                out[a:b].copy_(stage[a:b], non_blocking=self.pin)
                ev = torch.cuda.Event()
                ev.record(self._stream)
            return ev

        futures = [self._pool.submit(move, a, b) for a, b in groups]
        return StagedUpload(out, groups, futures, self._stream)

    def close(self) -> None:
        """Free the pinned buffer (after its last DMA) and stop the copy threads; a later upload restarts both."""
        with self._lock:
            if self._done is not None:
                self._done.synchronize()
                self._done = None
            self._buf = None
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


class StagedUpload:
    """An upload in flight: ``out`` (on the device) is filled group by group (``groups``: frame ranges [a, b)),
    each group copied into the pinned stage by a worker thread and then sent by DMA on the uploader's stream."""

    def __init__(self, out: torch.Tensor, groups: list[tuple[int, int]], futures: list[Future],
                 stream: torch.cuda.Stream | None):
        self.out, self.groups = out, groups
        self._futures, self._stream = futures, stream
        self._waited = 0  # groups the current stream already waits for
        self.done: torch.cuda.Event | None = None

    def wait(self, stop: int) -> None:
        """Make the current stream wait until frames [0, stop) are on the device (blocks the host only until
        their host copies are done and their DMA is queued)."""
        while self._waited < len(self._futures) and self.groups[self._waited][0] < stop:
            ev = self._futures[self._waited].result()
            if ev is not None:
                torch.cuda.current_stream(self.out.device).wait_event(ev)
            self._waited += 1

    def finish(self) -> None:
        """Wait for every group (see :meth:`wait`); ``done`` then marks the end of the stage's last DMA."""
        try:
            self.wait(self.out.shape[0])
        finally:
            for f in self._futures:  # a failed group: let the others end before the stage is reused
                f.exception()
        if self._stream is not None:
            self.done = torch.cuda.Event()
            self.done.record(self._stream)
