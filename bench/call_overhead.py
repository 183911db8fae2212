"""Where one model call's time goes when a clip is fed a few frames at a time (streaming: 1 frame a call).

Runs ``AutoGaze._generate`` the way ``GazeStream.push`` and ``run_packed_chunks`` do (the KV and conv caches carried
across calls) on random normalised 224 px frames, after two warm passes (the second captures the CUDA graphs),
and reports per call:

- ``wall``: the call as a user sees it (no extra syncs; its one host sync is inside ``run``);
- the same call cut into parts, each part followed by a device sync so that its GPU work is counted in it:
  ``encode`` (patch embedding, conv cache), ``execute`` (graph replay or eager launches), ``collect`` (the host
  sync, per-frame outputs) and what is left (``run``'s checks, plan, workspace, input copies).

    python bench/call_overhead.py [--frames-per-call 1] [--frames 16] [--rows 1] [--ratio 0.75] [--tau 0.7] [--bf16]

Session 6 measured ~1.2 ms for each extra call on the H100 (bench/RESULTS.md section 4); the streaming target is
1 ms a 224 px frame. On a CPU this times the torch backend (no Triton, no graphs).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixture_data import LOCAL  # noqa: E402

from triton_autogaze.model import AutoGaze, thresholds  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class PartTimer:
    """Wraps the generator's run stages; with ``split`` each stage ends with a device sync and is timed."""

    def __init__(self, gen, dev: torch.device):
        self.gen, self.dev, self.split = gen, dev, False
        self.times: dict[str, list[float]] = {}
        for name in ("_execute", "_collect"):
            if hasattr(gen, name):
                setattr(gen, name, self._wrap(name, getattr(gen, name)))

    def _wrap(self, name, fn):
        def timed(*a, **k):
            if not self.split:
                return fn(*a, **k)
            _sync(self.dev)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            _sync(self.dev)
            self.times.setdefault(name, []).append(time.perf_counter() - t0)
            return out
        return timed

    def add(self, name: str, seconds: float) -> None:
        self.times.setdefault(name, []).append(seconds)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames-per-call", type=int, default=1)
    ap.add_argument("--frames", type=int, default=16, help="frames of the clip (the context restarts after it)")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--ratio", type=float, default=0.75)
    ap.add_argument("--tau", type=float, default=0.7, help="task-loss threshold (nan: none)")
    ap.add_argument("--passes", type=int, default=5, help="timed passes over the clip")
    ap.add_argument("--bf16", action="store_true", help="bf16 weights, KV cache and tensor-core products (GPU)")
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoGaze.from_pretrained(LOCAL / "model", device=dev,
                                     dtype=torch.bfloat16 if args.bf16 else torch.float32)
    gen = model._generator()
    timer = PartTimer(gen, dev)
    g = torch.Generator().manual_seed(0)
    T, F, B = args.frames, args.frames_per_call, args.rows
    video = torch.randn(B, T, 3, 224, 224, generator=g).to(dev)
    budgets = model.budgets(args.ratio, T)
    tau = None if args.tau != args.tau else thresholds(args.tau, B, T, dev)
    calls = [(a, min(T, a + F)) for a in range(0, T, F)]

    def one_pass(split: bool) -> list[float]:
        timer.split = split
        walls = []
        state = conv = None
        for a, b in calls:
            _sync(dev)
            t0 = time.perf_counter()
            if split:
                with torch.inference_mode():
                    vision, conv = model.encode(video[:, a:b], conv)
                _sync(dev)
                timer.add("encode", time.perf_counter() - t0)
                with torch.inference_mode():
                    _, state = gen.run(vision, budgets[a:b], None if tau is None else tau[:, a:b], "independent",
                                       state)
            else:
                res = model._generate(video[:, a:b], budgets[a:b], None if tau is None else tau[:, a:b],
                                      "independent", state, conv)
                state, conv = res.state, res.conv_cache
            _sync(dev)
            walls.append(time.perf_counter() - t0)
        return walls

    for _ in range(2):  # compile, then capture
        one_pass(False)
        one_pass(True)
    timer.times.clear()
    walls = [w for _ in range(args.passes) for w in one_pass(False)]
    split_walls = [w for _ in range(args.passes) for w in one_pass(True)]
    ms = lambda xs: statistics.median(xs) * 1e3  # noqa: E731
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"device {name}  backend {model.backend}  dtype {model.dtype}  rows {B}  frames {T} in calls of {F}  "
          f"ratio {args.ratio}  "
          f"tau {args.tau}")
    print(f"wall per call        {ms(walls):8.3f} ms   per clip {ms(walls) * len(calls):8.2f} ms")
    print(f"split wall per call  {ms(split_walls):8.3f} ms   (each part synced)")
    parts = {"encode": "encode", "_execute": "execute", "_collect": "collect"}
    for key, label in parts.items():
        if key in timer.times:
            print(f"  {label:18s} {ms(timer.times[key]):8.3f} ms")
    n = len(split_walls)
    rest = [split_walls[i] - sum(timer.times[k][i] for k in parts if k in timer.times) for i in range(n)]
    print(f"  {'setup and the rest':18s} {ms(rest):8.3f} ms   (run's checks, plan, workspace, input copies)")


if __name__ == "__main__":
    main()
