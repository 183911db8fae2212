import pytest
import torch

from triton_autogaze.kernels.mlp_gate_up import mlp_gate_up, mlp_gate_up_ref
from triton_autogaze.kernels.residual_norm import residual_norm, residual_norm_ref

B, S, C, H, I = 3, 26, 192, 6, 384


def make(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(x=r(B, S, C), o_part=r(H, B, S, C), h_out=torch.zeros(B, S, C, device=device), ln_w=r(C),
                alive=torch.tensor([1, 0, 1], dtype=torch.int32, device=device),
                m_out=torch.zeros(B, S, C, device=device))


@pytest.mark.parametrize("n,block_n,upstream", [(26, 32, False), (20, 16, True), (7, 16, False)])
def test_matches_ref(device, n, block_n, upstream):
    a = make(device)
    b = {k: v.clone() for k, v in a.items()}
    residual_norm(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n)
    residual_norm_ref(**b, n=n, eps=1e-5, upstream=upstream)
    for key in ("h_out", "m_out"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)
    assert not a["m_out"][:, n:].any(), "slots past n must not be touched"
    if not upstream:
        assert not a["m_out"][1].any() and not a["h_out"][1].any(), "a finished row must not be touched"
    else:
        assert a["m_out"][1, :n].any()


@pytest.mark.parametrize("split_k,block_k,block_n,block_i,f64", [(0, 0, 32, 16, False), (64, 0, 32, 16, False),
                                                               (64, 64, 32, 16, False), (0, 32, 16, 32, False),
                                                               (0, 32, 64, 32, True)])
def test_gate_up_on_normed_input_equals_the_fused_merge(device, split_k, block_k, block_n, block_i, f64):
    """residual_norm then mlp_gate_up(normed=True) gives the activations and h1 of mlp_gate_up's own merge, with
    sliced products (split_k) or the hidden axis in sequential chunks (block_k, which takes over from split_k; with
    f64_dots into an fp64 accumulator, the engine's prefill GEMM)."""
    a = make(device, seed=1)
    g = torch.Generator().manual_seed(2)
    w = (torch.randn(2 * I, C, generator=g) * 0.1).to(device)
    n = 23
    residual_norm(**a, n=n, eps=1e-5, upstream=False)
    act = torch.zeros(B, S, I, device=device)
    mlp_gate_up(a["m_out"], a["o_part"], a["h_out"], a["ln_w"], w, a["alive"], act, n, 1e-5, False,
                block_n=block_n, block_i=block_i, split_k=split_k, normed=True, block_k=block_k, f64_dots=f64)
    h_ref, act_ref = torch.zeros(B, S, C, device=device), torch.zeros(B, S, I, device=device)
    mlp_gate_up_ref(a["x"], a["o_part"], h_ref, a["ln_w"], w, a["alive"], act_ref, n, 1e-5, False)
    torch.testing.assert_close(a["h_out"], h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(act, act_ref, rtol=1e-4, atol=1e-5)
    assert not act[1].any() and not act[:, n:].any()


def test_bad_shapes_are_named(device):
    a = make(device)
    a["m_out"] = a["m_out"][:, :5]
    with pytest.raises(ValueError, match="m_out"):
        residual_norm(**a, n=5, eps=1e-5, upstream=False)
    with pytest.raises(ValueError, match="n"):
        residual_norm(**make(device), n=0, eps=1e-5, upstream=False)
    a = make(device)
    a["x"] = a["x"][0]  # a feed without its row axis: named, not an unpacking error
    with pytest.raises(ValueError, match=r"x: expected a \[B, S, C\] tensor, got shape"):
        residual_norm(**a, n=5, eps=1e-5, upstream=False)


def test_gate_up_block_k_needs_normed_input(device):
    a = make(device)
    w = torch.zeros(2 * I, C, device=device)
    act = torch.zeros(B, S, I, device=device)
    with pytest.raises(ValueError, match="block_k"):
        mlp_gate_up(a["x"], a["o_part"], a["h_out"], a["ln_w"], w, a["alive"], act, 5, 1e-5, False, block_k=64)
    with pytest.raises(ValueError, match="block_k"):
        mlp_gate_up(a["m_out"], a["o_part"], a["h_out"], a["ln_w"], w, a["alive"], act, 5, 1e-5, False,
                    normed=True, block_k=24)
