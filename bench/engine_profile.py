"""Per-kernel GPU time of one engine call (16-frame 224px clip, full budget), eager launches, CUDA profiler.

    python bench/engine_profile.py [--rows 1 8] [--bf16]

Prints, per row count, a table of kernel name, launches, total and mean GPU time, and the sum of kernel
time against the graph-replay wall time of the same call (their gap is launch/idle time).
"""
import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_gpu import clip_vision, fixture_dir  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.reference.generate import frame_budget  # noqa: E402


def profile_rows(w, cfg, v, rows: int, dtype) -> None:
    vb = v.expand(rows, *v.shape[1:]).contiguous()
    budgets = [frame_budget(0.75, cfg.num_vision_tokens_each_frame)] * v.shape[1]
    sem = "upstream" if rows == 1 else "independent"
    gen = TritonGenerator(w, cfg, dtype=dtype, use_cuda_graph=False)
    out, st = gen.run(vb, budgets, None, sem)
    del st
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        out, st = gen.run(vb, budgets, None, sem)
        torch.cuda.synchronize()
    del st
    agg = defaultdict(lambda: [0, 0.0])
    for e in p.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            a = agg[e.name]
            a[0] += 1
            a[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    total = sum(a[1] for a in agg.values())
    gg = TritonGenerator(w, cfg, dtype=dtype, use_cuda_graph=True)
    times = []
    for i in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out, st = gg.run(vb, budgets, None, sem)
        times.append((time.perf_counter() - t0) * 1e3)
        del st
    print(f"\n== rows {rows} ({sem}) dtype {dtype}: kernel sum {total / 1e3:.1f} ms, graph wall "
          f"{statistics.median(times[2:]):.1f} ms")
    print(f"{'kernel':44s} {'calls':>6s} {'total ms':>9s} {'mean us':>8s}")
    for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"{name[:44]:44s} {n:6d} {us / 1e3:9.2f} {us / n:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    fx = fixture_dir()
    cfg, w, _ = load_checkpoint(fx / "model")
    v = clip_vision(fx, w, cfg, "cuda")
    for r in args.rows:
        profile_rows(w, cfg, v, r, torch.bfloat16 if args.bf16 else torch.float32)


if __name__ == "__main__":
    main()
