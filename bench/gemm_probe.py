"""What a prefill product of many rows could run at: plain GEMMs of the decoder's prefill shapes (M tokens x K
hidden, fp32 weights [N, K]) timed as cuBLAS IEEE fp32 (TF32 off), cuBLAS fp64, and a Triton GEMM whose
products run on fp64 tensor cores (fp32 operands upcast exactly, fp64 accumulation: the engine's fp32 mode) or
IEEE fp32 FMA, over a few tile shapes.

    python bench/gemm_probe.py [--rows 45] [--tokens 206]

Prints us a launch and TFLOP/s for each. GPU only.
"""

from __future__ import annotations

import argparse

import torch
import triton
import triton.language as tl


@triton.jit
def _gemm_kernel(a_ptr, w_ptr, out_ptr, M, N, K: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
                 BK: tl.constexpr, F64: tl.constexpr):
    pm = tl.program_id(0)
    pn = tl.program_id(1)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    if F64:
        acc = tl.zeros([BM, BN], tl.float64)
    else:
        acc = tl.zeros([BM, BN], tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        a = tl.load(a_ptr + rm[:, None] * K + rk[None, :], mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        w = tl.load(w_ptr + rn[None, :] * K + rk[:, None], mask=(rn[None, :] < N) & (rk[:, None] < K), other=0.0)
        if F64:
            acc += tl.dot(a.to(tl.float64), w.to(tl.float64))
        else:
            acc += tl.dot(a, w, input_precision="ieee")
    tl.store(out_ptr + rm[:, None] * N + rn[None, :], acc.to(tl.float32), mask=(rm[:, None] < M) & (rn[None, :] < N))


def gemm(a, w, out, bm, bn, bk, f64, warps, stages):
    M, K = a.shape
    N = w.shape[0]
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    _gemm_kernel[grid](a, w, out, M, N, K=K, BM=bm, BN=bn, BK=bk, F64=f64, num_warps=warps, num_stages=stages)


def bench(fn) -> float:
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(20):
            fn()
    g.replay()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        torch.cuda.synchronize()
        best = min(best, s.elapsed_time(e) * 1000 / 20)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=45)
    ap.add_argument("--tokens", type=int, default=206)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    M = args.rows * args.tokens
    dev = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}  M = {M} tokens")
    for name, K, N in (("qkv", 192, 576), ("gate_up", 192, 768), ("down", 384, 192)):
        a = torch.randn(M, K, device=dev)
        w = torch.randn(N, K, device=dev) / K ** 0.5
        out = torch.empty(M, N, device=dev)
        ref = (a.double() @ w.double().t())
        flop = 2 * M * K * N
        rows = [("cublas fp32 ieee", lambda: torch.matmul(a, w.t(), out=out)),
                ("cublas fp64", lambda: torch.matmul(a.double(), w.double().t()))]
        for f64 in (True, False):
            for bm, bn, bk, warps, stages in ((64, 64, 32, 4, 2), (64, 64, 32, 4, 3), (128, 64, 32, 4, 2),
                                              (128, 64, 32, 8, 2), (64, 128, 32, 4, 2), (128, 128, 32, 8, 2),
                                              (64, 64, 16, 4, 3), (32, 64, 32, 4, 2), (64, 32, 32, 4, 2)):
                rows.append((f"triton {'f64' if f64 else 'ieee'} {bm}x{bn}x{bk} w{warps} s{stages}",
                             (lambda bm=bm, bn=bn, bk=bk, f64=f64, warps=warps, stages=stages:
                              gemm(a, w, out, bm, bn, bk, f64, warps, stages))))
        for label, fn in rows:
            try:
                us = bench(fn)
                fn()
                torch.cuda.synchronize()
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item() if "fp64" not in label else 0.0
                print(f"{name:8s} {label:34s} {us:9.1f} us  {flop / us / 1e6:7.1f} TFLOP/s  rel err {err:.1e}")
            except Exception as exc:  # a tile that does not compile or fit: say so and go on
                print(f"{name:8s} {label:34s} failed: {type(exc).__name__}: {str(exc)[:80]}")


if __name__ == "__main__":
    main()
