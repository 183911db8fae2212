"""Host cost of launching a captured CUDA graph, by node count and kind of launch (GPU).

    python bench/graph_launch_probe.py [--nodes 20 100 400] [--reps 50]

For graphs of N one-program kernels in a line: the host ms of ``CUDAGraph.replay`` (cudaGraphLaunch returns
once the driver has queued the graph) and the wall ms of a replay + sync, for (a) torch's ``fill_`` kernels,
(b) a Triton kernel launched plainly, (c) the same kernel with programmatic dependent launch (PDL, the engine's
default, ``kernels/_pdl.py``), (d) PDL launches 17 a step with each step after the first nested in the step
before's IF node (``engine/branches.py``), as the engine captures a frame with task-loss stopping (flags on: every
body runs; off: only the first step's). Tells whether a graph's launch cost grows with its nodes and whether PDL edges
change that (a streamed push launches one frame's graph of ~360 nodes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack

import numpy as np
import torch


def timed_replays(g: torch.cuda.CUDAGraph, reps: int) -> tuple[float, float]:
    host, wall = [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        g.replay()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        host.append((t1 - t) * 1e3)
        wall.append((time.perf_counter() - t) * 1e3)
    return float(np.median(host)), float(np.median(wall))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, nargs="+", default=[20, 100, 400])
    ap.add_argument("--reps", type=int, default=50)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    from triton_autogaze.engine.branches import Branches
    from triton_autogaze.kernels import _pdl

    t = torch.zeros(1, dtype=torch.int32, device="cuda")
    f = torch.zeros(1, device="cuda")
    kinds = {
        "torch fill_": lambda: f.fill_(1.0),
        "triton plain": lambda: _pdl._increment_kernel[(1,)](t, GDC=0, num_warps=1),
        "triton PDL": lambda: _pdl._increment_kernel[(1,)](t, GDC=2, launch_pdl=True, num_warps=1),
    }
    s = torch.cuda.Stream()
    br = Branches.for_device(torch.device("cuda"))
    flags = torch.ones(1, dtype=torch.int32, device="cuda")
    for name, launch in kinds.items():
        launch()  # compile
        torch.cuda.synchronize()
        for n in args.nodes:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.stream(s):
                launch()
                s.synchronize()
                with torch.cuda.graph(g, stream=s):
                    for _ in range(n):
                        launch()
            g.replay()
            torch.cuda.synchronize()
            host, wall = timed_replays(g, args.reps)
            print(f"{name:13s} {n:4d} nodes: replay host {host:.3f} ms ({host / n * 1e3:.2f} us a node), "
                  f"replay + sync {wall:.3f} ms", flush=True)
    if not br.supported():
        print("IF nodes not supported here:", br.reason)
        return
    launch = kinds["triton PDL"]
    for n in args.nodes:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.stream(s):
            s.synchronize()
            with torch.cuda.graph(g, stream=s), ExitStack() as steps:
                for i in range(n):
                    if i and i % 17 == 0:
                        steps.enter_context(br.if_any(flags))
                    launch()
        for on in (1, 0):
            flags.fill_(on)
            g.replay()
            torch.cuda.synchronize()
            host, wall = timed_replays(g, args.reps)
            print(f"PDL in IF nodes, flags {on}, {n:4d} kernels: replay host {host:.3f} ms "
                  f"({host / n * 1e3:.2f} us a kernel), replay + sync {wall:.3f} ms", flush=True)
    print("AUTOGAZE_PDL", os.environ.get("AUTOGAZE_PDL", "unset"))


if __name__ == "__main__":
    main()
