import pytest
import torch

from triton_autogaze.kernels.residual_mlp import residual_mlp, residual_mlp_ref



def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)

B, S, C, H, I = 2, 26, 192, 6, 384


def make(device, ni, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(x=r(B, S, C), o_part=r(H, B, S, C), h_out=torch.zeros(B, S, C, device=device), ln_w=r(C),
                w_gate_up=r(2 * I, C) * 0.1, w_down=r(C, I) * 0.1,
                alive=torch.tensor([0, 1], dtype=torch.int32, device=device),
                d_part=torch.zeros(ni, B, S, C, device=device))


@pytest.mark.parametrize("n,ni,block_n,upstream", [(10, 12, 16, False), (26, 3, 32, True), (26, 6, 16, False)])
def test_matches_ref(device, n, ni, block_n, upstream):
    a = make(device, ni)
    b = {k: v.clone() for k, v in a.items()}
    residual_mlp(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n)
    residual_mlp_ref(**b, n=n, eps=1e-5, upstream=upstream)
    close(a["h_out"], b["h_out"])
    close(a["d_part"].sum(0), b["d_part"].sum(0), rtol=1e-4, atol=1e-5)
    if not upstream:
        assert not a["d_part"][:, 0].any()


@pytest.mark.parametrize("name,bad", [
    ("x", lambda t: t.half()), ("o_part", lambda t: t[:, :, :5].contiguous()), ("w_down", lambda t: t.t()),
    ("d_part", lambda t: t[:5].contiguous())])
def test_launcher_errors(device, name, bad):
    a = make(device, 12)
    a[name] = bad(a[name])
    with pytest.raises(ValueError, match=name):
        residual_mlp(**a, n=10, eps=1e-5, upstream=False)
