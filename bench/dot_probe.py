"""Is the fp32 FMA `tl.dot` the latency chain of the decode kernels? (GPU only)

    python bench/dot_probe.py
Times, in CUDA graphs of 50 launches, one [BN, C] x [BO, C]^T product per program (18 programs, decode shape
BN=16, C=192 (padded 256), BO=16), done four ways: tl.dot ieee on full tiles; broadcast-multiply + tl.sum over
C in chunks of 32 / 64; and an empty kernel. Also checks that all ways give the same result (to fp32 rounding).
Then the sweep that decides how to cut the engine's products: one tl.dot of inner length K = 32 ... 512, and a
K = 384 product as 1, 3 or 6 accumulated tl.dot calls (what mlp_down does with its inner block).
"""

import torch
import triton
import triton.language as tl
from graph_timer import graph_us


@triton.jit
def _product(a_ptr, w_ptr, o_ptr, C: tl.constexpr, BKC: tl.constexpr, BN: tl.constexpr, BO: tl.constexpr,
             USE_DOT: tl.constexpr):
    """o[pid] = a [BN, C] @ w[pid*BO:(pid+1)*BO] [BO, C]^T, over inner chunks of BKC (one chunk when BKC >= C):
    each chunk one tl.dot (IEEE fp32) or a broadcast multiply + tl.sum."""
    pid = tl.program_id(0)
    on = tl.arange(0, BN)
    oo = tl.arange(0, BO)
    acc = tl.zeros([BN, BO], tl.float32)
    for c0 in tl.static_range(0, C, BKC):
        oc = c0 + tl.arange(0, BKC)
        cm = oc < C
        a = tl.load(a_ptr + on[:, None] * C + oc[None, :], mask=cm[None, :], other=0.0)
        w = tl.load(w_ptr + (pid * BO + oo)[:, None] * C + oc[None, :], mask=cm[None, :], other=0.0)
        if USE_DOT:
            acc += tl.dot(a, tl.trans(w), input_precision="ieee")
        else:
            acc += tl.sum(a[:, None, :] * w[None, :, :], axis=2)
    tl.store(o_ptr + pid * BN * BO + on[:, None] * BO + oo[None, :], acc)


@triton.jit
def _product_split(a_ptr, w_ptr, o_ptr, C: tl.constexpr, S: tl.constexpr, KS: tl.constexpr, BN: tl.constexpr,
                   BO: tl.constexpr, PREC: tl.constexpr):
    """The same product with its inner axis cut into S slices of KS (S * KS >= C, tail masked): one batched
    [S, BN, KS] x [S, KS, BO] tl.dot, then a sum over the slices, so each slice's FMA chain is KS long."""
    pid = tl.program_id(0)
    os_ = tl.arange(0, S)
    on = tl.arange(0, BN)
    oo = tl.arange(0, BO)
    ok = tl.arange(0, KS)
    col_a = os_[:, None, None] * KS + ok[None, None, :]  # [S, 1, KS]
    a = tl.load(a_ptr + on[None, :, None] * C + col_a, mask=col_a < C, other=0.0)  # [S, BN, KS]
    col_w = os_[:, None, None] * KS + ok[None, :, None]  # [S, KS, 1]
    w = tl.load(w_ptr + (pid * BO + oo)[None, None, :] * C + col_w, mask=col_w < C, other=0.0)  # [S, KS, BO]
    acc = tl.sum(tl.dot(a, w, input_precision=PREC), axis=0)
    tl.store(o_ptr + pid * BN * BO + on[:, None] * BO + oo[None, :], acc)


@triton.jit
def _empty(o_ptr):
    pass


