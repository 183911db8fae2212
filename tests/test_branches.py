"""CUDA-graph IF nodes (engine/branches.py): the driver structures' layout on any machine; on a GPU, nested bodies
that run exactly when their flags say so, and the engine's dead-step skipping giving the same tokens."""

from __future__ import annotations

import ctypes

import pytest
import torch

from triton_autogaze.engine import branches as br

CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def test_driver_structures_have_the_cuda_h_layout():
    # CUgraphNodeParams is 256 bytes with its union at offset 16; CUDA_CONDITIONAL_NODE_PARAMS 32; CUgraphEdgeData 8
    assert ctypes.sizeof(br._NodeParams) == 256
    assert br._NodeParams.conditional.offset == 16
    assert ctypes.sizeof(br._ConditionalParams) == 32
    assert [br._ConditionalParams.handle.offset, br._ConditionalParams.type.offset,
            br._ConditionalParams.size.offset, br._ConditionalParams.phGraph_out.offset,
            br._ConditionalParams.ctx.offset] == [0, 8, 12, 16, 24]
    assert ctypes.sizeof(br._EdgeData) == 8


def test_if_any_before_the_check_is_a_clear_error():
    b = br.Branches(torch.device("cuda", 0))
    with pytest.raises(RuntimeError, match="not available"):
        with b.if_any(torch.zeros(1, dtype=torch.int32)):
            pass


@pytest.mark.skipif(CUDA, reason="checks the fallback on a machine without a GPU")
def test_without_a_gpu_branches_are_unsupported_with_a_reason():
    b = br.Branches(torch.device("cuda", 0))
    assert b.supported() is False and b.reason  # no crash: the engine then launches every step
    assert b.supported() is False  # the answer is kept


@needs_gpu
def test_gpu_nested_bodies_follow_their_flags():
    b = br.Branches(torch.device("cuda", torch.cuda.current_device()))  # a fresh instance: runs the check again
    assert b.supported(), b.reason
    flags = torch.zeros(3, 2, dtype=torch.int32, device="cuda")
    count = torch.zeros(3, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="int32"):
        with b.if_any(flags.float()):
            pass
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        count[0:1].add_(1)  # torch kernels in bodies too
        with b.if_any(flags[0]):
            count[1:2].add_(1)
            with b.if_any(flags[1]):
                with b.if_any(flags[2]):
                    count[2:3].add_(1)
    for f, want in [([[0, 0], [1, 1], [1, 1]], [1, 0, 0]), ([[0, 1], [0, 0], [1, 0]], [1, 1, 0]),
                    ([[3, 0], [0, -1], [0, 1]], [1, 1, 1]), ([[1, 0], [1, 0], [0, 0]], [1, 1, 0])]:
        flags.copy_(torch.tensor(f, dtype=torch.int32))
        count.zero_()
        g.replay()
        assert count.cpu().tolist() == want, f


@needs_gpu
@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_gpu_skipped_dead_steps_change_nothing(semantics):
    """8 rows stopping at different steps (tau -2): captured calls with and without the IF nodes, replayed, give
    the eager call's ids and confidences bit for bit."""
    from test_engine import fixture_dir

    from triton_autogaze.checkpoint import load_checkpoint
    from triton_autogaze.engine import TritonGenerator

    fx = fixture_dir()
    if not (fx / "model" / "config.json").is_file():
        pytest.skip(f"fixture model not found under {fx}")
    cfg, w, _ = load_checkpoint(fx / "model")
    B, T = 8, 3
    v = (torch.randn(B, T, cfg.num_tokens, cfg.decoder.hidden_size, generator=torch.Generator().manual_seed(2))
         * 0.5).cuda()
    tau = torch.full((B, T), -2.0, device="cuda")
    ref, _ = TritonGenerator(w, cfg, use_cuda_graph=False).run(v, [198] * T, tau, semantics)
    assert any(int((f.ids != cfg.eos_id).sum()) < B * 198 for f in ref.frames)  # some rows stop early
    for skip in (True, False):
        g = TritonGenerator(w, cfg, use_cuda_graph=True)
        g.skip_dead_steps = skip
        for _ in range(3):  # eager, captured + replayed, replayed
            out, _ = g.run(v, [198] * T, tau, semantics)
            for a, b in zip(ref.frames, out.frames):
                assert torch.equal(a.ids, b.ids) and torch.equal(a.confidence, b.confidence)
