"""Do independent row groups of one engine call overlap on the GPU? (probe for row-group streams)

    python bench/concurrency_probe.py [--rows 45 8] [--groups 2 3] [--tau none 0.7] [--iters 5]

For each row count and threshold: one call of all rows as one group, then the same call in G row groups
(``TritonGenerator.row_group_rows`` / ``max_row_groups``: each group's captured call replayed on its own CUDA
stream, all enqueued before the call's sync). Decode
attention is bandwidth-bound and the row-wise products are latency chains, so two groups' launches may fill
each other's gaps. Prints median wall ms of each (alternating, same process) and checks the grouped tokens
equal the single call's (independent semantics: rows never see each other).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_gpu import clip_vision, fixture_dir  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.reference.generate import frame_budget  # noqa: E402


def run_with(gen, v, budgets, tau, groups):
    """One call of all rows in ``groups`` row groups (1: the engine without groups)."""
    gen.row_group_rows, gen.max_row_groups = (None, 1) if groups == 1 else (1, groups)
    gen.stopping_row_groups = None  # the same count with task-loss stopping
    out, st = gen.run(v, budgets, tau, "independent")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[45, 8])
    ap.add_argument("--groups", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--tau", nargs="+", default=["none", "0.7"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--frames", type=int, default=16, help="frames of the clip (fewer: a quick CPU check)")
    ap.add_argument("--bf16", action="store_true", help="the engine in bf16 (its default: 2 groups from 32 rows)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    fx = fixture_dir()
    cfg, w, _ = load_checkpoint(fx / "model")
    v1 = clip_vision(fx, w, cfg, dev)[:, :args.frames].contiguous()
    T = v1.shape[1]
    M = frame_budget(0.75, cfg.num_vision_tokens_each_frame)
    budgets = [M] * T
    g = torch.Generator(device="cpu").manual_seed(0)
    gen = TritonGenerator(w, cfg, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"
    print(f"{name}  rows  tau  | single ms | groups: ms (tokens)")
    for rows in args.rows:
        noise = torch.randn(rows, T, *v1.shape[2:], generator=g).to(dev) * 0.05
        noise[0] = 0
        v = (v1 + noise).contiguous()
        for ts in args.tau:
            tau = None if ts == "none" else torch.full((rows, T), float(ts), device=dev)

            fns = {"single": lambda: run_with(gen, v, budgets, tau, 1)}
            for G in args.groups:
                fns[f"G{G}"] = (lambda G=G: run_with(gen, v, budgets, tau, G))
            ref = None
            res = {}
            for name, fn in fns.items():  # eager (compiles), then the capture
                r = fn()
                r = fn()
                sync()
                if name == "single":
                    ref = r.padded.ids
                else:
                    res[name] = "EQUAL" if torch.equal(r.padded.ids, ref) else "DIFFER"
            times = {k: [] for k in fns}
            for _ in range(args.iters):
                for name, fn in fns.items():
                    sync()
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    times[name].append((time.perf_counter() - t0) * 1e3)
            line = " | ".join(f"{k} {statistics.median(t):.2f}" + (f" ({res[k]})" if k in res else "")
                              for k, t in times.items())
            print(f"rows {rows:3d} tau {ts:>5}: {line}", flush=True)


if __name__ == "__main__":
    main()
