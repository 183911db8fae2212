"""Host cost of a streamed push's trace assembly (GPU): the one-launch ``kernels/trace_record.py`` against the
torch functions it replaced, and its parts.

    python bench/trace_record_probe.py [--tiles 1] [--frames 1] [--iters 300]

Per variant: host us a call with no sync in the loop (the device keeps up), then us a call with a sync after
each (host + launch + kernel). Engine-like inputs: one frame of 199-wide rows, random lengths.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from triton_autogaze.kernels.trace_record import _trace_record_kernel, trace_record, trace_record_ref

SCALES = (4, 16, 49, 196)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiles", type=int, default=1)
    ap.add_argument("--frames", type=int, default=1)
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    T, B, M, NV = args.frames, args.tiles, 199, sum(SCALES)
    g = torch.Generator().manual_seed(0)
    ids = torch.full((T, B, M), NV, dtype=torch.int64)
    lens = torch.randint(1, M + 1, (T, B), generator=g, dtype=torch.int32)
    for t in range(T):
        for b in range(B):
            ids[t, b, : lens[t, b]] = torch.randperm(NV, generator=g)[: lens[t, b]]
    ids, lens, conf = ids.cuda(), lens.cuda(), torch.rand(T, B, M).cuda()
    widths = [int(x) for x in lens.max(dim=1).values]
    tiles = (1, B)
    ext = [(g_, B * g_) for g_ in (2, 4, 7, 14)]
    N = sum(widths)
    outs = [torch.empty(B, N, dtype=torch.int64, device="cuda"), torch.empty(B, N, dtype=torch.bool, device="cuda"),
            torch.empty(B, N, device="cuda"), torch.empty(T, dtype=torch.int64, device="cuda")]
    masks = [torch.empty(B, T, n, device="cuda") for n in SCALES]
    stitched = [torch.empty(T, r, c, dtype=torch.bool, device="cuda") for r, c in ext]

    def launch_only():
        _trace_record_kernel[(B, T)](
            ids, conf, lens, *outs, *masks, *stitched, B, T, M, N, B, *[x for e in ext for x in e], 2, 4, 7, 14,
            NUM_SCALES=4, NV=NV, NV_PAD=512, T_PAD=triton_pow2(T), B_BLOCK=min(64, triton_pow2(B)), M_PAD=256,
            BLOCK_L=32, STITCH=True)

    def empties():
        return ([torch.empty(B, N, dtype=torch.int64, device="cuda"), torch.empty(B, N, dtype=torch.bool, device="cuda"),
                 torch.empty(B, N, device="cuda"), torch.empty(T, dtype=torch.int64, device="cuda")]
                + [torch.empty(B, T, n, device="cuda") for n in SCALES]
                + [torch.empty(T, r, c, dtype=torch.bool, device="cuda") for r, c in ext])

    variants = {
        "trace_record": lambda: trace_record(ids, conf, lens, widths, SCALES, tiles, ext),
        "torch (assemble_record + cat + stitch_masks)": lambda: trace_record_ref(ids, conf, lens, widths, SCALES,
                                                                                   tiles, ext),
        "kernel launch alone": launch_only,
        "12 torch.empty": empties,
        "one torch.empty": lambda: torch.empty(4096, dtype=torch.uint8, device="cuda"),
    }
    ref = trace_record_ref(ids, conf, lens, widths, SCALES, tiles, ext)
    got = trace_record(ids, conf, lens, widths, SCALES, tiles, ext)
    assert all(torch.equal(a, b) for a, b in zip(got["gazing_pos"], ref["gazing_pos"]))
    for name, fn in variants.items():
        host, synced = host_and_synced(fn, args.iters)
        print(f"{name:48s} host {host:7.1f} us a call, with a sync {synced:7.1f} us")


def host_and_synced(fn, iters: int, warm: int = 20) -> tuple[float, float]:
    """us a call of ``fn`` on the host with no sync in the loop, then with a device sync after each call."""
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    host = (time.perf_counter() - t0) / iters * 1e6
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
        torch.cuda.synchronize()
    return host, (time.perf_counter() - t0) / iters * 1e6


def triton_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


if __name__ == "__main__":
    main()
