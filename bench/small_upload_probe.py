"""Ways to move one small packed frame (224x224 RGB uint8, 150 KB: a streamed resize-224 push) from pageable host
memory to the GPU, timed side by side: torch's pageable copy, ``pin_memory()`` then an asynchronous copy (torch's
caching host allocator recycles the pinned block once its copy is done), and a persistent pinned buffer guarded
by an event.

    python bench/small_upload_probe.py [--size 224] [--iters 400]

Per variant: host us a call with no sync in the loop, then us a call with a sync after each.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
from trace_record_probe import host_and_synced  # bench/ is the script's folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=400)
    args = ap.parse_args()
    frame = np.random.default_rng(0).integers(0, 256, (1, args.size, args.size, 3), dtype=np.uint8)
    buf = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
    done = [None]

    def persistent():
        if done[0] is not None:
            done[0].synchronize()
        buf.copy_(torch.from_numpy(frame))
        out = buf.to("cuda", non_blocking=True)
        done[0] = torch.cuda.Event()
        done[0].record()
        return out

    variants = {
        "pageable .to(cuda)": lambda: torch.from_numpy(frame).to("cuda"),
        "pin_memory() + non_blocking": lambda: torch.from_numpy(frame).pin_memory().to("cuda", non_blocking=True),
        "persistent pinned buffer + event": persistent,
    }
    for name, fn in variants.items():
        host, synced = host_and_synced(fn, args.iters, warm=50)
        assert torch.equal(fn().cpu(), torch.from_numpy(frame))
        print(f"{name:36s} host {host:7.1f} us a call, with a sync {synced:7.1f} us")

if __name__ == "__main__":
    main()
