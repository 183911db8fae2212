"""Where the resize-224 end-to-end time goes: the model on frames already on the GPU, fed 16 / 8 / 4 / 2 frames
at a time (run_packed_chunks), then the host clip end to end with a timeline of CUDA events (upload groups
ready, each segment's start, the end), on the bench's 1080p 16-frame RGBA clip, for each upload thread count.

    python bench/overlap_probe.py [--threads 8 16] [--overlap 0 4 2]   (overlap 0: no overlap)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture_data import LOCAL  # noqa: E402
from triton_autogaze.demo import synthesize_clip  # noqa: E402
from triton_autogaze.pipeline import AutoGazePipeline, GazeOptions  # noqa: E402
from triton_autogaze.upload import HostUploader  # noqa: E402


def median_ms(fn, rounds=8, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[8])
    ap.add_argument("--overlap", type=int, nargs="+", default=[0, 8, 2])
    ap.add_argument("--timeline", action="store_true", help="print each run's host / GPU timeline")
    args = ap.parse_args()
    rgb = synthesize_clip(16, 1080, 1920, seed=0)
    clip = np.ascontiguousarray(np.concatenate([rgb, np.full(rgb.shape[:-1] + (1,), 255, np.uint8)], -1))
    pipe = AutoGazePipeline.from_pretrained(LOCAL / "model", device="cuda")
    opts = GazeOptions(gazing_ratio=0.75, task_loss_requirement=0.7)
    dev = torch.from_numpy(clip).cuda()
    print(f"device {torch.cuda.get_device_name()}")
    print(f"model on device frames, one call (run_packed): {median_ms(lambda: pipe.run_packed(dev, opts)):.2f} ms")
    for chunk in (8, 4, 2):
        ms = median_ms(lambda: pipe.run_packed_chunks(dev, opts, chunk))
        print(f"model on device frames, fed {chunk} at a time: {ms:.2f} ms")
    for threads in args.threads:
        pipe.uploader = up = HostUploader("cuda", threads=threads)
        print(f"upload threads {threads}: upload alone (staged) "
              f"{median_ms(lambda: up(torch.from_numpy(clip))):.2f} ms")
        for chunk in args.overlap:
            pipe.overlap_frames = chunk or None
            ms = median_ms(lambda: pipe.trace_rgba_clip(clip, **vars_of(opts)))
            print(f"  end to end, overlap {chunk or None}: {ms:.2f} ms")
            if args.timeline:
                timeline(pipe, clip, opts)
    pipe.overlap_frames = None


def timeline(pipe, clip, opts) -> None:
    """One more run: host times of each segment's feed and CUDA events at each segment start."""
    marks = []
    orig = pipe.packed_tiles

    def spy(frames, grid):
        f = orig(frames, grid)

        def tiles(t):
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            marks.append((f"frames {frames.shape[0]} fed", time.perf_counter(), e))
            return f(t)
        return tiles

    pipe.packed_tiles = spy
    s = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    h0 = time.perf_counter()
    s.record()
    pipe.trace_rgba_clip(clip, **vars_of(opts))
    e = torch.cuda.Event(enable_timing=True)
    e.record()
    torch.cuda.synchronize()
    pipe.packed_tiles = orig
    for name, h, ev in marks:
        print(f"   {name}: host {1e3 * (h - h0):6.2f} ms, GPU {s.elapsed_time(ev):6.2f} ms")
    print(f"   end: host {1e3 * (time.perf_counter() - h0):6.2f} ms, GPU {s.elapsed_time(e):6.2f} ms")


def vars_of(opts: GazeOptions) -> dict:
    return dict(mode=opts.mode, gazing_ratio=opts.gazing_ratio, task_loss_requirement=opts.task_loss_requirement)


if __name__ == "__main__":
    main()
