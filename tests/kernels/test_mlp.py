import pytest
import torch

from triton_autogaze.kernels.mlp_down import mlp_down, mlp_down_ref
from triton_autogaze.kernels.mlp_gate_up import mlp_gate_up, mlp_gate_up_ref
from tile_marks import interp_tile


def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


B, S, C, H, I = 2, 26, 192, 6, 384


def make_up(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(x=r(B, S, C), o_part=r(H, B, S, C), h_out=torch.zeros(B, S, C, device=device), ln_w=r(C),
                w_gate_up=r(2 * I, C) * 0.1, alive=torch.tensor([0, 1], dtype=torch.int32, device=device),
                act=torch.zeros(B, S, I, device=device))


def make_down(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return dict(h=r(B, S, C), act=r(B, S, I), w_down=r(C, I) * 0.1,
                alive=torch.tensor([0, 1], dtype=torch.int32, device=device), out=torch.zeros(B, S, C, device=device))


@pytest.mark.parametrize("n,block_n,block_i,upstream,split_k", [
    (10, 16, 16, False, 0), pytest.param(26, 32, 128, True, 0, marks=interp_tile),
    pytest.param(26, 16, 256, False, 0, marks=interp_tile), (10, 16, 16, False, 32),
    (26, 32, 64, True, 64), (26, 16, 16, False, 16)])
def test_gate_up_matches_ref(device, n, block_n, block_i, upstream, split_k):
    a = make_up(device)
    b = {k: v.clone() for k, v in a.items()}
    mlp_gate_up(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, block_i=block_i, split_k=split_k)
    mlp_gate_up_ref(**b, n=n, eps=1e-5, upstream=upstream)
    close(a["h_out"], b["h_out"])
    close(a["act"], b["act"], rtol=1e-4, atol=1e-5)
    if not upstream:
        assert not a["act"][0].any() and not a["h_out"][0].any(), "a finished row must not be touched"
    assert not a["act"][:, n:].any(), "slots past n must not be touched"


@pytest.mark.parametrize("n,block_n,block_c,block_k,upstream,split_k", [
    (10, 16, 16, 128, False, 0), (26, 32, 64, 64, True, 0), pytest.param(26, 16, 256, 256, False, 0, marks=interp_tile),
    (10, 16, 16, 128, False, 32), (26, 32, 64, 64, True, 64), (26, 16, 16, 128, False, 128)])
def test_down_matches_ref(device, n, block_n, block_c, block_k, upstream, split_k):
    a = make_down(device)
    b = {k: v.clone() for k, v in a.items()}
    mlp_down(**a, n=n, upstream=upstream, block_n=block_n, block_c=block_c, block_k=block_k, split_k=split_k)
    mlp_down_ref(**b, n=n, upstream=upstream)
    close(a["out"], b["out"], rtol=1e-4, atol=1e-4)
    if not upstream:
        assert not a["out"][0].any(), "a finished row must not be touched"
    assert not a["out"][:, n:].any()


@pytest.mark.parametrize("name,bad", [
    ("x", lambda t: t.half()), ("x", lambda t: t[0]), ("o_part", lambda t: t[:, :, :5].contiguous()),
    ("act", lambda t: t[..., :7]),
    ("w_gate_up", lambda t: t[:, :5].contiguous())])
def test_gate_up_errors(device, name, bad):
    a = make_up(device)
    a[name] = bad(a[name])
    with pytest.raises(ValueError, match=name):
        mlp_gate_up(**a, n=10, eps=1e-5, upstream=False)


@pytest.mark.parametrize("name,bad", [
    ("h", lambda t: t.double()), ("h", lambda t: t.flatten(0, 1)), ("w_down", lambda t: t.t()),
    ("out", lambda t: t[:1].contiguous()),
    ("alive", lambda t: t.long())])
def test_down_errors(device, name, bad):
    a = make_down(device)
    a[name] = bad(a[name])
    with pytest.raises(ValueError, match=name):
        mlp_down(**a, n=10, upstream=False)


@pytest.mark.parametrize("n", [0, 10_000])
def test_feed_length_out_of_range(device, n):
    """n slots of each row: 1 <= n <= S, said by name before any launch."""
    with pytest.raises(ValueError, match="n: expected 1 <= n"):
        mlp_down(**make_down(device), n=n, upstream=False)
    with pytest.raises(ValueError, match="n: expected 1 <= n"):
        mlp_gate_up(**make_up(device), n=n, eps=1e-5, upstream=False)


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("split_k", [128, 256, 512])
def test_partial_slices_and_fallback(device, wdtype, split_k):
    """Slices that do not divide the inner axis (192 / 128, 384 / 256: the last slice is partly masked), one
    slice covering it all (S = 1, the unsliced path), with fp32 and bf16 weights."""
    a = make_up(device)
    a["w_gate_up"] = a["w_gate_up"].to(wdtype)
    b = {k: v.clone() for k, v in a.items()}
    mlp_gate_up(**a, n=10, eps=1e-5, upstream=False, block_n=16, block_i=16, split_k=min(split_k, 256))
    mlp_gate_up_ref(**b, n=10, eps=1e-5, upstream=False)
    close(a["act"], b["act"], rtol=1e-4, atol=1e-5)
    a = make_down(device)
    a["w_down"] = a["w_down"].to(wdtype)
    b = {k: v.clone() for k, v in a.items()}
    mlp_down(**a, n=10, upstream=False, block_n=16, block_c=16, split_k=split_k)
    mlp_down_ref(**b, n=10, upstream=False)
    close(a["out"], b["out"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("split_k", [8, 48])
def test_bad_split_k(device, split_k):
    with pytest.raises(ValueError, match="split_k"):
        mlp_gate_up(**make_up(device), n=10, eps=1e-5, upstream=False, split_k=split_k)
    with pytest.raises(ValueError, match="split_k"):
        mlp_down(**make_down(device), n=10, upstream=False, split_k=split_k)


def test_split_k_too_large_a_block_is_a_clear_error(device):
    with pytest.raises(ValueError, match="2\\^20"):
        mlp_down(**make_down(device), n=26, upstream=False, block_n=256, block_c=256, split_k=16)


def test_down_rejects_aliasing(device):
    a = make_down(device)
    a["out"] = a["h"]
    with pytest.raises(ValueError, match="alias"):
        mlp_down(**a, n=10, upstream=False)


@pytest.mark.parametrize("n,block_n,upstream", [(10, 16, False), (26, 32, True)])
def test_bf16_dots_match_ref(device, n, block_n, upstream):
    """bf16 mode's tensor-core products: the reference rounds the activations to bf16 as the kernels do, so only
    the summation order differs (split_k is ignored: one product over the inner axis)."""
    a = make_up(device)
    a["w_gate_up"] = a["w_gate_up"].bfloat16()
    b = {k: v.clone() for k, v in a.items()}
    mlp_gate_up(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, block_i=16, split_k=32, bf16_dots=True)
    mlp_gate_up_ref(**b, n=n, eps=1e-5, upstream=upstream, bf16_dots=True)
    close(a["h_out"], b["h_out"])
    close(a["act"], b["act"], rtol=1e-3, atol=1e-4)
    plain = {k: v.clone() for k, v in b.items()}
    mlp_gate_up_ref(**plain, n=n, eps=1e-5, upstream=upstream)
    assert not torch.equal(plain["act"], b["act"])  # the rounding is really modelled
    a = make_down(device)
    a["w_down"] = a["w_down"].bfloat16()
    b = {k: v.clone() for k, v in a.items()}
    mlp_down(**a, n=n, upstream=upstream, block_n=block_n, block_c=16, split_k=32, bf16_dots=True)
    mlp_down_ref(**b, n=n, upstream=upstream, bf16_dots=True)
    close(a["out"], b["out"], rtol=1e-3, atol=1e-4)


def test_bf16_dots_need_bf16_weights(device):
    with pytest.raises(ValueError, match="bf16_dots.*w_gate_up"):
        mlp_gate_up(**make_up(device), n=10, eps=1e-5, upstream=False, bf16_dots=True)
    with pytest.raises(ValueError, match="bf16_dots.*w_down"):
        mlp_down(**make_down(device), n=10, upstream=False, bf16_dots=True)


@pytest.mark.parametrize("upstream", [False, True])
@pytest.mark.parametrize("n,block_n,split_k", [(10, 16, 0), (10, 16, 32), (7, 32, 0), (26, 16, 64)])
def test_flat_token_blocks_match_ref(device, n, block_n, split_k, upstream):
    """flat=True: programs of block_n consecutive tokens of the B x n feed, straddling rows (3 rows, the middle
    one finished): the same outputs, finished rows and slots past n untouched (independent semantics)."""
    g = torch.Generator().manual_seed(3)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    R = 3
    alive = torch.tensor([1, 0, 1], dtype=torch.int32, device=device)
    up = dict(x=r(R, S, C), o_part=r(H, R, S, C), h_out=torch.zeros(R, S, C, device=device), ln_w=r(C),
              w_gate_up=r(2 * I, C) * 0.1, alive=alive, act=torch.zeros(R, S, I, device=device))
    up_ref = {k: v.clone() for k, v in up.items()}
    mlp_gate_up(**up, n=n, eps=1e-5, upstream=upstream, block_n=block_n, split_k=split_k, flat=True)
    mlp_gate_up_ref(**up_ref, n=n, eps=1e-5, upstream=upstream)
    close(up["h_out"], up_ref["h_out"])
    close(up["act"], up_ref["act"], rtol=1e-4, atol=1e-5)
    dn = dict(h=up["h_out"], act=up["act"], w_down=r(C, I) * 0.1, alive=alive,
              out=torch.zeros(R, S, C, device=device))
    dn_ref = {k: v.clone() for k, v in dn.items()}
    mlp_down(**dn, n=n, upstream=upstream, block_n=block_n, split_k=split_k, flat=True)
    mlp_down_ref(**dn_ref, n=n, upstream=upstream)
    close(dn["out"], dn_ref["out"], rtol=1e-4, atol=1e-4)
    for t in (up["act"], up["h_out"], dn["out"]):
        assert not t[:, n:].any(), "slots past n must not be touched"
        if not upstream:
            assert not t[1].any(), "a finished row must not be touched"


@pytest.mark.parametrize("n,block_n,split_k,upstream", [(10, 16, 0, False), (10, 16, 32, False), (26, 32, 64, True)])
def test_f64_dots_match_ref(device, n, block_n, split_k, upstream):
    """fp64 tensor-core products (fp32 mode): exact products and fp64 sums, so the fp32 reference is met at fp32
    tolerance, and the result is no further from the fp64 truth than the fp32 reference is."""
    a = make_up(device)
    b = {k: v.clone() for k, v in a.items()}
    mlp_gate_up(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, block_i=16, split_k=split_k, f64_dots=True)
    mlp_gate_up_ref(**b, n=n, eps=1e-5, upstream=upstream)
    close(a["h_out"], b["h_out"])
    close(a["act"], b["act"], rtol=1e-4, atol=1e-5)
    a = make_down(device)
    b = {k: v.clone() for k, v in a.items()}
    truth = {k: v.double() for k, v in a.items() if k != "alive"}
    mlp_down(**a, n=n, upstream=upstream, block_n=block_n, block_c=16, split_k=split_k, f64_dots=True)
    mlp_down_ref(**b, n=n, upstream=upstream)
    close(a["out"], b["out"], rtol=1e-4, atol=1e-4)
    go = slice(0, 2) if upstream else slice(1, 2)
    exact = truth["h"][go, :n] + truth["act"][go, :n] @ truth["w_down"].t()
    err64 = (a["out"][go, :n].double() - exact).abs().max()
    err32 = (b["out"][go, :n].double() - exact).abs().max()
    assert err64 <= err32, (err64, err32)


def test_f64_and_bf16_dots_are_exclusive(device):
    with pytest.raises(ValueError, match="choose one product mode"):
        a = make_down(device)
        a["w_down"] = a["w_down"].bfloat16()
        mlp_down(**a, n=10, upstream=False, bf16_dots=True, f64_dots=True)
