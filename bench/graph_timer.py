"""Time a GPU workload as a CUDA graph replay (the launch cost the engine sees), for the probe scripts."""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def graph_us(fn: Callable[[], None], per: int = 50, reps: int = 5) -> float:
    """Median microseconds per ``fn()`` call, over ``reps`` replays of one graph holding ``per`` calls.

    ``fn`` runs once eagerly on a side stream first (compiles kernels, as torch's graph docs advise)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(per):
            fn()
    g.replay()
    ts = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        g.replay()
        end.record()
        torch.cuda.synchronize()
        ts.append(start.elapsed_time(end) * 1e3 / per)
    return statistics.median(ts)
