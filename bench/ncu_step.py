"""One eager engine call (the 16-frame 224 px fixture clip, full budget) for Nsight Compute: hardware counters of
one decode step's kernels at a realistic cache length (GPU only).

    ncu --clock-control none -k regex:'attention|rmsnorm_qkv|mlp_|heads_select' \
        --launch-skip $(python bench/ncu_step.py --skip-for 12 6) --launch-count 17 --set full \
        -o REPORT python bench/ncu_step.py --rows 1

``--skip-for F S`` prints how many of those kernels come before decode step S (1..19) of frame F (0..15): per
frame a prefill (4 layers x 4 decoder kernels), then 20 selections with 19 decode feeds (4 x 4) between them,
so one decode step is 17 consecutive launches (its 16 decoder kernels and the selection after them).
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_gpu import clip_vision, fixture_dir  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.reference.generate import frame_budget  # noqa: E402

PER_STEP = 17  # 4 layers x (rmsnorm_qkv_rope, attention, mlp_gate_up, mlp_down) + heads_select


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--skip-for", type=int, nargs=2, metavar=("FRAME", "STEP"), default=None)
    args = ap.parse_args()
    steps = -(-frame_budget(0.75, 265) // 10)  # selections a frame at full budget (20)
    if args.skip_for is not None:
        f, s = args.skip_for
        print(f * steps * PER_STEP + PER_STEP * s)  # prefill + first selection = one step's worth of launches
        return
    cfg, w, _ = load_checkpoint(fixture_dir() / "model")
    dev = torch.device("cuda")
    v = clip_vision(fixture_dir(), w, cfg, dev)
    vb = v.expand(args.rows, *v.shape[1:]).contiguous()
    budgets = [frame_budget(0.75, cfg.num_vision_tokens_each_frame)] * v.shape[1]
    gen = TritonGenerator(w, cfg, dtype=torch.bfloat16 if args.bf16 else torch.float32, use_cuda_graph=False)
    out, st = gen.run(vb, budgets, None, "upstream" if args.rows == 1 else "independent")
    torch.cuda.synchronize()
    print(f"rows {args.rows}: {sum(int(f.ids.shape[1]) for f in out.frames)} token slots, f64 dots {gen.f64_dots}")


if __name__ == "__main__":
    main()
