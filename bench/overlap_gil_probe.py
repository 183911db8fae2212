"""Why the resize-224 pipeline's first frames wait: host times of each upload wait (entry -> return) in a staged
overlapped call, then the main thread's slow calls (> 0.3 ms, sys.setprofile) before the first wait.

    python bench/overlap_gil_probe.py
"""
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixture_data import LOCAL  # noqa: E402
from triton_autogaze.demo import synthesize_clip  # noqa: E402
from triton_autogaze.pipeline import AutoGazePipeline  # noqa: E402
import triton_autogaze.upload as U  # noqa: E402

rgb = synthesize_clip(16, 1080, 1920, seed=0)
clip = np.ascontiguousarray(np.concatenate([rgb, np.full(rgb.shape[:-1] + (1,), 255, np.uint8)], -1))
pipe = AutoGazePipeline.from_pretrained(LOCAL / "model", device="cuda")
pipe.overlap_frames = int(sys.argv[1]) if len(sys.argv) > 1 else 2
log, slow, T0, first = [], [], [0.0], [True]
orig_wait = U.StagedUpload.wait


def wait(self, stop):
    a = time.perf_counter() - T0[0]
    first[0] = False
    orig_wait(self, stop)
    log.append((stop, a * 1e3, (time.perf_counter() - T0[0]) * 1e3))


U.StagedUpload.wait = wait
stack = []


def prof(frame, event, arg):
    if not first[0]:
        return
    if event in ("call", "c_call"):
        stack.append(time.perf_counter())
    elif event in ("return", "c_return", "c_exception") and stack:
        t = stack.pop()
        d = time.perf_counter() - t
        if d > 3e-4:
            name = arg.__qualname__ if event != "return" and hasattr(arg, "__qualname__") else frame.f_code.co_name
            slow.append((f"{frame.f_code.co_filename.split('/')[-1]}:{frame.f_lineno} {name}", d * 1e3,
                         (t - T0[0]) * 1e3))


for r in range(5):
    torch.cuda.synchronize()
    log.clear()
    slow.clear()
    first[0] = True
    T0[0] = time.perf_counter()
    if r == 4:
        sys.setprofile(prof)
    pipe.trace_rgba_clip(clip, gazing_ratio=0.75, task_loss_requirement=0.7)
    sys.setprofile(None)
    torch.cuda.synchronize()
    tot = (time.perf_counter() - T0[0]) * 1e3
    print(f"round {r}: total {tot:.2f} ms; waits", " ".join(f"{s}:{a:.1f}->{b:.1f}" for s, a, b in log[:9]))
for name, d, t in slow[-40:]:
    print(f"   at {t:6.2f} ms: {d:6.2f} ms  {name}")
