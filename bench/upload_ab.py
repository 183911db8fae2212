"""A/B of two upload stages on a 133 MB 1080p 16-frame RGBA clip: the installed upload.py vs another version of it
given as a file (e.g. `git show REV:python/triton_autogaze/upload.py > /tmp/old.py`), alternating, 20 rounds each.

    python bench/upload_ab.py /tmp/old.py
"""
import importlib.util
import statistics
import sys
import time

import numpy as np
import torch

from triton_autogaze.upload import HostUploader as New

spec = importlib.util.spec_from_file_location("upload_old", sys.argv[1])
old = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old)
src = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 1080, 1920, 4), dtype=np.uint8))
ups = {"new": New("cuda"), "old": old.HostUploader("cuda")}
ts = {k: [] for k in ups}
for r in range(24):
    for k, up in ups.items():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        up(src)
        torch.cuda.synchronize()
        if r >= 4:
            ts[k].append((time.perf_counter() - t0) * 1e3)
print(" ".join(f"{k}: median {statistics.median(v):.2f} ms (min {min(v):.2f})" for k, v in ts.items()))
