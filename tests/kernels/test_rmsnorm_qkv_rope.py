import pytest
import torch

from triton_autogaze.kernels.rmsnorm_qkv_rope import rmsnorm_qkv_rope, rmsnorm_qkv_rope_ref
from tile_marks import interp_tile



def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)

B, S, C, H, D, L = 2, 26, 192, 6, 32, 64


def make(device, parts=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    pos_tab = torch.arange(L, dtype=torch.float32)[:, None] * torch.rand(D // 2, generator=g)
    return dict(
        x=r(B, S, C), parts=r(parts, B, S, C) if parts else None, h_out=torch.zeros(B, S, C, device=device),
        ln_w=r(C), w_qkv=r(3 * C, C) * 0.1, cos_tab=pos_tab.cos().to(device), sin_tab=pos_tab.sin().to(device),
        pos=torch.randint(0, L, (B, S), generator=g, dtype=torch.int32).to(device),
        qoff=torch.tensor([3, 17], dtype=torch.int32, device=device), qoff_add=5,
        jmin=torch.tensor([0, 4], dtype=torch.int32, device=device),
        alive=torch.tensor([1, 0], dtype=torch.int32, device=device),
        q_out=torch.zeros(B, H, S, D, device=device), k_cache=torch.zeros(B, H, L, D, device=device),
        v_cache=torch.zeros(B, H, L, D, device=device),
    )


def clone(a):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in a.items()}


@pytest.mark.parametrize("n,upstream,block_n,block_h,parts,split_k", [
    (10, False, 16, 16, 2, 0), (26, True, 16, 64, 0, 0), pytest.param(26, False, 32, 128, 3, 0, marks=interp_tile),
    (10, False, 16, 16, 2, 32), (26, True, 16, 64, 0, 64), (26, False, 32, 16, 0, 16)])
def test_matches_ref(device, n, upstream, block_n, block_h, parts, split_k):
    a = make(device, parts)
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, block_h=block_h, split_k=split_k)
    rmsnorm_qkv_rope_ref(**b, n=n, eps=1e-5, upstream=upstream)
    for key in ("q_out", "k_cache", "v_cache", "h_out"):
        close(a[key], b[key])
    if not upstream:  # the dead row is untouched
        assert not a["q_out"][1].any() and not a["k_cache"][1].any()


@pytest.mark.parametrize("n,upstream,block_n,split_k", [(10, False, 16, 0), (26, True, 16, 32), (10, False, 32, 64)])
def test_f64_dots_match_ref(device, n, upstream, block_n, split_k):
    """fp64 tensor-core products of the fp32 operands, sliced or not: fp32 tolerance of the reference."""
    a = make(device, 2)
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, split_k=split_k, f64_dots=True)
    rmsnorm_qkv_rope_ref(**b, n=n, eps=1e-5, upstream=upstream)
    for key in ("q_out", "k_cache", "v_cache", "h_out"):
        close(a[key], b[key])


@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("split_k", [128, 256])
def test_partial_slice_and_fallback(device, wdtype, split_k):
    """128 does not divide C = 192 (the second slice is half masked); 256 >= C is one slice (the unsliced path)."""
    a = make(device, parts=2)
    a["w_qkv"], a["ln_w"] = a["w_qkv"].to(wdtype), a["ln_w"].to(wdtype)
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=10, eps=1e-5, upstream=False, split_k=split_k)
    rmsnorm_qkv_rope_ref(**b, n=10, eps=1e-5, upstream=False)
    for key in ("q_out", "k_cache", "v_cache", "h_out"):
        close(a[key], b[key])


@pytest.mark.parametrize("split_k", [8, 24, -1])
def test_bad_split_k(device, split_k):
    with pytest.raises(ValueError, match="split_k"):
        rmsnorm_qkv_rope(**make(device), n=10, eps=1e-5, upstream=False, split_k=split_k)


