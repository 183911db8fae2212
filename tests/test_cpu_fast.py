"""The fused C++ CPU decoder (cpu_fast.py, csrc/cpu_decoder.cpp) vs the pure-torch oracle: kernels, the 10-token
choice, and whole generations token for token (upstream and independent semantics, stopping, budget cuts,
streaming, thread counts). Fixture parity itself is in test_parity.py (cpu-torch vs cpu-reference)."""

from __future__ import annotations

import pytest
import torch

from fixture_data import LOCAL, SHARED, cases, load_case, model_dir, model_input, shared_available
from triton_autogaze import AutoGaze, cpu_fast
from triton_autogaze.reference.generate import choose_step

pytestmark = pytest.mark.skipif(cpu_fast._cpu_decoder is None or not cpu_fast._cpu_decoder.supported(),
                                reason="needs the _cpu_decoder extension and an AVX2/FMA CPU")


@pytest.fixture(scope="module")
def models():
    fast = AutoGaze.from_pretrained(model_dir(), device="cpu", backend="torch")
    ref = AutoGaze.from_pretrained(model_dir(), device="cpu", backend="torch", reference=True)
    assert isinstance(fast._torch_gen.decoder, cpu_fast.FastDecoder)
    assert not isinstance(ref._torch_gen.decoder, cpu_fast.FastDecoder)
    return fast, ref


@pytest.fixture(scope="module")
def clip():
    c = [c for c in cases(LOCAL) if c["name"] == "clip224_t4"][0]
    return model_input(c, load_case(LOCAL, c))


@pytest.fixture
def threads():
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)


def assert_same(a, b):
    assert torch.equal(a.gazing_pos, b.gazing_pos)
    assert torch.equal(a.if_padded_gazing, b.if_padded_gazing)
    assert torch.equal(a.num_gazing_each_frame, b.num_gazing_each_frame)
    # same math in another summation order: the choices are equal, the probabilities agree to rounding
    torch.testing.assert_close(a.confidence, b.confidence, rtol=0, atol=1e-5)


@pytest.mark.parametrize("M", [1, 2, 10, 13, 206])
@pytest.mark.parametrize("N,K", [(576, 192), (192, 384), (2672, 192)])
def test_linear_kernel(M, N, K):
    g = torch.Generator().manual_seed(M * N + K)
    x, w = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g)
    out = torch.empty(M, N)
    cpu_fast._cpu_decoder.linear(x.numpy(), cpu_fast.pack(w).numpy(), out.numpy(), 2)
    torch.testing.assert_close(out, x.double().matmul(w.double().t()).float(), rtol=1e-5, atol=1e-4)


def test_pack_pads_to_whole_panels():
    w = torch.arange(20 * 3, dtype=torch.float32).reshape(20, 3)
    p = cpu_fast.pack(w)
    assert p.shape == (2, 3, 16)
    assert torch.equal(p[0], w[:16].t()) and torch.equal(p[1, :, :4], w[16:].t()) and not p[1, :, 4:].any()


def test_choose_matches_reference(models):
    fd = models[0]._torch_gen.decoder
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        B, K, V, eos = 3, 10, 266, 265
        logits = torch.randn(B, K, V, generator=g)
        if trial % 4 == 1:  # exact ties: the first index wins
            logits = logits.round()
        L = int(torch.randint(0, 60, (1,), generator=g))
        ids = torch.randint(0, V, (B, L), generator=g)
        budget = L + int(torch.randint(0, 14, (1,), generator=g))
        got, want = fd.choose_step(logits, ids, budget, eos), choose_step(logits, ids, budget, eos)
        assert torch.equal(got[0], want[0]) and got[2] == want[2]
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-6)


def test_choose_falls_back_on_non_finite_logits(models):
    fd = models[0]._torch_gen.decoder
    logits = torch.randn(1, 10, 266)
    logits[0, 2, 7] = float("nan")
    logits[0, 3, :] = float("-inf")
    ids = torch.tensor([[1, 2, 3]])
    got, want = fd.choose_step(logits, ids, 198, 265), choose_step(logits, ids, 198, 265)
    assert torch.equal(got[0], want[0]) and got[2] == want[2]
    torch.testing.assert_close(got[1], want[1], equal_nan=True)


