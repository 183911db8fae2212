"""Repro of the GPU-only crash: one model, generate(B=1) then generate(B=8) (independent, full budget).

    python bench/repro_two_batches.py [engine|model] [B1 B2 ...]
"""
import sys
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
from triton_autogaze import AutoGaze  # noqa: E402

which = sys.argv[1] if len(sys.argv) > 1 else "model"
order = [int(b) for b in sys.argv[2:]] or [1, 8]
m = AutoGaze.from_pretrained(REPO / "tests" / "fixtures" / "model", device="cuda", backend="triton",
                             use_cuda_graph=which != "model-nograph")
import time  # noqa: E402
if which == "model-notrace":
    m._trace = lambda out, tau: None
g = torch.Generator().manual_seed(0)
for B in order:
    video = (torch.rand(B, 16, 3, 224, 224, generator=g) * 4 - 2).cuda()
    try:
        for i in range(3):  # eager, capture + replay, replay
            t0 = time.perf_counter()
            if which.startswith("model"):
                m.generate(video, gazing_ratio=0.75)
            elif which == "engine-fp32":
                from triton_autogaze.precision import exact_fp32
                with torch.inference_mode(), exact_fp32():
                    v = m.encode(video)[0]
                    m._generator().run(v, m.budgets(0.75, 16), None, "independent")
            elif which == "engine-inf":
                with torch.inference_mode():
                    v = m.encode(video)[0]
                    m._generator().run(v, m.budgets(0.75, 16), None, "independent")
            else:
                v = m.encode(video)[0]
                m._generator().run(v, m.budgets(0.75, 16), None, "independent")
            torch.cuda.synchronize()
            print(which, "B", B, "call", i, "ok", f"{(time.perf_counter() - t0) * 1e3:.1f} ms", flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc(limit=-6)
        break
