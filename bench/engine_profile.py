"""Per-kernel GPU time of one engine call (16-frame 224px clip, full budget), eager launches, CUDA profiler.

    python bench/engine_profile.py [--rows 1 8] [--bf16] [--phases] [--no-flat-decode] [--tau -2]

Prints, per row count, a table of kernel name, launches, total and mean GPU time, and the sum of kernel
time against the graph-replay wall time of the same call (their gap is launch/idle time). ``--phases`` adds
the same per (phase, kernel): prefill feeds, decode feeds, selection and frame kernels, from CUDA events around
every launch of one more eager call.
"""
import dataclasses
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


def thresholds(vb: torch.Tensor, tau: float | None) -> torch.Tensor | None:
    """The engine's tau [B, T] for vision [B, T, N, C] at one threshold (None: no stopping)."""
    return None if tau is None else torch.full(vb.shape[:2], tau, device=vb.device)


def profile_rows(w, cfg, v, rows: int, dtype, flat: bool = True, tau: float | None = None) -> None:
    vb = v.expand(rows, *v.shape[1:]).contiguous()
    taut = thresholds(vb, tau)
    budgets = [frame_budget(0.75, cfg.num_vision_tokens_each_frame)] * v.shape[1]
    sem = "upstream" if rows == 1 else "independent"
    gen = TritonGenerator(w, cfg, dtype=dtype, use_cuda_graph=False)
    gen.flat_decode = flat
    out, st = gen.run(vb, budgets, taut, sem)
    del st
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
        out, st = gen.run(vb, budgets, taut, sem)
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
    gg.flat_decode = flat
    times = []
    for i in range(6):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out, st = gg.run(vb, budgets, taut, sem)
        times.append((time.perf_counter() - t0) * 1e3)
        del st
    print(f"\n== rows {rows} ({sem}) tau {tau} dtype {dtype}{'' if flat else ' per-row decode programs'}: "
          f"kernel sum {total / 1e3:.1f} ms, graph wall {statistics.median(times[2:]):.1f} ms")
    print(f"{'kernel':44s} {'calls':>6s} {'total ms':>9s} {'mean us':>8s}")
    for name, (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1])[:14]:
        print(f"{name[:44]:44s} {n:6d} {us / 1e3:9.2f} {us / n:8.1f}")


OPS = ("frame_setup", "rmsnorm_qkv_rope", "attention", "residual_norm", "mlp_gate_up", "mlp_down", "heads_select",
       "frame_finish")


def phase_times(gen, vb, budgets, sem, event=None, tau: float | None = None) -> dict:
    """{(phase, op): [launches, us]} of one eager call: CUDA events around every launch; a decoder kernel's phase
    is "prefill" when it runs over the workspace's S slots, else "decode"."""
    event = event or (lambda: torch.cuda.Event(enable_timing=True))
    rec, phase = [], ["frame"]

    def wrap(name, fn):
        def timed(*a, **k):
            s, e = event(), event()
            s.record()
            r = fn(*a, **k)
            e.record()
            rec.append(("select" if name == "heads_select" else phase[0], name, s, e))
            return r
        return timed

    base_ops, base_decoder = gen.ops, gen._decoder
    gen.ops = dataclasses.replace(base_ops, **{n: wrap(n, getattr(base_ops, n)) for n in OPS})

    def decoder(ws, n, *a, **k):
        phase[0] = "prefill" if n == ws.S else "decode"
        try:
            return base_decoder(ws, n, *a, **k)
        finally:
            phase[0] = "frame"

    gen._decoder = decoder
    try:
        out, st = gen.run(vb, budgets, thresholds(vb, tau), sem)
        del st
    finally:
        gen.ops, gen._decoder = base_ops, base_decoder
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    agg = defaultdict(lambda: [0, 0.0])
    for ph, name, s, e in rec:
        a = agg[(ph, name)]
        a[0] += 1
        a[1] += s.elapsed_time(e) * 1e3
    return dict(agg)


def print_phases(agg: dict) -> None:
    print(f"{'phase':8s} {'kernel':18s} {'calls':>6s} {'total ms':>9s} {'mean us':>8s}")
    for (ph, name), (n, us) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{ph:8s} {name:18s} {n:6d} {us / 1e3:9.2f} {us / n:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--tau", type=float, default=None, help="task-loss stopping at this threshold (default: none)")
    ap.add_argument("--phases", action="store_true", help="also split the time by phase (events per launch)")
    ap.add_argument("--flat-decode", action=argparse.BooleanOptionalAction, default=True,
                    help="decode feeds' row-wise programs of 16 tokens across rows (the engine's default)")
    args = ap.parse_args()
    fx = fixture_dir()
    cfg, w, _ = load_checkpoint(fx / "model")
    v = clip_vision(fx, w, cfg, "cuda")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    for r in args.rows:
        profile_rows(w, cfg, v, r, dtype, args.flat_decode, args.tau)
        if args.phases:
            vb = v.expand(r, *v.shape[1:]).contiguous()
            budgets = [frame_budget(0.75, cfg.num_vision_tokens_each_frame)] * v.shape[1]
            gen = TritonGenerator(w, cfg, dtype=dtype, use_cuda_graph=False)
            gen.flat_decode = args.flat_decode
            print_phases(phase_times(gen, vb, budgets, "upstream" if r == 1 else "independent", tau=args.tau))


if __name__ == "__main__":
    main()
