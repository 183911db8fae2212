"""Attention launch shapes at the engine's decode and prefill shapes, one kernel replayed in a CUDA graph (GPU only).

    python bench/attention_micro.py [--rows 1 8] [--keys 1000 3600] [--bf16] [--[no-]f64-dots] [--decode 256:64:4:8 ...]
        [--prefill 256:64:4:8 ...] [--prefill-bq 32]

Attention is about half of a clip's kernel time (bench/engine_profile.py, RESULTS.md section 1): each split
program walks ``chunk / block_k`` key blocks in sequence, then the last one merges the splits. Each line:
shape, keys, configuration (chunk, key block, warps, merge group, o_proj columns a product or None: all),
microseconds a launch (graph of 50 launches, median of 5 replays). Every configuration's output is checked
against the first one's (same rounding up to the split order: max abs difference printed).
"""
import argparse
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_gpu import fixture_dir  # noqa: E402
from graph_timer import graph_us  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.kernels import attention as A  # noqa: E402

DECODE = [  # (chunk, block_k, warps, merge group)
    (256, 64, 4, 8), (256, 32, 4, 8), (256, 64, 8, 8), (128, 64, 4, 8), (128, 32, 4, 16), (64, 64, 4, 16),
    (64, 32, 4, 16), (512, 64, 4, 8), (512, 128, 8, 8),
]
PREFILL = [(256, 64, 4, 8), (128, 64, 4, 8), (256, 32, 4, 8), (512, 64, 8, 8)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--keys", type=int, nargs="+", default=[1000, 3600])
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--f64-dots", action=argparse.BooleanOptionalAction, default=None,
                    help="fp32: QK^T and o_proj on fp64 tensor cores (default: as the engine on this GPU)")
    ap.add_argument("--decode", nargs="+", default=None, help="chunk:block_k:warps:merge_group[:oproj_block[:num_stages]] (0: default)")
    ap.add_argument("--prefill", nargs="+", default=None, help="the same for the prefill shape")
    ap.add_argument("--prefill-bq", type=int, default=32, help="queries a prefill program (engine: 32 fp32, 64 bf16)")
    args = ap.parse_args()

    def parse(specs, default):
        if specs is None:
            return [c + (None, None) for c in default]
        out = []
        for sp in specs:
            v = [int(x) for x in sp.split(":")] + [0, 0]
            out.append(tuple(v[:4]) + (v[4] or None, v[5] or None))
        return out

    decode_cfgs, prefill_cfgs = parse(args.decode, DECODE), parse(args.prefill, PREFILL)
    cfg, w, _ = load_checkpoint(fixture_dir() / "model")
    dtype = torch.bfloat16 if args.bf16 else torch.float32
    gen = TritonGenerator(w, cfg, dtype=dtype)
    tc = args.bf16
    f64 = gen.f64_dots if args.f64_dots is None else bool(args.f64_dots) and not tc
    H = cfg.decoder.num_attention_heads
    D = cfg.decoder.hidden_size // H
    lw = gen.w.layers[0]
    print(f"device {torch.cuda.get_device_name()}  dtype {dtype}  bf16 dots {tc}  f64 dots {f64}")
    for B in args.rows:
        ws = gen._new_workspace(B, 4096)
        ws.alive.fill_(1)
        ws.keymask.fill_(1)
        ws.q.normal_()
        for t in (ws.k[0], ws.v[0]):
            t.copy_(torch.randn(t.shape, device=t.device))
        al = ws.alive[0]
        for tag, n, bq, cfgs in (("decode", 10, 16, decode_cfgs), ("prefill", 206, args.prefill_bq, prefill_cfgs)):
            for keys in args.keys:
                kend = keys + n
                ws.fstart.fill_(keys)
                qoff = ws.fstart
                first = None
                for chunk, bk, nw, G, ob, st in cfgs:
                    scratch = A.AttentionScratch(B * H * triton.cdiv(n, bq), triton.cdiv(kend, chunk), bq, D,
                                                 gen.device)
                    ws.opart.zero_()

                    def fn(chunk=chunk, bk=bk, nw=nw, G=G, ob=ob, st=st, scratch=scratch):
                        A.attention(ws.q, ws.k[0], ws.v[0], ws.keymask, qoff, 0, ws.zeros, al, lw["o"], ws.opart,
                                    scratch, n, kend, False, block_q=bq, chunk=chunk, block_k=bk, num_warps=nw,
                                    merge_group=G, oproj_block=ob, bf16_dots=tc, f64_dots=f64,
                                    num_stages=st)
                    try:
                        us = graph_us(fn)
                    except Exception as e:  # noqa: BLE001 - a shape this Triton cannot lower: report, go on
                        print(f"B={B} {tag:7s} keys {keys:5d} chunk{chunk:4d} bk{bk:4d} w{nw} G{G:2d} ob{ob} st{st}  FAILED {type(e).__name__}: "
                              f"{str(e)[:80]}", flush=True)
                        continue
                    out = ws.opart[:, :, :n].clone()
                    if first is None:
                        first = out
                    diff = (out - first).abs().max().item()
                    print(f"B={B} {tag:7s} keys {keys:5d} chunk{chunk:4d} bk{bk:4d} w{nw} G{G:2d} ob{ob} st{st} {us:8.2f} us  "
                          f"diff {diff:.1e}",
                          flush=True)


if __name__ == "__main__":
    main()
