"""Programmatic dependent launch (PDL, Hopper and newer) for the engine's chain of kernels.

A decode step is ~17 dependent launches of 5-20 us each, and every kernel boundary in a CUDA graph costs
~1-2 us of launch and ramp-up (ENGINE_NOTES). A kernel launched with ``launch_pdl=True`` may be launched before
its predecessor in the stream has completed; its programs then block in ``griddepcontrol.wait`` until the
predecessor has completed and flushed its memory.

Two modes (``GDC`` constexpr, ``AUTOGAZE_PDL``):
  2 (the default): wait only. The next kernel launches as this one's programs exit, without waiting for the
    grid's completion to be signalled: H100, fp32, one clip 63.1 -> 62.4 ms, tau -2 17.7 -> 17.2; bf16 one clip
    35.1 -> 34.1, tau -2 11.8 -> 10.3 (bench/RESULTS.md, section 1, eleventh pass).
  1: wait, then ``griddepcontrol.launch_dependents``: the next kernel's programs become resident while this
    one still runs. Slower (fp32 one clip 63.1 -> 70.5 ms, 8 clips 149 -> 162): the early programs take SM slots
    beside the running ones, so a latency-bound launch is spread over fewer SMs.

The contract, kept by every kernel that takes ``GDC``: ``gdc_enter(GDC)`` is its first statement, before any
global load or store (a kernel that skipped the wait could read its predecessor's half-written output, and one
that wrote before it could overwrite what its predecessor still reads). The wait is transitive: it returns only
once the predecessor completed, and the predecessor's own body ran only after its wait, so every earlier kernel
in the stream is complete too. CI checks the compiled sm_90 code for the wait before the first global access
(tests/test_kernel_regs.py). Under the interpreter, on CPU tensors or an older GPU ``GDC`` is 0 and no launch
option is passed: the kernels compile exactly as without PDL. ``AUTOGAZE_PDL=0`` turns it off (A/B runs:
bench/engine_gpu.py --pdl 0|1|2).
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from ._checks import interpreting, nvidia_capability

DEFAULT_MODE = 2  # AUTOGAZE_PDL when unset (see above)


@triton.jit
def gdc_enter(GDC: tl.constexpr):
    """GDC 1: wait for the preceding kernel in the stream to complete, then let the next one launch; GDC 2: wait
    only (the next kernel launches as this one's programs exit); GDC 0: nothing (a plain launch)."""
    if GDC == 1:
        tl.inline_asm_elementwise("griddepcontrol.wait;\n\tgriddepcontrol.launch_dependents; // $0", "=r", [],
                                  dtype=tl.int32, is_pure=False, pack=1)
    if GDC == 2:
        tl.inline_asm_elementwise("griddepcontrol.wait; // $0", "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@functools.lru_cache(maxsize=None)
def _triton_has_pdl() -> bool:
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except Exception:  # no CUDA backend in this Triton build
        return False
    return "launch_pdl" in getattr(CUDAOptions, "__dataclass_fields__", {})


@functools.lru_cache(maxsize=None)
def _device_has_pdl(index: int) -> bool:
    cap = nvidia_capability(torch.device("cuda", index))  # griddepcontrol is PTX: NVIDIA only
    return cap is not None and cap[0] >= 9


def pdl_wanted(t: torch.Tensor) -> int:
    """The PDL mode of launches on ``t``'s device (0: off): ``AUTOGAZE_PDL`` (default DEFAULT_MODE) on an NVIDIA
    device of compute capability 9.0 or newer, outside the interpreter, with a Triton whose launcher takes
    ``launch_pdl``."""
    mode = os.environ.get("AUTOGAZE_PDL", str(DEFAULT_MODE))
    if mode not in ("0", "1", "2"):
        raise ValueError(f"AUTOGAZE_PDL: expected 0, 1 or 2, got {mode!r}")
    if not t.is_cuda or interpreting() or mode == "0":
        return 0
    ok = _triton_has_pdl() and _device_has_pdl(t.device.index if t.device.index is not None
                                               else torch.cuda.current_device())
    return int(mode) if ok else 0


def pdl_options(mode: int) -> dict:
    """Launch keyword arguments for a kernel taking ``GDC``: ``GDC=mode`` and, when on, ``launch_pdl=True``."""
    return {"GDC": mode, "launch_pdl": True} if mode else {"GDC": 0}


@triton.jit
def _increment_kernel(p, GDC: tl.constexpr):
    gdc_enter(GDC)  # first: see above
    tl.store(p, tl.load(p) + 1)


def pdl_increment(t: torch.Tensor) -> None:
    """Add 1 to ``t[0]`` (int32, CUDA) with a kernel launched as the engine launches its kernels (PDL where it is
    on). For checks of how PDL launches combine with other graph nodes (engine/branches.py)."""
    if t.dtype != torch.int32 or not t.is_cuda:
        raise ValueError(f"t: expected an int32 CUDA tensor, got {t.dtype} on {t.device}")
    _increment_kernel[(1,)](t, **pdl_options(pdl_wanted(t)), num_warps=1)