@pytest.mark.parametrize("nt", [1, 2, 3])
def test_generate_matches_reference_any_thread_count(models, clip, threads, nt):
    threads(nt)
    fast, ref = models
    for ratio, tau in [(0.75, None), (0.75, -2.0), (0.05, None), (0.3, 0.5)]:  # 0.05: 13 tokens, a cut step
        assert_same(fast.generate(clip, gazing_ratio=ratio, task_loss_requirement=tau),
                    ref.generate(clip, gazing_ratio=ratio, task_loss_requirement=tau))


@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_batch_matches_reference(models, clip, semantics):
    fast, ref = models
    video = torch.cat([clip, clip.flip(1)], 0)  # two different rows
    tau = torch.tensor([[-2.0] * 4, [0.3] * 4])
    assert_same(fast.generate(video, 0.75, tau, batch_semantics=semantics),
                ref.generate(video, 0.75, tau, batch_semantics=semantics))


def test_streaming_grows_the_cache(models, clip):
    """Frame-by-frame calls start from a 16-token cache that doubles; the result equals the whole clip."""
    fast, _ = models
    kw = dict(gazing_ratio=0.75, task_loss_requirement=None, generate_only=True)
    whole = fast({"video": clip}, **kw)
    past = dict(past_key_values=None, past_inputs_embeds=None, past_attention_mask=None, past_conv_values=None)
    parts = []
    for t in range(clip.shape[1]):
        out = fast({"video": clip[:, t:t + 1]}, use_cache=True, **kw, **past)
        parts.append(out["gazing_pos"] + 265 * t)
        past = dict(past_key_values=out["past_key_values"], past_inputs_embeds=out["past_input_embeds"],
                    past_attention_mask=out["past_attention_mask"], past_conv_values=out["past_conv_values"])
    assert torch.equal(torch.cat(parts, 1), whole["gazing_pos"])
    assert isinstance(past["past_key_values"].state.states[0].cache, cpu_fast.FastKVCache)


@pytest.mark.skipif(not shared_available(), reason="needs the shared fixtures (16-frame clip)")
def test_full_budget_clip16_matches_reference(models):
    """The benchmark case (bench/bench_reference_cpu.py): 16 frames x 198 tokens, no stopping."""
    c = [c for c in cases(SHARED) if c["name"] == "clip224_t16"][0]
    video = model_input(c, load_case(SHARED, c))
    fast, ref = models
    assert_same(fast.generate(video, 0.75), ref.generate(video, 0.75))


def test_cache_select_rows_and_reserve():
    c = cpu_fast.FastKVCache(2, 3, 2, 32, 20)
    assert c.capacity == 32
    c.kp.normal_(), c.v.normal_(), c.keymask.random_(0, 2)
    c.length = 20
    s = c.select_rows([2, 0])
    assert torch.equal(s.kp[:, 0], c.kp[:, 2]) and torch.equal(s.v[:, 1], c.v[:, 0])
    assert torch.equal(s.keymask[0], c.keymask[2]) and s.length == 20
    kp, v, km = c.kp.clone(), c.v.clone(), c.keymask.clone()
    c.reserve(30)
    assert c.capacity == 64 and c.views[0].shape[3] == 4
    assert torch.equal(c.kp[:, :, :, :2], kp[:, :, :, :2]) and torch.equal(c.v[:, :, :, :20], v[:, :, :, :20])
    assert torch.equal(c.keymask[:, :20], km[:, :20]) and not c.keymask[:, 20:].any()


def test_unavailable_without_extension(monkeypatch, models):
    monkeypatch.setattr(cpu_fast, "_cpu_decoder", None)
    assert not cpu_fast.available(models[1].decoder)
    m = AutoGaze.from_pretrained(model_dir(), device="cpu", backend="torch")
    assert not isinstance(m._torch_gen.decoder, cpu_fast.FastDecoder)
