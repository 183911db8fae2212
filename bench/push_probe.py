"""Where a streamed 224 px push's time goes (GPU): ``GazeStream.push`` of random frames, whole and in parts.

    python bench/push_probe.py [--frames 16] [--tau 0.7 none] [--bf16] [--profile] [--replay-time]
                               [--gpu-time [--trace DIR]]

Per threshold: ms a push over 5 rounds of ``--frames`` pushes (sorted), then the pipeline's parts of a push
(``packed`` upload, ``plan``, ``packed_tiles`` resize, ``_gaze_tiles`` encode + engine + its sync, ``assemble``
the trace), each timed with a device sync before and after (so the parts add up to more than a push); with
``--profile`` the host functions that take the most time (cProfile over two rounds); with ``--gpu-time`` the
device's busy time a push (kernels and copies summed by the torch profiler: what a push could shrink to if
the host kept ahead of the device).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture_data import LOCAL  # noqa: E402

from triton_autogaze import AutoGaze  # noqa: E402
from triton_autogaze.pipeline import AutoGazePipeline  # noqa: E402

PARTS = ("packed", "plan", "packed_tiles", "_gaze_tiles", "assemble")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--tau", nargs="+", default=["0.7", "none"], help="task-loss thresholds ('none': full budget)")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--gpu-time", action="store_true", help="also the device's busy time a push (torch profiler)")
    ap.add_argument("--replay-time", action="store_true",
                    help="also the host time of each CUDA graph's replay call (cudaGraphLaunch), per graph")
    ap.add_argument("--trace", metavar="DIR", help="with --gpu-time: write each threshold's profiler timeline "
                    "(Chrome trace JSON) into DIR")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    pipe = AutoGazePipeline(AutoGaze.from_pretrained(LOCAL / "model", device="cuda", backend="triton", dtype=dtype))
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, 224, 224, 3), dtype=np.uint8)
    for tau in [None if t == "none" else float(t) for t in args.tau]:
        def run():
            s = pipe.stream(mode="resize-224", gazing_ratio=0.75, task_loss_requirement=tau)
            for f in frames:
                s.push(f)
            torch.cuda.synchronize()

        for _ in range(3):  # compile, capture, warm
            run()
        ms = []
        for _ in range(5):
            t0 = time.perf_counter()
            run()
            ms.append((time.perf_counter() - t0) / len(frames) * 1e3)
        print(f"tau {tau}: push {', '.join(f'{m:.3f}' for m in sorted(ms))} ms")
        if args.replay_time:
            replay_times(run)
        parts: dict[str, list[float]] = {}
        for name in PARTS:
            def timed(*a, _fn=getattr(pipe, name), _name=name, **k):
                torch.cuda.synchronize()
                t = time.perf_counter()
                r = _fn(*a, **k)
                torch.cuda.synchronize()
                parts.setdefault(_name, []).append((time.perf_counter() - t) * 1e3)
                return r
            setattr(pipe, name, timed)
        try:
            for _ in range(3):
                run()
        finally:
            for name in PARTS:
                delattr(pipe, name)  # back to the class's methods
        print("  parts, median ms a push: " + ", ".join(f"{k} {np.median(v):.3f}" for k, v in parts.items()))
        if args.profile:
            pr = cProfile.Profile()
            pr.enable()
            run()
            run()
            pr.disable()
            out = io.StringIO()
            pstats.Stats(pr, stream=out).sort_stats("tottime").print_stats(20)
            pstats.Stats(pr, stream=out).sort_stats("cumulative").print_stats(40)
            print(out.getvalue())
        if args.gpu_time:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run()
            busy = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3 / len(frames)
            if args.trace:
                Path(args.trace).mkdir(parents=True, exist_ok=True)
                prof.export_chrome_trace(str(Path(args.trace) / f"push_tau_{tau}.json"))
            print(f"  device busy {busy:.3f} ms a push (kernels and copies, summed)")


def replay_times(run) -> None:
    """Host ms of each captured graph's ``replay`` over one round, per graph (the call returns once the driver
    has queued the graph; bench/graph_launch_probe.py measures how that cost depends on a graph's nodes)."""
    times: dict[int, list[float]] = {}
    orig = torch.cuda.CUDAGraph.replay

    def timed(self):
        t = time.perf_counter()
        orig(self)
        times.setdefault(id(self), []).append((time.perf_counter() - t) * 1e3)

    torch.cuda.CUDAGraph.replay = timed
    try:
        run()
    finally:
        torch.cuda.CUDAGraph.replay = orig
    for v in sorted(times.values(), key=lambda v: -float(np.median(v))):
        print(f"  graph replay: {len(v)} calls, host ms median {np.median(v):.3f} (min {min(v):.3f}, max {max(v):.3f})")


if __name__ == "__main__":
    main()
