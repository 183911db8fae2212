import pytest
import torch

from triton_autogaze.kernels.heads_select import SelectScratch, ban_width, heads_select, heads_select_ref



def close(a, b, rtol=1e-5, atol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=atol)

B, S, C, K, V = 3, 20, 192, 10, 266
EOS = V - 1


def make(device, tau, alive, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    ban = torch.zeros(B, ban_width(V), dtype=torch.int8)
    ban[0, torch.randperm(V - 1, generator=g)[:40]] = 1
    return dict(
        x=r(B, S, C), parts=r(3, B, S, C), norm_w=r(C), lm_w=r(K * V, C), tl_w=r(K, C) * 0.1,
        alive_in=torch.tensor(alive, dtype=torch.int32, device=device),
        alive_out=torch.zeros(B, dtype=torch.int32, device=device),
        tau=None if tau is None else torch.tensor(tau, dtype=torch.float32, device=device),
        scratch=SelectScratch(B, K, V, device), ban=ban.to(device), embed=r(V, C),
        x_next=torch.zeros(B, S, C, device=device), chunk_ids=torch.zeros(B, K, dtype=torch.int32, device=device),
        chunk_n=torch.zeros(B, dtype=torch.int32, device=device),
        out_ids=torch.full((B, 40), EOS, dtype=torch.int64, device=device),
        out_conf=torch.zeros(B, 40, device=device), out_len=torch.zeros(B, dtype=torch.int32, device=device),
    )


CASES = [  # tau, alive, step, n_step, upstream
    (None, [1, 1, 1], 0, 10, False),
    ([0.0, -0.3, 0.3], [1, 1, 1], 0, 10, False),
    ([0.0, -0.3, 0.3], [1, 0, 1], 1, 10, True),
    ([0.0, -0.3, 0.3], [1, 0, 1], 3, 7, False),
    (None, [0, 0, 0], 2, 10, True),
]


@pytest.mark.parametrize("tau,alive,step,n_step,upstream", CASES)
def test_matches_ref(device, tau, alive, step, n_step, upstream):
    a = make(device, tau, alive)
    b = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
    b["scratch"] = SelectScratch(B, K, V, device)
    kw = dict(last_slot=S - 1, step=step, n_step=n_step, eps=1e-5, eos=EOS, upstream=upstream)
    heads_select(**a, **kw)
    heads_select_ref(**b, **kw)
    for key in ("out_ids", "chunk_ids", "chunk_n", "ban", "out_len", "alive_out"):
        assert torch.equal(a[key], b[key]), key
    close(a["out_conf"], b["out_conf"])
    close(a["x_next"], b["x_next"])
    assert not a["scratch"].cnt.any(), "tickets must be reset"


@pytest.mark.parametrize("vocab_parts", [2, 4, 9])
@pytest.mark.parametrize("tau,alive,step,n_step,upstream", CASES[2:])
def test_vocab_parts_match_ref(device, vocab_parts, tau, alive, step, n_step, upstream):
    """The lm_head rows shared out over several programs a head (9 chunks of 32 rows: parts of 5+4, 3+3+3, 1 x 9);
    the task-loss values come from each head's first part."""
    a = make(device, tau, alive, seed=1)
    b = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
    b["scratch"] = SelectScratch(B, K, V, device)
    kw = dict(last_slot=S - 1, step=step, n_step=n_step, eps=1e-5, eos=EOS, upstream=upstream)
    heads_select(**a, **kw, vocab_parts=vocab_parts)
    heads_select_ref(**b, **kw)
    for key in ("out_ids", "chunk_ids", "chunk_n", "ban", "out_len", "alive_out"):
        assert torch.equal(a[key], b[key]), key
    close(a["out_conf"], b["out_conf"])
    close(a["x_next"], b["x_next"])
    run = b["alive_in"] != 0
    if upstream:
        run = run.any().expand_as(run)
    close(a["scratch"].logits[run], b["scratch"].logits[run], rtol=1e-4, atol=1e-4)
    close(a["scratch"].tl[run], b["scratch"].tl[run])
    assert not a["scratch"].cnt.any(), "tickets must be reset"


@pytest.mark.parametrize("dup", ["all", "pairs"])
def test_choice_resolves_conflicts(device, dup):
    """Where positions' own argmaxes collide (every head the same lm_head rows: each position after the first
    would take an id an earlier one took; or heads in equal pairs), each position takes the best id not chosen
    earlier in the step, as the reference does, ties to the lowest id included."""
    a = make(device, None, [1, 1, 1], seed=2)
    lm = a["lm_w"].view(K, V, C)
    if dup == "all":
        lm[:] = lm[0].clone()
        lm[:, 7] = lm[:, 3]  # a tie between ids 3 and 7 on every head
    else:
        lm[1::2] = lm[0::2].clone()
    ban0 = a["ban"][:, :V].clone()
    b = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
    b["scratch"] = SelectScratch(B, K, V, device)
    kw = dict(last_slot=S - 1, step=0, n_step=K, eps=1e-5, eos=EOS, upstream=False)
    heads_select(**a, **kw)
    heads_select_ref(**b, **kw)
    for key in ("out_ids", "chunk_ids", "ban", "out_len", "alive_out"):
        assert torch.equal(a[key], b[key]), key
    close(a["out_conf"], b["out_conf"])
    assert all(len(set(r.tolist())) == K for r in a["out_ids"][:, :K])  # no repeats within the step
    # each position's own argmax over the frame's bans repeats an earlier one: the exclusion decided there
    banned = (ban0 != 0) | (torch.arange(V, device=ban0.device) == EOS)
    picks = b["scratch"].logits.masked_fill(banned[:, None, :], float("-inf")).argmax(-1)
    if dup == "all":
        assert bool((picks == picks[:, :1]).all())
    else:
        assert bool((picks[:, 1::2] == picks[:, 0::2]).all())


@pytest.mark.parametrize("bad", [0, 10, 2.0, True])
def test_vocab_parts_refused(device, bad):
    a = make(device, None, [1, 1, 1])
    with pytest.raises(ValueError, match="vocab_parts"):
        heads_select(**a, last_slot=0, step=0, n_step=10, eps=1e-5, eos=EOS, upstream=False, vocab_parts=bad)


def test_ban_and_eos_respected(device):
    a = make(device, None, [1, 1, 1])
    heads_select(**a, last_slot=0, step=0, n_step=10, eps=1e-5, eos=EOS, upstream=False)
    ids = a["out_ids"][:, :10]
    assert (ids != EOS).all()
    assert all(len(set(row.tolist())) == 10 for row in ids)
    banned = a["ban"][0].nonzero().flatten()
    assert set(ids[0].tolist()) <= set(banned.tolist())  # chosen ids are banned from now on


@pytest.mark.parametrize("name,bad", [
    ("x", lambda t: t.double()), ("lm_w", lambda t: t[:100].contiguous()), ("ban", lambda t: t[:, :266].contiguous()),
    ("out_ids", lambda t: t.int()), ("tau", lambda t: t[:2])])
def test_launcher_errors(device, name, bad):
    a = make(device, [0.0, 0.0, 0.0], [1, 1, 1])
    a[name] = bad(a[name])
    with pytest.raises(ValueError, match=name):
        heads_select(**a, last_slot=0, step=0, n_step=10, eps=1e-5, eos=EOS, upstream=False)


def test_negative_step_is_refused(device):
    """step * K is the output column: a negative step would store before the row."""
    a = make(device, None, [1, 1, 1])
    with pytest.raises(ValueError, match="n_step"):
        heads_select(**a, last_slot=0, step=-1, n_step=10, eps=1e-5, eos=EOS, upstream=False)
