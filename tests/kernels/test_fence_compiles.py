"""What only real hardware depends on, checked in compiled sm_90 code: the ticket kernels' fences, the frame
kernels' barriers. The GPU-only path of the ticket kernels (inline PTX fences, ``FENCE=True``) compiles for an
H100 (sm_90).

The interpreter never runs that path, so CI compiles it ahead of time with Triton's CUDA backend (ptxas ships
in Triton's wheel; no GPU needed), in a process without TRITON_INTERPRET, and checks that a fence sits before
the ticket atomic (release: each thread's partial results) and after it (acquire: before the merge reads).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def test_ticket_kernels_compile_with_fences():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    script = Path(__file__).resolve().parents[1] / "ptx_compile.py"
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if "skip" in res:
        pytest.skip(f"this Triton cannot compile for sm_90 here: {res['skip']}")
    for name in ("attention", "heads_select"):
        assert res[name] == {"cubin": True, "before_ticket": True, "after_ticket": True}, (name, res[name])
    # frame_setup / frame_finish overwrite clen / ccount, which every warp reads: all loads must come before a
    # barrier that the overwriting stores follow (without it a late warp read the new values on the H100)
    for name in ("frame_setup", "frame_finish"):
        r = res[name]
        assert r["cubin"] and r["loads_before_barrier"] and r["stores_after_barrier"] >= 1, (name, r)
