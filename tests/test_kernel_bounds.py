"""Every load/store of the engine's Triton kernels stays inside the tensors it is given (interpreter, CPU).

The torch references cannot show an out-of-bounds access (they wrap negative indices), and on the GPU one faults
only when the stray address is unmapped: a read of RoPE row -1 passed every token test for two sessions and
crashed only at a second batch size's graph capture. The interpreter with ``interp_bounds`` sees every access.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import interp_bounds  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs Triton's CPU interpreter"),
    pytest.mark.skipif(not interp_bounds.available(), reason="this Triton's interpreter lacks the hooked internals"),
]


@triton.jit
def _shifted_copy(src, dst, shift, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    m = offs < n
    tl.store(dst + offs, tl.load(src + offs + shift, mask=m, other=0.0), mask=m)


def test_checker_sees_a_read_before_the_tensor():
    buf = torch.arange(40, dtype=torch.float32)
    src, dst = buf[8:24], torch.zeros(16)  # src is a view: row -1 is readable memory, as on a GPU
    with interp_bounds.bounds_checked() as ok_run:
        _shifted_copy[(1,)](src, dst, 0, 16, BLOCK=16)
    assert ok_run.launches == 1 and not ok_run.violations
    with interp_bounds.bounds_checked() as bad_run:
        _shifted_copy[(1,)](src, dst, -1, 16, BLOCK=16)
    assert [(v.kernel, v.access, v.lanes, v.offset_elems) for v in bad_run.violations] == \
        [("_shifted_copy", "load", 1, -1)]
    assert torch.equal(dst[1:], src[:-1])  # the read itself went through: only the checker noticed


@pytest.mark.parametrize("semantics", ["independent", "upstream"])
def test_engine_stays_in_bounds(semantics):
    """A fresh two-row clip (rows finishing at different steps) and its streamed continuation: every kernel launch
    of the engine (frame setup, 4 x 4 decoder kernels, selection, frame finish) is bounds-checked."""
    from triton_autogaze.demo import demo_checkpoint
    from triton_autogaze.engine.generator import TritonGenerator

    cfg, w = demo_checkpoint()
    gen = TritonGenerator(w, cfg, device="cpu", backend="triton", use_cuda_graph=False)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(2, 2, cfg.num_tokens, cfg.decoder.hidden_size, generator=g)
    with interp_bounds.bounds_checked() as run:
        out, state = gen.run(v[:, :1].contiguous(), [13], None, semantics)
        out, state = gen.run(v[:, 1:].contiguous(), [7], torch.full((2, 1), 0.9), semantics, state)
    assert run.launches > 50
    assert not run.violations, run.violations[:5]
