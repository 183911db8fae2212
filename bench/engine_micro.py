"""Per-launch GPU time of each engine kernel at decode / prefill shapes, replayed in a CUDA graph.

    python bench/engine_micro.py [--rows 1 8] [--keys 2000] [--focus]

Each line: kernel, variant (block sizes, warps), microseconds per launch (graph of 50 launches, median of 5
replays). An empty Triton kernel gives the launch floor. Used to pick block sizes and warps for the engine.
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
from triton_autogaze.kernels import heads_select as HS  # noqa: E402
from triton_autogaze.kernels import mlp_down as MD  # noqa: E402
from triton_autogaze.kernels import mlp_gate_up as MU  # noqa: E402
from triton_autogaze.kernels import rmsnorm_qkv_rope as Q  # noqa: E402


@triton.jit
def _empty(x_ptr):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--focus", action="store_true",
                    help="only the two ticket kernels' launch shapes: attention chunk x merge group x warps at "
                         "decode, heads_select warps")
    args = ap.parse_args()
    cfg, w, _ = load_checkpoint(fixture_dir() / "model")
    gen = TritonGenerator(w, cfg)
    dummy = torch.zeros(1, device=gen.device)
    print(f"empty kernel: {graph_us(lambda: _empty[(1,)](dummy)):.2f} us")
    lw = gen.w.layers[0]
    for B in args.rows:
        ws = gen._new_workspace(B, 4096)
        ws.alive.fill_(1)
        ws.keymask.fill_(1)
        ws.fstart.fill_(args.keys)
        ws.x.normal_()
        ws.hA.normal_()
        ws.hB.normal_()
        ws.act.normal_()
        ws.opart.normal_()
        al = ws.alive[0]
        bufs = gen._call_buffers(ws, 1, 198)

        def hs(nw=4, parts=1):
            return HS.heads_select(ws.hB, None, gen.w.norm, gen.w.lm_head, gen.w.tl_head, ws.alive[1], ws.alive[1],
                                   None, ws.select, ws.ban, gen.w.embed, ws.x, ws.chunk_ids, ws.chunk_n,
                                   bufs.ids[0], bufs.conf[0], bufs.lens[0], 9, 1, 10, 1e-5, 265, False, num_warps=nw,
                                   vocab_parts=parts)

        if args.focus:
            H, D = cfg.decoder.num_attention_heads, cfg.decoder.hidden_size // cfg.decoder.num_attention_heads
            kend = args.keys + 10
            for chunk in (64, 128, 256):
                scratch = A.AttentionScratch(B * H, triton.cdiv(kend, chunk), 16, D, gen.device)
                for G in (8, 16):
                    for nw in (2, 4):
                        fn = lambda chunk=chunk, G=G, nw=nw, scratch=scratch: A.attention(  # noqa: E731
                            ws.q, ws.k[0], ws.v[0], ws.keymask, ws.fstart, 0, ws.zeros, al, lw["o"], ws.opart,
                            scratch, 10, kend, False, block_q=16, chunk=chunk, block_k=min(64, chunk),
                            num_warps=nw, merge_group=G)
                        print(f"B={B} decode  attn chunk{chunk} G{G} w{nw}   {graph_us(fn):8.2f} us", flush=True)
            scratch = A.AttentionScratch(B * H, triton.cdiv(kend, 256), 16, D, gen.device)
            for ob in (32, 64):
                for nw in (4, 8):
                    fn = lambda ob=ob, nw=nw, scratch=scratch: A.attention(  # noqa: E731
                        ws.q, ws.k[0], ws.v[0], ws.keymask, ws.fstart, 0, ws.zeros, al, lw["o"], ws.opart, scratch,
                        10, kend, False, block_q=16, chunk=256, block_k=64, num_warps=nw, oproj_block=ob)
                    print(f"B={B} decode  attn chunk256 oproj{ob} w{nw} {graph_us(fn):8.2f} us", flush=True)
            for parts in (1, 3, 9):
                for nw in (1, 2, 4):
                    us = graph_us(lambda nw=nw, parts=parts: hs(nw, parts))
                    print(f"B={B} heads_select parts{parts} w{nw} {us:8.2f} us", flush=True)
            continue
        for n, tag, blk, scratch in ((10, "decode", 16, ws.att_decode), (206, "prefill", 32, ws.att_prefill)):
            qoff = ws.fstart if tag == "decode" else ws.zeros
            kend = args.keys + n if tag == "decode" else n
            rows = []
            for nw in (1, 2, 4, 8):
                for bh in (16, 32):
                    rows.append((f"qkv bh{bh} w{nw}", lambda bh=bh, nw=nw: Q.rmsnorm_qkv_rope(
                        ws.hB, None, None, lw["ln1"], lw["qkv"], ws.cos, ws.sin, ws.pos, qoff, 0, ws.zeros, al,
                        ws.q, ws.k[0], ws.v[0], n, 1e-5, False, block_n=blk, block_h=bh, num_warps=nw)))
                for bk in (32, 64, 128):
                    rows.append((f"attn bk{bk} w{nw}", lambda bk=bk, nw=nw: A.attention(
                        ws.q, ws.k[0], ws.v[0], ws.keymask, qoff, 0, ws.zeros, al, lw["o"], ws.opart, scratch, n,
                        kend, False, block_q=blk, chunk=ws.chunk, block_k=bk, num_warps=nw)))
                for bi in (16, 32):
                    rows.append((f"gate_up bi{bi} w{nw}", lambda bi=bi, nw=nw: MU.mlp_gate_up(
                        ws.hB, ws.opart, ws.hA, lw["ln2"], lw["gate_up"], al, ws.act, n, 1e-5, False, block_n=blk,
                        block_i=bi, num_warps=nw)))
                for bc, bk in ((16, 128), (16, 64), (32, 64), (16, 384)):
                    rows.append((f"down bc{bc} bk{bk} w{nw}", lambda bc=bc, bk=bk, nw=nw: MD.mlp_down(
                        ws.hA, ws.act, lw["down"], al, ws.hB, n, False, block_n=blk, block_c=bc, block_k=bk,
                        num_warps=nw)))
            for name, fn in rows:
                try:
                    us = graph_us(fn)
                    print(f"B={B} {tag:7s} {name:24s} {us:8.2f} us", flush=True)
                except Exception as e:  # noqa: BLE001
                    print(f"B={B} {tag:7s} {name:24s} FAILED {type(e).__name__}: {str(e)[:80]}", flush=True)
        print(f"B={B} heads_select {graph_us(hs):8.2f} us", flush=True)


if __name__ == "__main__":
    main()
