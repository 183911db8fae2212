"""A GPU-scope memory fence executed by every thread of a program (for the "last program merges" tickets).

The attention merge and the selection hand partial results to the last program of a group through an integer
ticket (``tl.atomic_add(..., sem="acq_rel")``, issued by one thread after a barrier). The acquire/release pattern
needs each writing thread's stores to be visible at GPU scope before the ticket is taken, and each reading
thread to acquire after it: the barrier plus one thread's atomic is not enough on real hardware (PyTorch fixed
the same race in its two-stage reductions, pytorch/pytorch#128455; NVFuser in its split-K semaphore,
NVIDIA/Fuser#2391). ``fence_gpu(x)`` runs ``fence.acq_rel.gpu`` once per element of ``x`` that a thread holds
(every thread holds at least one), so pass a small tensor. Triton's CPU interpreter cannot run inline PTX: the
kernels take a ``FENCE`` constexpr that the launchers set only for CUDA tensors outside the interpreter (the
interpreter runs programs one after another, so there is nothing to order there).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._checks import interpreting


@triton.jit
def fence_gpu(x):
    """x: any int32 tensor; returns it unchanged after a GPU-scope acquire-release fence in every thread."""
    return tl.inline_asm_elementwise("fence.acq_rel.gpu;\n\tmov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32,
                                     is_pure=False, pack=1)


# diagnostics only (bench/determinism.py --no-fence): the A/B that tells whether the fences are what keeps
# repeated calls equal
_DISABLED = os.environ.get("AUTOGAZE_NO_FENCE", "") == "1"


def fence_wanted(t: torch.Tensor) -> bool:
    """Whether a launch on ``t``'s device runs real GPU programs (then the tickets need the fences)."""
    return t.is_cuda and not interpreting() and not _DISABLED
