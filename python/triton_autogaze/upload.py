"""Host -> GPU upload of packed uint8 frames through a reusable pinned staging buffer.

A pageable host tensor reaches the GPU through the driver's own staging: one thread copies it into small pinned
buffers and the DMA waits on that copy (measured ~6 GB/s for a 133 MB 1080p RGBA clip on the H100 host, more
time than the model takes on one 224 px row). Here several threads copy groups of frames into one pinned buffer
that lives as long as the pipeline, and each group's DMA is queued on the current stream as soon as the group
is staged, so the copies, the DMA and the kernels that follow overlap. The buffer is reused only after the
previous upload's DMA has finished (a CUDA event).
"""

from __future__ import annotations

import os
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

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
        self._lock = threading.Lock()
        self._usable = True  # False once pinning failed: every upload then takes torch's plain copy

    def wanted(self, src: torch.Tensor) -> bool:
        """Whether ``src`` goes through the stage (a large, contiguous CPU tensor bound for this device)."""
        nbytes = src.numel() * src.element_size()
        return (self._usable and src.device.type == "cpu" and not src.is_pinned() and src.is_contiguous()
                and MIN_STAGED_BYTES <= nbytes <= MAX_STAGED_BYTES)

    def __call__(self, src: torch.Tensor) -> torch.Tensor:
        """src: contiguous CPU tensor [T, ...] -> the same values on ``self.device`` (queued on its current stream)."""
        with self._lock:
            return self._upload(src)

    def _upload(self, src: torch.Tensor) -> torch.Tensor:
        nbytes = src.numel() * src.element_size()
        if self._done is not None:
            self._done.synchronize()  # the previous upload's DMA has read the buffer
        if self._buf is None or self._buf.numel() < nbytes:
            self._buf = None
            try:
                self._buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pin)
            except RuntimeError as e:  # the host cannot pin this much: keep working without the stage
                warnings.warn(f"pinned upload stage of {nbytes} bytes unavailable ({e}); using plain copies",
                              RuntimeWarning, stacklevel=3)
                self._usable = False
                return src.to(self.device)
        stage = self._buf[:nbytes].view(src.dtype).view(src.shape)
        out = torch.empty(src.shape, dtype=src.dtype, device=self.device)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="autogaze-upload")
        T = src.shape[0]
        step = max(1, -(-T // (2 * self.threads)))  # about two groups a thread: the first DMA starts early
        groups = [(a, min(T, a + step)) for a in range(0, T, step)]
        # numpy copies: one plain memcpy a thread, GIL released (torch's copy_ would open an OpenMP team in
        # every worker thread and oversubscribe the cores)
        sn, dn = src.numpy(), stage.numpy()
        futures = [self._pool.submit(np.copyto, dn[a:b], sn[a:b]) for a, b in groups]
        for (a, b), f in zip(groups, futures):
            f.result()
            out[a:b].copy_(stage[a:b], non_blocking=self.pin)
        if self.device.type == "cuda":
            self._done = torch.cuda.Event()
            self._done.record(torch.cuda.current_stream(self.device))
        return out

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
