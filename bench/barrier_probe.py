"""Cost of a grid-wide barrier (for a persistent decode-step kernel) vs kernel boundaries, in CUDA graphs (GPU only).

    python bench/barrier_probe.py
Prints: per-barrier time with P programs, and per-launch time of an empty kernel chain, plus a correctness
check (every program sees every other program's store after each barrier).
"""
import subprocess

import torch
import triton
import triton.language as tl
from graph_timer import graph_us


@triton.jit
def grid_barrier(bar_ptr, target):
    """Every program adds one arrival to the int32 counter (release), then spins (acquire) until it reaches
    ``target`` (a scalar atomic runs once per program, so the count is exact). All programs must be resident."""
    tl.debug_barrier()
    tl.atomic_add(bar_ptr, 1, sem="release")
    seen = tl.atomic_add(bar_ptr, 0, sem="acquire")
    while seen < target:
        seen = tl.atomic_add(bar_ptr, 0, sem="acquire")
    tl.debug_barrier()


@triton.jit
def _probe(bar_ptr, buf_ptr, err_ptr, base, NB: tl.constexpr, P: tl.constexpr):
    pid = tl.program_id(0)
    for k in range(NB):
        tl.store(buf_ptr + k * P + pid, k * 1000 + pid)
        grid_barrier(bar_ptr, base + (k + 1) * P)
        other = (pid + 1 + k) % P
        v = tl.load(buf_ptr + k * P + other, cache_modifier=".cg")
        bad = v != k * 1000 + other
        tl.atomic_add(err_ptr, bad.to(tl.int32))


@triton.jit
def _empty(x_ptr):
    pass


def main():
    dev = torch.device("cuda")
    sms = torch.cuda.get_device_properties(dev).multi_processor_count
    bar = torch.zeros(1, dtype=torch.int32, device=dev)
    err = torch.zeros(1, dtype=torch.int32, device=dev)
    NB, L = 17, 20
    for P in (16, 64, sms):
        buf = torch.zeros(NB * P, dtype=torch.int32, device=dev)

        def run():
            bar.zero_()
            for i in range(L):
                _probe[(P,)](bar, buf, err, i * NB * P, NB=NB, P=P, num_warps=4)

        t = graph_us(run, per=1, reps=20) * 1e-6
        print(f"P={P:4d}: {L} launches x {NB} barriers: {t * 1e6:8.1f} us -> {t / (L * NB) * 1e6:.2f} us/barrier"
              f"  (incl. launch {t / L * 1e6:.1f} us/launch)  errors={int(err.item())}", flush=True)
    x = torch.zeros(1, device=dev)

    def chain():
        for _ in range(L * NB):
            _empty[(sms,)](x)

    t = graph_us(chain, per=1, reps=20) * 1e-6
    print(f"empty kernel chain: {t / (L * NB) * 1e6:.2f} us/launch ({sms} programs)")
    print(subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu",
                          "--format=csv"], capture_output=True, text=True).stdout)


if __name__ == "__main__":
    main()
