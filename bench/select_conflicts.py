"""How often does a step's greedy choice need its sequential chain? (CPU probe, torch reference)

    python bench/select_conflicts.py [--frames 16] [--ratio 0.75]

`heads_select` chooses a step's K ids one position after another: position i takes the argmax of its logits
with the frame's earlier ids, EOS and the ids of positions < i banned (SPEC §7.2). Every position's argmax over
the frame-level bans alone (a_i) can be taken at once; position i needs its own masked argmax only when a_i is
one of c_0..c_{i-1} (a "conflict"); otherwise c_i = a_i exactly (same value, same lowest-id tie rule). This
counts the conflicts of a full-budget generation of the clip224_t16 fixture with the fixture checkpoint
(random weights) on the CPU reference: the share of positions and of steps a conflict-free fast path would
take, before any kernel is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import triton_autogaze.reference.generate as G  # noqa: E402
from engine_gpu import clip_vision, fixture_dir  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.reference.decoder import Decoder  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--ratio", type=float, default=0.75)
    args = ap.parse_args()
    fx = fixture_dir()
    cfg, w, _ = load_checkpoint(fx / "model")
    dec = Decoder(w, cfg)
    v = clip_vision(fx, w, cfg, "cpu")[:, : args.frames]
    stats = {"positions": 0, "conflicts": 0, "steps": 0, "steps_with_conflict": 0, "first_conflict": []}
    real = G.choose_step

    def counting(logits, ids, budget, eos):
        chosen, conf, cut = real(logits, ids, budget, eos)
        B, K, _ = logits.shape
        base = logits.clone()
        if ids.shape[1]:
            base.scatter_(2, ids[:, None, :].expand(B, K, ids.shape[1]), G.NEG_INF)
        base[:, :, eos] = G.NEG_INF
        a = base.argmax(-1)  # [B, K]: each position's argmax over the frame-level bans only
        for b in range(B):
            n = chosen.shape[1]
            hits = [i for i in range(1, n) if int(a[b, i]) in chosen[b, :i].tolist()]
            for i in range(n):  # where there is no conflict the fast path's id is the sequential one
                if i not in hits and i > 0 and int(a[b, i]) != int(chosen[b, i]):
                    raise AssertionError(f"a conflict-free position disagrees: {i}")
            stats["positions"] += max(n - 1, 0)
            stats["conflicts"] += len(hits)
            stats["steps"] += 1
            stats["steps_with_conflict"] += bool(hits)
            if hits:
                stats["first_conflict"].append(hits[0])
        return chosen, conf, cut

    G.choose_step = counting
    budget = G.frame_budget(args.ratio, cfg.num_vision_tokens_each_frame)
    G.generate_upstream(dec, cfg, v, [budget] * v.shape[1], None, G.new_state(dec, 1, 16))
    p, s = stats["positions"], stats["steps"]
    fc = stats["first_conflict"]
    print(f"frames {v.shape[1]}, budget {budget} a frame: {s} steps, {p} positions after the first")
    hit = stats["steps_with_conflict"]
    print(f"conflicts: {stats['conflicts']} positions ({100 * stats['conflicts'] / max(p, 1):.1f}%), "
          f"{hit} steps with one or more ({100 * hit / max(s, 1):.1f}%)")
    if fc:
        print(f"first conflict at position: mean {sum(fc) / len(fc):.1f}, min {min(fc)}")


if __name__ == "__main__":
    main()
