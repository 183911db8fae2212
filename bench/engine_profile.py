"""Per-kernel GPU time of one engine call (16-frame 224px clip, full budget), eager launches, CUDA profiler."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_gpu import clip_vision, fixture_dir  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.reference.generate import frame_budget  # noqa: E402

fx = fixture_dir()
cfg, w, _ = load_checkpoint(fx / "model")
v = clip_vision(fx, w, cfg, "cuda")
budgets = [frame_budget(0.75, 265)] * v.shape[1]
gen = TritonGenerator(w, cfg, use_cuda_graph=False)
out, st = gen.run(v, budgets, None, "upstream")
del st
torch.cuda.synchronize()
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as p:
    out, st = gen.run(v, budgets, None, "upstream")
    torch.cuda.synchronize()
print(p.key_averages().table(sort_by="cuda_time_total", row_limit=15))
