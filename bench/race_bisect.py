"""Which kernel launch makes repeated engine calls differ? (GPU; finds the first nondeterministic op)

    python3 bench/race_bisect.py [B] [T] [--runs N] [--sem upstream|independent] [--tau X] [--inject K]

Runs the same seeded input (as bench/determinism.py) eagerly several times, each on a fresh generator. Every op
the generator launches (engine/ops.py) is wrapped: after it, two checksums of each tensor argument's raw bits
are taken on the device (stream-ordered, no host sync, so the kernels' concurrency is untouched). The first op
index at which a run's checksums leave the first run's is the first launch whose result depended on timing;
then the runs are repeated, cloning that op's arguments before and after it, until one differs there again,
and the differing elements are printed (index, both values, whether the inputs were equal).
``--inject K`` perturbs op K's first argument in the later runs (a self-test of the tool, CPU or GPU).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixture_data import model_dir  # noqa: E402

from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine.generator import TritonGenerator  # noqa: E402
from triton_autogaze.engine.ops import Ops  # noqa: E402

_W: dict[tuple, torch.Tensor] = {}


def named_tensors(fn, args, kwargs) -> list[tuple[str, torch.Tensor]]:
    """Every tensor an op call can read or write, by argument name (scratch objects' tensors included)."""
    bound = inspect.signature(fn).bind(*args, **kwargs)
    out = []
    for name, val in bound.arguments.items():
        if isinstance(val, torch.Tensor):
            out.append((name, val))
        elif hasattr(val, "__dict__"):
            out += [(f"{name}.{k}", v) for k, v in vars(val).items() if isinstance(v, torch.Tensor)]
    return out


def bits(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous().reshape(-1)
    if t.is_floating_point():
        t = t.view({4: torch.int32, 2: torch.int16, 8: torch.int64}[t.element_size()])
    return t.to(torch.int64)


def checksum(t: torch.Tensor) -> torch.Tensor:
    b = bits(t)
    key = (b.numel(), b.device)
    if key not in _W:
        _W[key] = torch.arange(b.numel(), device=b.device, dtype=torch.int64) % 65521 + 1
    return torch.stack([b.sum(), (b * _W[key]).sum()])


class Recorder:
    """Wraps an Ops: records per-call checksums; at op ``grab`` clones the arguments before and after."""

    def __init__(self, ops: Ops, grab: int = -1, inject: int = -1):
        self.ops, self.grab, self.inject = ops, grab, inject
        self.calls: list[tuple[str, list[str]]] = []
        self.sums: list[torch.Tensor] = []
        self.before = self.after = None

    def wrapped(self) -> Ops:
        def wrap(name, fn):
            def call(*args, **kwargs):
                i = len(self.calls)
                ts = named_tensors(fn, args, kwargs)
                if i == self.grab:
                    self.before = {n: t.clone() for n, t in ts}
                r = fn(*args, **kwargs)
                if i == self.inject:
                    ts[0][1].view(-1)[0:1].add_(1)
                if i == self.grab:
                    self.after = {n: t.clone() for n, t in ts}
                self.calls.append((name, [n for n, _ in ts]))
                self.sums.append(torch.stack([checksum(t) for _, t in ts]))
                return r
            return call

        return Ops(**{f: (wrap(f, getattr(self.ops, f)) if f != "triton" else self.ops.triton)
                      for f in Ops.__dataclass_fields__})


def run_once(w, cfg, v, T, taut, sem, grab=-1, inject=-1, backend="auto"):
    g = TritonGenerator(w, cfg, use_cuda_graph=False, backend=backend)
    rec = Recorder(g.ops, grab, inject)
    g.ops = rec.wrapped()
    out = g.run(v, [198] * T, taut, sem)[0]
    sums = [s.cpu() for s in rec.sums]
    return rec, sums, out


def first_diff(sa, sb):
    for i, (a, b) in enumerate(zip(sa, sb)):
        if a.shape != b.shape or not torch.equal(a, b):
            return i
    return None


def describe(name, a, b, before_equal):
    d = (bits(a) != bits(b)).nonzero().flatten()
    print(f"  {name}: shape {tuple(a.shape)} {a.dtype}: {d.numel()} elements differ "
          f"(inputs before the op {'equal' if before_equal else 'DIFFERENT'})")
    fa, fb = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    for k in d[:8].tolist():
        idx = []
        r = k
        for s in reversed(a.shape):
            idx.append(r % s)
            r //= s
        print(f"    [{', '.join(map(str, reversed(idx)))}]  {fa[k].item()!r}  vs  {fb[k].item()!r}")
    if d.numel():
        nz = [tuple(x.tolist()) for x in torch.stack(torch.unravel_index(d[:4096].cpu(), a.shape), 1)]
        for ax in range(a.dim()):
            vals = sorted({x[ax] for x in nz})
            print(f"    axis {ax}: {len(vals)} distinct indices, {vals[:12]}{' ...' if len(vals) > 12 else ''}")
    nonfin = (~torch.isfinite(a)).sum().item() if a.is_floating_point() else 0
    if nonfin:
        print(f"    first run holds {nonfin} non-finite values in {name}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("B", type=int, nargs="?", default=8)
    ap.add_argument("T", type=int, nargs="?", default=4)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--sem", default="independent")
    ap.add_argument("--tau", type=float, default=-2.0)
    ap.add_argument("--inject", type=int, default=-1)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    cfg, w, _ = load_checkpoint(model_dir())
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    v = (torch.randn(args.B, args.T, cfg.num_tokens, cfg.decoder.hidden_size,
                     generator=torch.Generator().manual_seed(0)) * 0.5).to(dev)
    taut = torch.full((args.B, args.T), args.tau, device=dev)
    kw = dict(backend=args.backend)
    rec0, s0, _ = run_once(w, cfg, v, args.T, taut, args.sem, **kw)
    print(f"B={args.B} T={args.T} {args.sem} tau {args.tau}: {len(s0)} op calls a run")
    hit = None
    for r in range(1, args.runs):
        _, s, _ = run_once(w, cfg, v, args.T, taut, args.sem, inject=args.inject, **kw)
        i = first_diff(s0, s)
        print(f"run {r}: " + ("same checksums" if i is None else f"first differs at op {i}"), flush=True)
        if i is not None and (hit is None or i < hit):
            hit = i
    if hit is None:
        print("no run differed")
        return
    name, argn = rec0.calls[hit]
    # which of the op's arguments differed, and how many ops of each kind came before it
    kinds = [c[0] for c in rec0.calls[:hit]]
    print(f"first differing op #{hit}: {name} (call {kinds.count(name)} of its kind; previous op "
          f"{rec0.calls[hit - 1][0] if hit else '-'})")
    ref_rec, _, _ = run_once(w, cfg, v, args.T, taut, args.sem, grab=hit, **kw)
    for r in range(args.runs * 2):
        rec, s, _ = run_once(w, cfg, v, args.T, taut, args.sem, grab=hit, inject=args.inject, **kw)
        if rec.after is None or ref_rec.after is None:
            break
        diff = [n for n in argn if not torch.equal(bits(rec.after[n]), bits(ref_rec.after[n]))]
        if not diff:
            continue
        same_in = all(torch.equal(bits(rec.before[n]), bits(ref_rec.before[n])) for n in argn)
        print(f"capture run {r}: op #{hit} {name} results differ in {diff}")
        for n in argn:
            if not torch.equal(bits(rec.before[n]), bits(ref_rec.before[n])):
                print(f"  (input {n} already differed before the op)")
        for n in diff:
            describe(n, ref_rec.after[n], rec.after[n], same_in)
        return
    print(f"op #{hit} did not differ again in {args.runs * 2} capture runs")


if __name__ == "__main__":
    main()
