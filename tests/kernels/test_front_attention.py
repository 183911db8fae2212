"""front_attention (a decode feed's RMSNorm + q/k/v + RoPE + cache write fused into split-K attention) against
rmsnorm_qkv_rope_ref followed by attention_ref, and against the two Triton kernels it replaces."""
import pytest
import torch

from triton_autogaze.kernels.attention import AttentionScratch, attention
from triton_autogaze.kernels.front_attention import front_attention, front_attention_ref
from triton_autogaze.kernels.rmsnorm_qkv_rope import rmsnorm_qkv_rope

B, S, C, H, D, L, P = 2, 16, 192, 6, 32, 160, 200


def make(device, n, chunk, seed=0, cache_dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    km = (torch.rand(B, L, generator=g) > 0.3).to(torch.int8)
    km[:, :4] = 1  # every query sees at least one key
    qoff = torch.tensor([L - n - 9, 61], dtype=torch.int32)  # row 1's feed straddles a 32- and a 64-key boundary
    ang = r(P, D // 2)
    return dict(
        x=r(B, S, C).to(device), ln_w=(1 + 0.1 * r(C)).to(device), w_qkv=(r(3 * C, C) * 0.08).to(device),
        cos_tab=ang.cos().to(device), sin_tab=ang.sin().to(device),
        pos=torch.randint(0, P, (B, S), generator=g, dtype=torch.int32).to(device),
        qoff=qoff.to(device), qoff_add=3, alive=torch.tensor([1, 1], dtype=torch.int32, device=device),
        k_cache=r(B, H, L, D).to(device, cache_dtype), v_cache=r(B, H, L, D).to(device, cache_dtype),
        keymask=km.to(device), w_o=(r(C, C) * 0.1).to(device), out=torch.zeros(H, B, S, C, device=device),
        scratch=AttentionScratch(B * H, -(-L // chunk), 16, D, device), max_key_end=int(qoff.max()) + 3 + n,
    )


def clone(a):
    return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}


def run_both(device, n, chunk, upstream, seed=0, alive=(1, 1), **launch):
    a = make(device, n, chunk, seed)
    a["alive"] = torch.tensor(alive, dtype=torch.int32, device=device)
    ref = clone(a)
    front_attention(**a, n=n, eps=1e-6, upstream=upstream, chunk=chunk, **launch)
    front_attention_ref(**{**ref, "scratch": None}, n=n, eps=1e-6, upstream=upstream)
    return a, ref


@pytest.mark.parametrize("n,chunk,block_k,upstream,split_k", [
    (10, 32, 16, False, 0), (10, 64, 32, True, 32), (16, 32, 32, False, 32), (1, 256, 64, False, 0)])
def test_matches_ref(device, n, chunk, block_k, upstream, split_k):
    """Outputs and the feed's cache rows; splits whose old keys end just before the feed, one split, one slot."""
    a, ref = run_both(device, n, chunk, upstream, block_k=block_k, split_k=split_k)
    torch.testing.assert_close(a["out"][:, :, :n], ref["out"][:, :, :n], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["k_cache"], ref["k_cache"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a["v_cache"], ref["v_cache"], rtol=1e-5, atol=1e-5)
    assert not a["scratch"].cnt.any(), "tickets must be reset for the next launch"


@pytest.mark.parametrize("upstream", [False, True])
def test_dead_rows(device, upstream):
    """A dead row is left alone in independent semantics and runs in upstream semantics (another row is alive)."""
    a, ref = run_both(device, 10, 32, upstream, alive=(1, 0), block_k=16)
    base = make(device, 10, 32)
    torch.testing.assert_close(a["out"][:, :, :10], ref["out"][:, :, :10], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a["k_cache"], ref["k_cache"], rtol=1e-5, atol=1e-5)
    if not upstream:
        assert not a["out"][:, 1].any() and torch.equal(a["k_cache"][1], base["k_cache"][1])


def test_matches_the_two_kernels(device):
    """The same outputs as rmsnorm_qkv_rope then attention (the launches it replaces), f64 products off."""
    n, chunk = 10, 32
    a = make(device, n, chunk, seed=5)
    b = clone(a)
    front_attention(**a, n=n, eps=1e-6, upstream=False, chunk=chunk, block_k=16, split_k=32)
    q = torch.zeros(B, H, S, D, device=device)
    jmin = torch.zeros(B, dtype=torch.int32, device=device)
    rmsnorm_qkv_rope(b["x"], None, None, b["ln_w"], b["w_qkv"], b["cos_tab"], b["sin_tab"], b["pos"], b["qoff"],
                     b["qoff_add"], jmin, b["alive"], q, b["k_cache"], b["v_cache"], n, 1e-6, False, split_k=32)
    attention(q, b["k_cache"], b["v_cache"], b["keymask"], b["qoff"], b["qoff_add"], jmin, b["alive"], b["w_o"],
              b["out"], b["scratch"], n, b["max_key_end"], False, block_q=16, chunk=chunk, block_k=16)
    torch.testing.assert_close(a["k_cache"], b["k_cache"], rtol=0, atol=1e-6)
    torch.testing.assert_close(a["out"][:, :, :n], b["out"][:, :, :n], rtol=1e-5, atol=1e-6)


def test_bf16_cache(device):
    """A bf16 cache: the feed's keys are attended to as stored (rounded), within bf16's tolerance."""
    n, chunk = 10, 32
    a = make(device, n, chunk, seed=2, cache_dtype=torch.bfloat16)
    ref = clone(a)
    front_attention(**a, n=n, eps=1e-6, upstream=False, chunk=chunk, block_k=16)
    front_attention_ref(**{**ref, "scratch": None}, n=n, eps=1e-6, upstream=False)
    torch.testing.assert_close(a["out"][:, :, :n], ref["out"][:, :, :n], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(a["k_cache"].float(), ref["k_cache"].float(), rtol=1e-2, atol=1e-2)


def test_bad_input(device):
    a = make(device, 10, 32)
    with pytest.raises(ValueError, match="n: expected"):
        front_attention(**a, n=17, eps=1e-6, upstream=False, chunk=32, block_k=16)
    with pytest.raises(ValueError, match="x"):
        front_attention(**{**a, "x": a["x"][:, :, :100]}, n=10, eps=1e-6, upstream=False, chunk=32, block_k=16)
    with pytest.raises(ValueError, match="scratch"):
        front_attention(**{**a, "scratch": AttentionScratch(B * H, 1, 16, D, device)}, n=10, eps=1e-6,
                        upstream=False, chunk=32, block_k=16)
