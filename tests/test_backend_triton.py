"""The model with backend="triton" (fused patch embed + Triton engine) equals the torch backend, end to end.

On a machine without a GPU the kernels run in Triton's CPU interpreter, so the case is kept tiny.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from fixture_data import LOCAL, cases, load_case, model_dir, model_input  # noqa: E402
from triton_autogaze import AutoGaze  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def models():
    pytest.importorskip("triton")
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton was imported before TRITON_INTERPRET could be set")
    ref = AutoGaze.from_pretrained(model_dir(), device=DEVICE, backend="torch")
    fast = AutoGaze.from_pretrained(model_dir(), device=DEVICE, backend="triton", use_cuda_graph=False)
    return ref, fast


@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_triton_backend_equals_torch(models, semantics):
    ref, fast = models
    c = [c for c in cases(LOCAL) if c["name"] == "batch2_t4"][0]
    video = model_input(c, load_case(LOCAL, c))[:, :2].to(DEVICE)  # 2 rows, 2 frames
    kw = dict(gazing_ratio=0.05, task_loss_requirement=-2.0, batch_semantics=semantics)
    a = ref.generate(video, **kw)
    b = fast.generate(video, **kw)
    assert torch.equal(a.gazing_pos.cpu(), b.gazing_pos.cpu())
    assert torch.equal(a.if_padded_gazing.cpu(), b.if_padded_gazing.cpu())
    assert torch.equal(a.num_gazing_each_frame.cpu(), b.num_gazing_each_frame.cpu())
    assert (a.confidence.cpu() - b.confidence.cpu()).abs().max().item() <= 1e-5


def test_triton_backend_streaming_equals_clip(models):
    """Frame-by-frame upstream-style streaming through the Triton engine equals the whole clip."""
    ref, fast = models
    c = [c for c in cases(LOCAL) if c["name"] == "clip224_t4"][0]
    video = model_input(c, load_case(LOCAL, c))[:, :2].to(DEVICE)
    kw = dict(gazing_ratio=0.05, task_loss_requirement=-2.0, generate_only=True)
    whole = ref({"video": video}, **kw)
    past = dict(past_key_values=None, past_inputs_embeds=None, past_attention_mask=None, past_conv_values=None)
    parts = []
    for t in range(video.shape[1]):
        out = fast({"video": video[:, t:t + 1]}, use_cache=True, **kw, **past)
        parts.append(out["gazing_pos"].cpu() + 265 * t)
        past = {k: out[k.replace("inputs", "input")] for k in past}
    pad = whole["if_padded_gazing"].cpu()
    stream = torch.cat(parts, 1)
    assert stream.shape == whole["gazing_pos"].shape
    assert torch.equal(stream[~pad], whole["gazing_pos"].cpu()[~pad])


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA graphs need a CUDA GPU")
@pytest.mark.parametrize("order", [(2, 1), (1, 2)])
def test_gpu_graphs_two_batch_sizes_one_model(order):
    """One model, CUDA graphs on, two batch sizes one after the other (eager, captured, replayed calls of each):
    every call equals the torch backend. Session 2 saw an illegal memory access here (RESULTS.md section 4)."""
    ref = AutoGaze.from_pretrained(model_dir(), device=DEVICE, backend="torch")
    fast = AutoGaze.from_pretrained(model_dir(), device=DEVICE, backend="triton", use_cuda_graph=True)
    c = [c for c in cases(LOCAL) if c["name"] == "batch2_t4"][0]
    video = model_input(c, load_case(LOCAL, c)).to(DEVICE)
    kw = dict(gazing_ratio=0.75, batch_semantics="independent")
    for B in order:
        want = ref.generate(video[:B], **kw)
        for call in range(3):
            got = fast.generate(video[:B], **kw)
            torch.cuda.synchronize()
            assert torch.equal(want.gazing_pos.cpu(), got.gazing_pos.cpu()), f"B={B} call {call}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs)")
def test_gpu_graphed_encoder_equals_eager():
    """Calls of a few frames replay the encoder from CUDA graphs: the same bits as eager launches, over a chain
    of conv caches, with two interleaved streams on one model (each call's outputs are its own), inside and
    outside inference mode."""
    from triton_autogaze.kernels.patch_embed import patch_embed

    m = AutoGaze.from_pretrained(model_dir(), device="cuda", backend="triton")
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(1, 6, 3, 224, 224, generator=g).cuda() for _ in range(2)]
    caches = [None, None]
    for t in range(6):
        for s, clip in enumerate(clips):  # interleaved: stream 1's call between two of stream 0's
            frame = clip[:, t:t + 1]
            want, want_cache = patch_embed(frame.contiguous(), m._patch_weights, caches[s]) if t else (None, None)
            ctx = torch.inference_mode() if s == 0 else torch.no_grad()
            with ctx:
                got, caches[s] = m.encode(frame, caches[s])
            if want is not None:
                assert torch.equal(got, want) and torch.equal(caches[s], want_cache), f"stream {s} frame {t}"
    assert len(m._encoder._graphs) == 2  # one frame without a cache (each stream's first), one with
