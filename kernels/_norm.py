"""RMSNorm of the decoder's token rows inside a kernel, in the two layouts its token-block kernels hold them."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def rms_normed_rows(h, ln_ptr, cols, cmask, eps, C: tl.constexpr):
    """h [BN, BLOCK_C] fp32 rows (0 past C) -> ln * h / sqrt(mean(h^2) + eps); cols [BLOCK_C], cmask = cols < C."""
    var = tl.sum(h * h, axis=1) / C
    ln = tl.load(ln_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    return ln[None, :] * (h * tl.math.rsqrt(var + eps)[:, None])


@triton.jit
def rms_normed_slices(h, ln_ptr, col_a, eps, C: tl.constexpr):
    """The same of rows held as S slices of KS columns: h [S, BN, KS] (0 past C), col_a [S, 1, KS] their columns."""
    var = tl.sum(tl.sum(h * h, axis=2), axis=0) / C
    ln = tl.load(ln_ptr + col_a, mask=col_a < C, other=0.0).to(tl.float32)
    return ln * (h * tl.math.rsqrt(var + eps)[None, :, None])
