"""Row bookkeeping shared by the engine's kernels (Triton device functions, inlined at compile time)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def row_runs(alive_ptr, b, B, BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr):
    """Whether row ``b`` runs this launch: its own alive flag (independent semantics), or any row's (upstream
    semantics: a batch keeps stepping while one of its rows does). alive_ptr: [B] int32."""
    if UPSTREAM:
        ob = tl.arange(0, BLOCK_B)
        go = tl.max(tl.load(alive_ptr + ob, mask=ob < B, other=0), axis=0)
    else:
        go = tl.load(alive_ptr + b)
    return go


@triton.jit
def row_and_block(n, BN: tl.constexpr):
    """Program axis 0 enumerates (row, block of BN slots among n): returns (row, block)."""
    pid = tl.program_id(0)
    nblk = tl.cdiv(n, BN)
    return pid // nblk, pid % nblk
