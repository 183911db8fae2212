"""Ways to move a 133 MB pageable host clip (1080p RGBA, 16 frames) to the GPU, timed side by side (medians of 12):
torch's pageable copy, the pinned stage of upload.py, and registering the source pages in place
(cudaHostRegister) then one DMA straight from them, whole or in pipelined chunks; plus the host's memcpy
bandwidth into pinned memory by thread count.

    python bench/pin_probe.py
"""
import statistics
import threading
import time

import numpy as np
import torch

from triton_autogaze.upload import HostUploader

cudart = torch.cuda.cudart()
src = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 1080, 1920, 4), dtype=np.uint8))
N = src.numel()
dst = torch.empty(N, dtype=torch.uint8, device="cuda")
stream = torch.cuda.Stream()
ROUNDS, WARM = 12, 3


def timed(fn):
    ts = []
    for r in range(ROUNDS + WARM):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        if r >= WARM:
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def report(name, fn):
    med, lo = timed(fn)
    print(f"{name:58s} median {med:7.2f} ms  min {lo:7.2f}  ({N / med / 1e6:5.1f} GB/s)", flush=True)


def pageable():
    dst.copy_(src.view(-1))


up = HostUploader("cuda")


def staged():
    up(src)


def registered(flags, chunk=None):
    flat = src.view(-1)
    base = flat.data_ptr()
    step = chunk or N

    def go():
        regs = []
        with torch.cuda.stream(stream):
            for a in range(0, N, step):
                n = min(step, N - a)
                err = int(cudart.cudaHostRegister(base + a, n, flags))
                if err:
                    raise RuntimeError(f"cudaHostRegister {err}")
                regs.append(base + a)
                dst[a:a + n].copy_(flat[a:a + n], non_blocking=True)
        stream.synchronize()
        for p in regs:
            cudart.cudaHostUnregister(p)
    return go


def register_parts():
    flat = src.view(-1)
    base = flat.data_ptr()
    t = [time.perf_counter()]
    cudart.cudaHostRegister(base, N, 0)
    t.append(time.perf_counter())
    with torch.cuda.stream(stream):
        dst.copy_(flat, non_blocking=True)
    stream.synchronize()
    t.append(time.perf_counter())
    cudart.cudaHostUnregister(base)
    t.append(time.perf_counter())
    return [(b - a) * 1e3 for a, b in zip(t, t[1:])]


def memcpy_threads(k):
    pin = torch.empty(N, dtype=torch.uint8, pin_memory=True).numpy()
    s = src.view(-1).numpy()
    step = -(-N // k)

    def go():
        th = [threading.Thread(target=np.copyto, args=(pin[a:a + step], s[a:a + step])) for a in range(0, N, step)]
        for x in th:
            x.start()
        for x in th:
            x.join()
    return go


if __name__ == "__main__":
    print(torch.cuda.get_device_name(), f"{N / 1e6:.1f} MB")
    report("pageable copy_ (torch)", pageable)
    report("pinned stage (upload.py)", staged)
    for flags in (0, 8):
        try:
            report(f"cudaHostRegister whole, flags {flags}, DMA, unregister", registered(flags))
        except RuntimeError as e:
            print(f"flags {flags}: {e}")
    for mb in (4, 8, 16, 33):
        report(f"cudaHostRegister chunks of {mb} MB pipelined with DMA", registered(0, mb << 20))
    parts = [register_parts() for _ in range(8)][2:]
    med = [statistics.median(p[i] for p in parts) for i in range(3)]
    print(f"register / DMA / unregister parts: {med[0]:.2f} / {med[1]:.2f} / {med[2]:.2f} ms")
    for k in (1, 2, 4, 8, 16):
        go = memcpy_threads(k)
        ts = []
        for r in range(8):
            t0 = time.perf_counter()
            go()
            ts.append((time.perf_counter() - t0) * 1e3)
        m = statistics.median(ts[2:])
        print(f"host memcpy into pinned, {k:2d} threads: {m:6.2f} ms ({N / m / 1e6:5.1f} GB/s)")
