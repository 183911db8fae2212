"""Which tokens of a decoder feed one program takes, and whether it runs (the preamble of the decoder's token-block
kernels: rmsnorm_qkv_rope, mlp_gate_up, mlp_down, residual_norm).

A feed is n slots of each of B rows. A launch's axis 0 cuts it one of two ways:
  per row (FLAT False): program ``pid`` takes the BN slots ``blk * BN + arange(BN)`` of row ``b``
    (``cdiv(n, BN)`` programs a row);
  flat (FLAT True): program ``pid`` takes BN consecutive tokens ``tok`` of the B x n feed across row boundaries
    (token ``tok`` is slot ``tok % n`` of row ``rb = tok // n``), so a 10-token decode feed of many rows leaves no
    per-row padding.
A program runs (``go``) when its row is alive, or, in upstream semantics (UPSTREAM), when any row is; a flat
program's token mask also drops the tokens of dead rows in independent semantics.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def feed_block(pid, alive_ptr, B, n, BN: tl.constexpr, BLOCK_B: tl.constexpr, UPSTREAM: tl.constexpr,
               FLAT: tl.constexpr):
    """-> (b, blk, tok, tmask, rb, go). Per row: b, blk (tok, tmask, rb unused: 0). Flat: b = blk = 0, tok [BN]
    int32 tokens, tmask [BN] (in the feed, and, in independent semantics, of a live row), rb [BN] their rows.
    go: int32 scalar, nonzero when the program runs."""
    if FLAT:
        tok = pid * BN + tl.arange(0, BN)
        tmask = tok < B * n
        rb = tok // n
        b = 0
        blk = 0
    else:
        nblk = tl.cdiv(n, BN)
        b = pid // nblk
        blk = pid % nblk
        tok = 0
        tmask = 0
        rb = 0
    if UPSTREAM:
        ob = tl.arange(0, BLOCK_B)
        go = tl.max(tl.load(alive_ptr + ob, mask=ob < B, other=0), axis=0)
    elif FLAT:
        tmask = tmask & (tl.load(alive_ptr + rb, mask=tmask, other=0) != 0)
        go = tl.max(tmask.to(tl.int32), axis=0)
    else:
        go = tl.load(alive_ptr + b)
    return b, blk, tok, tmask, rb, go
