import pytest
import torch

from triton_autogaze.kernels.attention import AttentionScratch, attention, attention_ref



def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)

B, S, C, H, D, L = 2, 40, 192, 6, 32, 160


def make(device, n, block_q, chunk, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    km = (torch.rand(B, L, generator=g) > 0.3).to(torch.int8)
    km[:, :4] = 1  # every query sees at least one key
    qoff = torch.tensor([L - n - 7, 50], dtype=torch.int32)
    return dict(
        q=r(B, H, S, D), k_cache=r(B, H, L, D), v_cache=r(B, H, L, D), keymask=km.to(device),
        qoff=qoff.to(device), qoff_add=3, jmin=torch.tensor([0, 2], dtype=torch.int32, device=device),
        alive=torch.tensor([1, 1], dtype=torch.int32, device=device), w_o=r(C, C) * 0.1,
        out=torch.zeros(H, B, S, C, device=device),
        scratch=AttentionScratch(B * H * -(-S // block_q), -(-L // chunk), block_q, D, device),
        max_key_end=int(qoff.max()) + 3 + n,
    )


def check_vs_ref(device, n, block_q, chunk, upstream, seed=0, **launch):
    """One launch against the torch reference on make()'s inputs; returns those inputs."""
    a = make(device, n, block_q, chunk, seed=seed)
    ref_out = a["out"].clone()
    attention(**a, n=n, upstream=upstream, block_q=block_q, chunk=chunk, **launch)
    attention_ref(**{**a, "out": ref_out}, n=n, upstream=upstream)
    for b in range(B):
        j0 = int(a["jmin"][b])
        close(a["out"][:, b, j0:n], ref_out[:, b, j0:n], rtol=1e-4, atol=1e-5)
    assert not a["scratch"].cnt.any(), "tickets must be reset for the next launch"
    return a


@pytest.mark.parametrize("n,block_q,chunk,block_k,upstream", [
    (10, 16, 32, 16, False), (10, 16, 256, 64, True), (34, 16, 64, 32, False), (34, 64, 32, 32, True)])
def test_matches_ref(device, n, block_q, chunk, block_k, upstream):
    check_vs_ref(device, n, block_q, chunk, upstream, block_k=block_k)


@pytest.mark.parametrize("n,block_q,chunk,block_k,upstream", [(10, 16, 32, 16, False), (34, 32, 64, 32, True)])
def test_f64_dots_match_ref(device, n, block_q, chunk, block_k, upstream):
    """fp64 tensor-core products of the fp32 operands (QK^T, PV, o_proj): fp32 tolerance of the reference."""
    check_vs_ref(device, n, block_q, chunk, upstream, block_k=block_k, f64_dots=True)


@pytest.mark.parametrize("merge_group", [1, 2, 16])
def test_merge_groups(device, merge_group):
    # 5 splits of 32 keys: groups of 1 and 2 take several loads (the last one partly masked), 16 takes one
    a = check_vs_ref(device, 10, 16, 32, False, seed=3, block_k=16, merge_group=merge_group)
    with pytest.raises(ValueError, match="merge_group"):
        attention(**a, n=10, upstream=False, block_q=16, chunk=32, block_k=16, merge_group=3)


@pytest.mark.parametrize("oproj_block", [16, 64])
def test_oproj_blocks(device, oproj_block):
    # C = 192: 12 blocks of 16, or 3 of 64
    a = check_vs_ref(device, 10, 16, 64, True, seed=4, block_k=32, oproj_block=oproj_block)
    for bad in (8, 48, 512):
        with pytest.raises(ValueError, match="oproj_block"):
            attention(**a, n=10, upstream=True, block_q=16, chunk=64, block_k=32, oproj_block=bad)


def test_dead_row_skipped(device):
    a = make(device, 10, 16, 32)
    a["alive"][1] = 0
    attention(**a, n=10, upstream=False, block_q=16, chunk=32, block_k=16)
    assert not a["out"][:, 1].any()


def test_bf16_cache(device):
    a = make(device, 10, 16, 64)
    a["k_cache"], a["v_cache"] = a["k_cache"].bfloat16(), a["v_cache"].bfloat16()
    ref_out = a["out"].clone()
    attention(**a, n=10, upstream=False, block_q=16, chunk=64, block_k=32)
    attention_ref(**{**a, "out": ref_out}, n=10, upstream=False)
    close(a["out"][:, :, 2:10], ref_out[:, :, 2:10], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name,bad", [
    ("q", lambda t: t.double()), ("keymask", lambda t: t.bool()), ("w_o", lambda t: t[:10]),
    ("jmin", lambda t: t.long())])
def test_launcher_errors(device, name, bad):
    a = make(device, 10, 16, 32)
    a[name] = bad(a[name])
    with pytest.raises(ValueError, match=name):
        attention(**a, n=10, upstream=False, block_q=16, chunk=32, block_k=16)


def test_key_end_beyond_cache(device):
    a = make(device, 10, 16, 32)
    a["max_key_end"] = L + 1
    with pytest.raises(ValueError, match="max_key_end"):
        attention(**a, n=10, upstream=False, block_q=16, chunk=32, block_k=16)


def test_scratch_of_another_head_dim(device):
    """A scratch sized for head dim 16 would take 32-dim partials past its end."""
    a = make(device, 10, 16, 32)
    a["scratch"] = AttentionScratch(B * H * -(-S // 16), -(-L // 32), 16, D // 2, device)
    with pytest.raises(ValueError, match="scratch"):
        attention(**a, n=10, upstream=False, block_q=16, chunk=32, block_k=16)


@pytest.mark.parametrize("n,block_q,upstream", [(10, 16, False), (34, 32, True)])
def test_bf16_dots(device, n, block_q, upstream):
    """bf16 mode's tensor-core attention: queries and head outputs rounded as the reference rounds them; the
    per-block probabilities are rounded too, which the dense reference cannot mirror (measured under the
    interpreter: up to 2.8e-3 from the rounded reference, 6.2e-3 from an unrounded one), hence 4e-3."""
    a = make(device, n, block_q, 64)
    a["k_cache"], a["v_cache"], a["w_o"] = a["k_cache"].bfloat16(), a["v_cache"].bfloat16(), a["w_o"].bfloat16()
    ref_out = a["out"].clone()
    attention(**a, n=n, upstream=upstream, block_q=block_q, chunk=64, block_k=32, bf16_dots=True)
    attention_ref(**{**a, "out": ref_out}, n=n, upstream=upstream, bf16_dots=True)
    for b in range(B):
        j0 = int(a["jmin"][b])
        close(a["out"][:, b, j0:n], ref_out[:, b, j0:n], rtol=0, atol=4e-3)
    assert not a["scratch"].cnt.any()
    with pytest.raises(ValueError, match="bf16_dots"):
        attention(**make(device, n, block_q, 64), n=n, upstream=upstream, block_q=block_q, chunk=64, block_k=32,
                  bf16_dots=True)