def main():
    dev = "cuda"
    C, BN, BO, P = 192, 16, 16, 18
    a = torch.randn(BN, C, device=dev)
    w = torch.randn(P * BO, C, device=dev)
    ref = (a.double() @ w.double().t()).view(BN, P, BO).permute(1, 0, 2).float()
    for name, fn in [
        ("tl.dot ieee [16x256]x[256x16]", lambda o: _product[(P,)](a, w, o, C, 256, BN, BO, True)),
        ("sum chunks of 16", lambda o: _product[(P,)](a, w, o, C, 16, BN, BO, False)),
        ("sum chunks of 32", lambda o: _product[(P,)](a, w, o, C, 32, BN, BO, False)),
        ("sum chunks of 64", lambda o: _product[(P,)](a, w, o, C, 64, BN, BO, False)),
        ("empty", lambda o: _empty[(P,)](o)),
    ]:
        o = torch.zeros(P, BN, BO, device=dev)
        t = graph_us(lambda: fn(o))
        err = 0.0 if name == "empty" else (o - ref).abs().max().item()
        print(f"{name:32s} {t:7.2f} us/launch  max err {err:.2e}", flush=True)


def sweep():
    dev = "cuda"
    BN, BO, P = 16, 16, 18
    print("one tl.dot of inner length K (18 programs, [16 x K] x [K x 16]):")
    for K in (32, 64, 128, 192, 256, 384, 512):
        a = torch.randn(BN, K, device=dev)
        w = torch.randn(P * BO, K, device=dev)
        o = torch.zeros(P, BN, BO, device=dev)
        t = graph_us(lambda: _product[(P,)](a, w, o, K, triton.next_power_of_2(K), BN, BO, True))
        print(f"  K={K:4d}: {t:7.2f} us/launch", flush=True)
    K = 384
    a = torch.randn(BN, K, device=dev)
    w = torch.randn(P * BO, K, device=dev)
    o = torch.zeros(P, BN, BO, device=dev)
    print(f"K={K} as accumulated tl.dot calls of inner block BKC:")
    for bkc in (64, 128, 512):
        t = graph_us(lambda: _product[(P,)](a, w, o, K, bkc, BN, BO, True))
        print(f"  BKC={bkc:4d} ({triton.cdiv(K, bkc)} dots): {t:7.2f} us/launch", flush=True)


def _regs(k) -> str:
    try:
        return f"regs {k.n_regs:3d} spills {k.n_spills:4d}"
    except Exception:  # older/newer Triton without these attributes
        return ""


def split_sweep():
    """Does cutting the inner axis into parallel slices (batched tl.dot + sum) shorten the chain?"""
    dev = "cuda"
    BN, BO, P = 16, 16, 18
    print("one [16 x K] x [K x 16] product as S parallel slices of KS (batched tl.dot + sum over slices):")
    for K, cfgs in ((32, ((1, 32), (2, 16))), (64, ((1, 64), (2, 32), (4, 16))),
                    (192, ((1, 256), (2, 128), (4, 64), (8, 32), (16, 16))),
                    (384, ((1, 512), (4, 128), (8, 64), (16, 32)))):
        a = torch.randn(BN, K, device=dev)
        w = torch.randn(P * BO, K, device=dev)
        ref = (a.double() @ w.double().t()).view(BN, P, BO).permute(1, 0, 2).float()
        for S, KS in cfgs:
            for nw in ((2, 4, 8) if K == 192 and S in (4, 8) else (4,)):
                for prec in (("ieee", "tf32x3") if S == 1 and K == 192 else ("ieee",)):
                    o = torch.zeros(P, BN, BO, device=dev)
                    holder = {}

                    def fn():
                        holder["k"] = _product_split[(P,)](a, w, o, K, S, KS, BN, BO, prec, num_warps=nw)
                    try:
                        t = graph_us(fn)
                    except Exception as e:  # a shape this Triton cannot lower: report and go on
                        print(f"  K={K:4d} S={S:2d} KS={KS:3d} warps {nw} {prec}: failed {type(e).__name__}: "
                              f"{str(e)[:100]}", flush=True)
                        continue
                    err = (o - ref).abs().max().item()
                    print(f"  K={K:4d} S={S:2d} KS={KS:3d} warps {nw} {prec:6s}: {t:7.2f} us/launch  "
                          f"err {err:.1e}  {_regs(holder.get('k'))}", flush=True)


if __name__ == "__main__":
    import sys
    if "--split" in sys.argv:
        split_sweep()
    else:
        main()
        sweep()
        split_sweep()
