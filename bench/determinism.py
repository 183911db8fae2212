"""Does the engine give the same tokens, bit for bit, on every call with the same input? (GPU)

    python3 bench/determinism.py [B] [T] [--split-k N] [--no-fence] [--only SEM] [--quick]
(N = the generator's decode/prefill slice, 0 = off; --no-fence launches attention / heads_select without the
per-thread fences around their tickets, for the A/B.)
Runs one seeded random batch (B rows x T frames, task-loss stopping at tau -2, and full budget) several times:
eagerly on fresh generators, eagerly on one generator (pooled workspaces), and with CUDA graphs (eager,
captured, replayed calls), and prints for each call its token count and whether ids and confidences equal the
first call's. A difference between eager calls points at a race between programs; one only in graph calls at
the capture; one only after the first call at state left in a pooled workspace.
"""

import os
import sys
from pathlib import Path

if "--no-fence" in sys.argv:  # read by kernels/_fence.py at import: the A/B for the tickets' fences
    os.environ["AUTOGAZE_NO_FENCE"] = "1"

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fixture_data import model_dir  # noqa: E402

from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine.generator import TritonGenerator  # noqa: E402


def same(a, b) -> bool:
    return len(a.frames) == len(b.frames) and all(
        torch.equal(x.ids, y.ids) and torch.equal(x.confidence, y.confidence) for x, y in zip(a.frames, b.frames))


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("B", type=int, nargs="?", default=8)
    ap.add_argument("T", type=int, nargs="?", default=4)
    ap.add_argument("--split-k", type=int, default=None, help="decode and prefill product slice (default: engine's)")
    ap.add_argument("--quick", action="store_true", help="one eager call of one case (for compute-sanitizer)")
    ap.add_argument("--no-fence", action="store_true", help="launch the ticket kernels without their fences")
    ap.add_argument("--only", default="", help="run only the cases of this semantics ('upstream' / 'independent')")
    args = ap.parse_args()
    B, T = args.B, args.T

    def make(graphs):
        g = TritonGenerator(w, cfg, use_cuda_graph=graphs)
        if args.split_k is not None:
            g.decode_split_k = g.prefill_split_k = args.split_k
        return g

    cfg, w, _ = load_checkpoint(model_dir())
    v = (torch.randn(B, T, cfg.num_tokens, cfg.decoder.hidden_size, generator=torch.Generator().manual_seed(0))
         * 0.5).cuda()
    if args.quick:
        out = make(False).run(v, [198] * T, None, "independent")[0]
        print(f"B={B} T={T} one eager call: {sum(int((f.ids != cfg.eos_id).sum()) for f in out.frames)} tokens")
        return
    for sem, tau in (("upstream", -2.0), ("independent", -2.0), ("independent", None)):
        if args.only not in sem:
            continue
        taut = None if tau is None else torch.full((B, T), tau, device="cuda")
        runs = []
        for i in range(3):
            runs.append(("fresh eager", make(False).run(v, [198] * T, taut, sem)[0]))
        g = make(False)
        runs += [("pooled eager", g.run(v, [198] * T, taut, sem)[0]) for _ in range(3)]
        g = make(True)
        runs += [("graphs", g.run(v, [198] * T, taut, sem)[0]) for _ in range(5)]
        first = runs[0][1]
        line = " ".join(f"{n}:{sum(int((f.ids != cfg.eos_id).sum()) for f in o.frames)}{'' if same(o, first) else '!'}"
                        for n, o in runs)
        print(f"B={B} T={T} fence {'off' if args.no_fence else 'on'} {sem:11s} tau {tau}: {line}", flush=True)
    print("('!' = differs from the first call)")


if __name__ == "__main__":
    main()
