"""frame_setup and frame_finish against their references (integer bookkeeping: exact)."""

import pytest
import torch

from triton_autogaze.kernels.frame_finish import frame_finish, frame_finish_ref
from triton_autogaze.kernels.frame_setup import frame_setup, frame_setup_ref

B, N, C, K, L, EOS = 3, 196, 192, 10, 700, 265


def state(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    i32 = lambda v: torch.tensor(v, dtype=torch.int32, device=device)  # noqa: E731
    chunk = torch.randint(0, 265, (B, K), generator=g, dtype=torch.int32)
    chunk[0, 3] = EOS
    chunk[1, 7:] = EOS
    return dict(
        vision=torch.randn(B, 2, N, C, generator=g).to(device)[:, 1], x=torch.zeros(B, K + N, C, device=device),
        chunk_ids=chunk.to(device), chunk_n=i32([10, 3, 0]), clen=i32([216, 400, 0]), ccount=i32([210, 380, 0]),
        keymask=torch.zeros(B, L, dtype=torch.int8, device=device), pos=torch.zeros(B, K + N, dtype=torch.int32, device=device),
        dpos=torch.zeros(B, K, dtype=torch.int32, device=device), pre_qoff=i32([0, 0, 0]), pre_jmin=i32([0, 0, 0]),
        fstart=i32([0, 0, 0]), alive=i32([0, 0, 0]), ban=torch.ones(B, 512, dtype=torch.int8, device=device),
        out_ids=torch.zeros(B, 53, dtype=torch.int64, device=device), out_conf=torch.ones(B, 53, device=device),
        out_len=i32([5, 5, 5]),
    )


def test_frame_setup_matches_ref(device):
    a = state(device)
    b = {k: v.clone() for k, v in a.items()}
    frame_setup(**a, nfeed=40, eos=EOS)
    frame_setup_ref(**b, nfeed=40, eos=EOS)
    for k in a:
        if k == "x":  # pending slots are not written by frame_setup
            assert torch.equal(a[k][:, K:], b[k][:, K:])
        elif k == "pos":  # junk slots below jmin are unused
            for r in range(B):
                j0 = K - int(b["chunk_n"][r])
                assert torch.equal(a[k][r, j0:], b[k][r, j0:]), (k, r)
        else:
            assert torch.equal(a[k], b[k]), k


def test_frame_setup_positions_stay_in_the_rope_table(device):
    """Row 2 starts a fresh clip (empty cache, no pending chunk): its junk pending slots must not get position
    -1, which rmsnorm_qkv_rope would read one row before its cos/sin tables (an out-of-bounds GPU read)."""
    for fn in (frame_setup, frame_setup_ref):
        a = state(device)
        fn(**a, nfeed=40, eos=EOS)
        assert int(a["pos"].min()) >= 0, fn.__name__
        assert int(a["dpos"].min()) >= 0, fn.__name__


def test_frame_finish_matches_ref(device):
    a = state(device)
    a["out_ids"][:, :30] = torch.randint(0, 266, (B, 30))
    a["out_len"] = torch.tensor([30, 13, 10], dtype=torch.int32, device=device)
    a["fstart"] = torch.tensor([100, 200, 300], dtype=torch.int32, device=device)
    b = {k: v.clone() for k, v in a.items()}
    args = ("out_ids", "out_len", "chunk_n", "fstart", "clen", "ccount", "keymask")
    frame_finish(*(a[k] for k in args), eos=EOS)
    frame_finish_ref(*(b[k] for k in args), eos=EOS)
    for k in args:
        assert torch.equal(a[k], b[k]), k


def test_frame_setup_errors(device):
    a = state(device)
    a["pos"] = a["pos"].long()
    with pytest.raises(ValueError, match="pos"):
        frame_setup(**a, nfeed=40, eos=EOS)