def test_bf16_cache(device):
    a = make(device)
    a["k_cache"], a["v_cache"] = a["k_cache"].bfloat16(), a["v_cache"].bfloat16()
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=10, eps=1e-5, upstream=True)
    rmsnorm_qkv_rope_ref(**b, n=10, eps=1e-5, upstream=True)
    close(a["k_cache"].float(), b["k_cache"].float(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("name,bad", [
    ("x", lambda t: t.double()), ("x", lambda t: t[0]), ("w_qkv", lambda t: t[:, :100].contiguous()),
    ("pos", lambda t: t.long()),
    ("alive", lambda t: t[:1]), ("k_cache", lambda t: t.transpose(2, 3))])
def test_launcher_errors(device, name, bad):
    a = make(device)
    a[name] = bad(a[name])
    with pytest.raises(ValueError, match=name):
        rmsnorm_qkv_rope(**a, n=10, eps=1e-5, upstream=False)


@pytest.mark.parametrize("n,upstream,block_n", [(10, False, 16), (26, True, 32)])
def test_bf16_dots(device, n, upstream, block_n):
    """bf16 mode's tensor-core qkv product: the reference rounds the normalised activations to bf16 as the kernel
    does; the cache entries are bf16, so they agree to a bf16 rounding step."""
    a = make(device, parts=2)
    a["w_qkv"], a["ln_w"] = a["w_qkv"].bfloat16(), a["ln_w"].bfloat16()
    a["k_cache"], a["v_cache"] = a["k_cache"].bfloat16(), a["v_cache"].bfloat16()
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, split_k=32, bf16_dots=True)
    rmsnorm_qkv_rope_ref(**b, n=n, eps=1e-5, upstream=upstream, bf16_dots=True)
    close(a["q_out"], b["q_out"], rtol=1e-3, atol=1e-4)
    close(a["h_out"], b["h_out"])
    close(a["k_cache"].float(), b["k_cache"].float(), rtol=1e-2, atol=1e-2)
    close(a["v_cache"].float(), b["v_cache"].float(), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="bf16_dots.*w_qkv"):
        rmsnorm_qkv_rope(**make(device), n=n, eps=1e-5, upstream=upstream, bf16_dots=True)


@pytest.mark.parametrize("n,split_k,upstream,parts,block_k", [(10, 32, False, 0, 0), (10, 0, True, 0, 0),
                                                              (7, 32, True, 2, 0), (13, 16, False, 2, 0),
                                                              (26, 0, True, 0, 32), (13, 0, False, 0, 64)])
def test_flat_token_blocks_match_ref(device, n, split_k, upstream, parts, block_k):
    """flat=True: programs of 16 consecutive tokens of the B x n feed straddle rows, so each token takes its
    own row's positions, cache offset, first real slot and alive flag (3 rows, the middle one stopped); also
    with the GEMM-shaped chunks of large prefill feeds (block_k)."""
    g = torch.Generator().manual_seed(1)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    B3 = 3
    pos_tab = torch.arange(L, dtype=torch.float32)[:, None] * torch.rand(D // 2, generator=g)
    a = dict(
        x=r(B3, S, C), parts=r(parts, B3, S, C) if parts else None, h_out=torch.zeros(B3, S, C, device=device),
        ln_w=r(C), w_qkv=r(3 * C, C) * 0.1, cos_tab=pos_tab.cos().to(device), sin_tab=pos_tab.sin().to(device),
        pos=torch.randint(0, L, (B3, S), generator=g, dtype=torch.int32).to(device),
        qoff=torch.tensor([3, 17, 30], dtype=torch.int32, device=device), qoff_add=5,
        jmin=torch.tensor([0, 4, 2], dtype=torch.int32, device=device),
        alive=torch.tensor([1, 0, 1], dtype=torch.int32, device=device),
        q_out=torch.zeros(B3, H, S, D, device=device), k_cache=torch.zeros(B3, H, L, D, device=device),
        v_cache=torch.zeros(B3, H, L, D, device=device),
    )
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=n, eps=1e-5, upstream=upstream, block_n=16, block_h=16, split_k=split_k, flat=True,
                     block_k=block_k)
    rmsnorm_qkv_rope_ref(**b, n=n, eps=1e-5, upstream=upstream)
    for key in ("q_out", "k_cache", "v_cache", "h_out"):
        close(a[key], b[key])
    if not upstream:
        assert not a["q_out"][1].any() and not a["k_cache"][1].any()


@pytest.mark.parametrize("n,upstream,block_n,block_h,block_k,f64", [
    (26, False, 16, 16, 32, False), (26, True, 32, 32, 64, True), (10, False, 16, 64, 16, True),
    (26, False, 32, 16, 256, False)])
def test_gemm_chunks_match_ref(device, n, upstream, block_n, block_h, block_k, f64):
    """block_k: the norm's sums of squares and then the product over the hidden axis in sequential chunks into
    one accumulator tile per output half (fp64 with f64_dots); 256 >= C is one masked chunk."""
    a = make(device, parts=0)
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=n, eps=1e-5, upstream=upstream, block_n=block_n, block_h=block_h, block_k=block_k,
                     f64_dots=f64)
    rmsnorm_qkv_rope_ref(**b, n=n, eps=1e-5, upstream=upstream)
    for key in ("q_out", "k_cache", "v_cache"):
        close(a[key], b[key])
    if not upstream:
        assert not a["q_out"][1].any() and not a["k_cache"][1].any()


def test_gemm_chunks_bad_arguments(device):
    with pytest.raises(ValueError, match="block_k.*parts"):
        rmsnorm_qkv_rope(**make(device, parts=2), n=10, eps=1e-5, upstream=False, block_k=32)
    with pytest.raises(ValueError, match="block_k"):
        rmsnorm_qkv_rope(**make(device, parts=0), n=10, eps=1e-5, upstream=False, block_k=24)


def test_gemm_chunks_bf16_dots(device):
    """bf16 mode's GEMM-shaped path: each chunk's normalised activations rounded to bf16 on tensor cores, fp32
    accumulation across chunks; bf16 cache entries."""
    a = make(device, parts=0)
    a["w_qkv"], a["ln_w"] = a["w_qkv"].bfloat16(), a["ln_w"].bfloat16()
    a["k_cache"], a["v_cache"] = a["k_cache"].bfloat16(), a["v_cache"].bfloat16()
    b = clone(a)
    rmsnorm_qkv_rope(**a, n=26, eps=1e-5, upstream=True, block_n=32, block_k=64, bf16_dots=True, flat=True)
    rmsnorm_qkv_rope_ref(**b, n=26, eps=1e-5, upstream=True, bf16_dots=True)
    close(a["q_out"], b["q_out"], rtol=1e-3, atol=1e-4)
    close(a["k_cache"].float(), b["k_cache"].float(), rtol=1e-2, atol=1e-2)
    close(a["v_cache"].float(), b["v_cache"].float(), rtol=1e-2, atol=1e-2)
