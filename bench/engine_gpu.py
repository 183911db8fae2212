"""Benchmark the Triton generation engine on a CUDA GPU (fixture model, 16-frame 224 px clips).

Cases: 1 clip full budget (ratio 0.75), 8 clips batched, 45 rows (tiles) x 16 frames, each without and with
tau = -2.0. Checks token equality against the pure-torch reference on the first cases, then prints the median
wall time of ``gen.run`` (which includes its one host sync) after warm-up, with CUDA graphs.

    python bench/engine_gpu.py [--iters 20] [--no-graph] [--bf16] [--skip-big] [--only NAME]
                               [--chunk 256] [--key-block 64] [--down-k 128] [--block-i 16] [--block-c 16]
                               [--head-block 16]

Fixtures: tests/fixtures/model, else $AUTOGAZE_SHARED_FIXTURES, else <repo>/../shared/fixtures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from determinism import same  # noqa: E402  (bit-for-bit equality of two generation outputs)
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.engine.branches import Branches  # noqa: E402
from triton_autogaze.kernels._pdl import pdl_wanted  # noqa: E402
from triton_autogaze.reference.decoder import Decoder  # noqa: E402
from triton_autogaze.reference.generate import frame_budget, generate_upstream, merge_rows, new_state  # noqa: E402
from triton_autogaze.reference.vision import encode_video  # noqa: E402


def fixture_dir() -> Path:
    local = REPO / "tests" / "fixtures"
    if (local / "model" / "config.json").is_file():
        return local
    return Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", str(REPO.parent / "shared" / "fixtures")))


def clip_vision(fx: Path, w, cfg, device) -> torch.Tensor:
    """[1, 16, 196, 192] connector output of the clip224_t16 fixture (or random frames if it is missing)."""
    shared = Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", str(REPO.parent / "shared" / "fixtures")))
    path = next((p for p in (fx / "clip224_t16.safetensors", shared / "clip224_t16.safetensors") if p.is_file()),
                fx / "clip224_t16.safetensors")
    if path.is_file():
        from safetensors.torch import load_file
        raw = load_file(str(path))["raw_rgb"]
        x = raw.float().permute(0, 1, 4, 2, 3) / 127.5 - 1
    else:
        x = torch.rand(1, 16, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1  # same every run
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    wd = {k: v.to(device) for k, v in w.items()}
    from triton_autogaze.precision import exact_fp32

    with exact_fp32():
        emb, _ = encode_video(wd, cfg, ((x - mean) / std).to(device))
    return emb.contiguous()


def reference(dec, cfg, v, budgets, tau, semantics):
    B = v.shape[0]
    if semantics == "upstream":
        return generate_upstream(dec, cfg, v, budgets, tau, new_state(dec, B, 16))
    rows = [generate_upstream(dec, cfg, v[b:b + 1], budgets, None if tau is None else tau[b:b + 1],
                              new_state(dec, 1, 16)) for b in range(B)]
    return merge_rows(cfg, rows)


def compare(out, ref, rows, eos, bf16) -> str:
    """Rows [:rows] of ``out`` against ``ref`` (which is padded only to its own rows' lengths)."""
    tot = hit = 0
    ok, worst = len(out.frames) == len(ref.frames), 0.0
    for fo, fr in zip(out.frames, ref.frames):
        L = fr.ids.shape[1]
        ids, conf = fo.ids[:rows].cpu(), fo.confidence[:rows].cpu()
        if ids.shape[1] < L:
            ok = False
            continue
        eq = ids[:, :L] == fr.ids.cpu()
        hit += int(eq.sum())
        tot += eq.numel()
        ok = ok and bool(eq.all()) and bool((ids[:, L:] == eos).all())
        if L:
            worst = max(worst, (conf[:, :L] - fr.confidence.cpu()).abs().max().item())
    if bf16:
        return f"agree {hit / max(tot, 1):.3f}"
    return f"{'EQUAL' if ok else 'DIFFER'} conf {worst:.1e}"


def time_run(gen, v, budgets, tau, semantics, iters):
    """Median wall ms of `iters` calls after an eager and a capturing call, and the last call's output."""
    out, st = gen.run(v, budgets, tau, semantics)  # eager: compiles
    out, st = gen.run(v, budgets, tau, semantics)  # captures the graph
    del st
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out, st = gen.run(v, budgets, tau, semantics)  # ends with its own sync
        times.append((time.perf_counter() - t0) * 1e3)
        del st
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--no-graph", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--skip-big", action="store_true", help="skip the 45-row cases")
    ap.add_argument("--extra-rows", type=int, nargs="*", default=[],
                    help="also these row counts (independent rows, tau None and -2), e.g. 2 4")
    ap.add_argument("--check-rows", type=int, default=2, help="rows of the 8-clip case checked vs the reference")
    ap.add_argument("--only", default="", help="run only the cases whose name contains this (e.g. '1 clip')")
    ap.add_argument("--chunk", type=int, default=256, help="keys per attention split (engine default 256)")
    ap.add_argument("--key-block", type=int, default=None, help="keys per attention inner block (default 64)")
    ap.add_argument("--down-k", type=int, default=None, help="inner block of the MLP down product (default 128)")
    ap.add_argument("--block-i", type=int, default=None, help="intermediate columns per mlp_gate_up program (16)")
    ap.add_argument("--block-c", type=int, default=None, help="output columns per mlp_down program (16)")
    ap.add_argument("--head-block", type=int, default=None, help="rotation pairs per rmsnorm_qkv_rope program (16)")
    ap.add_argument("--split-k", type=int, default=None,
                    help="inner slice of the decode products (engine default 32; 0 = one product over the axis)")
    ap.add_argument("--prefill-split-k", type=int, default=None, help="the same for prefill feeds (default 32)")
    ap.add_argument("--prefill-block", type=int, default=None, help="tokens per prefill program (default 32)")
    ap.add_argument("--attention-warps", type=int, default=None, help="warps of an attention program (4)")
    ap.add_argument("--merge-group", type=int, default=None, help="split partials merged per load (8)")
    ap.add_argument("--oproj-block", type=int, default=None, help="attention o_proj columns a product (all)")
    ap.add_argument("--linear-warps", type=int, default=None,
                    help="warps of a decode feed's qkv / gate_up / down program (4)")
    ap.add_argument("--prefill-linear-warps", type=int, default=None, help="the same for prefill feeds (4)")
    ap.add_argument("--select-warps", type=int, default=None, help="warps of a heads_select program (8)")
    ap.add_argument("--max-programs", type=int, default=None,
                    help="attention chunks double while a launch exceeds this many programs "
                    "(fp32 1600, bf16 600; 0 off)")
    ap.add_argument("--prefill-max-programs", type=int, default=None,
                    help="the same rule's limit for prefill launches (fp32 on fp64 products 200; 0: --max-programs)")
    ap.add_argument("--decode-programs", type=int, default=None,
                    help="programs a short-cache decode attention launch may take before its chunk grows (128)")
    ap.add_argument("--max-chunk", type=int, default=None, help="largest chunk of that rule (fp32 1024, bf16 2048)")
    ap.add_argument("--prefill-attention-block", type=int, default=None,
                    help="queries a prefill attention program (default and 0: the prefill block)")
    ap.add_argument("--prefill-key-block", type=int, default=None,
                    help="key block of prefill launches (fp32 128, bf16 0: the key block)")
    ap.add_argument("--large-decode-key-block", type=int, default=None,
                    help="key block of decode launches of >= 1024-key splits (bf16 128, fp32 0: the key block)")
    ap.add_argument("--prefill-block-i", type=int, default=None, help="--block-i of prefill feeds (default: same)")
    ap.add_argument("--prefill-block-c", type=int, default=None, help="--block-c of prefill feeds (default: same)")
    ap.add_argument("--prefill-merge-rows", type=int, default=None,
                    help="prefill feeds of at least this many rows: residual_norm before mlp_gate_up (default 1; 0 off)")
    ap.add_argument("--prefill-gemm-rows", type=int, default=None,
                    help="prefill feeds of at least this many rows: GEMM-shaped qkv / gate-up / down products (0 off)")
    ap.add_argument("--decode-gemm-rows", type=int, default=None,
                    help="decode feeds of at least this many rows: GEMM-shaped products too (0 off)")
    for name, what in (("n", "tokens a GEMM program (64)"), ("k", "inner chunk (32)"),
                       ("h", "qkv rotation pairs a program (32)"), ("i", "gate / up columns a program (32)"),
                       ("c", "down columns a program (64)")):
        ap.add_argument(f"--gemm-block-{name}", type=int, default=None, help=f"with --prefill-gemm-rows: {what}")
    ap.add_argument("--row-group-rows", type=int, default=None,
                    help="independent calls: row groups of at least this many rows, each on its own stream (4; 0 off)")
    ap.add_argument("--max-row-groups", type=int, default=None, help="at most this many row groups (4)")
    ap.add_argument("--stopping-row-groups", default=None,
                    help="calls with task-loss stopping: 'ROWS,MAX' row groups (bf16 default 15,3), or 'same' for "
                         "the rule without stopping")
    ap.add_argument("--flat-decode", action=argparse.BooleanOptionalAction, default=None,
                    help="decode feeds' row-wise programs of 16 tokens across rows (flat=True; the default)")
    ap.add_argument("--flat-qkv", action=argparse.BooleanOptionalAction, default=None,
                    help="with flat decode: rmsnorm_qkv_rope flat too (the default)")
    ap.add_argument("--skip-dead", action=argparse.BooleanOptionalAction, default=None,
                    help="with tau: skip the decode steps after every row stopped (CUDA-graph IF nodes; the default)")
    ap.add_argument("--vocab-parts", type=int, default=None, help="heads_select programs a head (9 on the GPU)")
    ap.add_argument("--bf16-dots", dest="bf16_dots", action="store_const", const=True, default=None,
                    help="with --bf16: the decoder's products on tensor cores (the default)")
    ap.add_argument("--no-bf16-dots", dest="bf16_dots", action="store_const", const=False,
                    help="with --bf16: fp32 FMA products of the bf16 weights (the engine before session 6)")
    ap.add_argument("--f64-dots", dest="f64_dots", action="store_const", const=True, default=None,
                    help="fp32 mode: the decoder's products on fp64 tensor cores (exact products, fp64 sums)")
    ap.add_argument("--no-f64-dots", dest="f64_dots", action="store_const", const=False,
                    help="fp32 mode: IEEE fp32 FMA products")
    ap.add_argument("--f64-ops", default=None, help="with --f64-dots: only these ops (comma-separated: qkv, "
                    "attention, gate_up, down)")
    ap.add_argument("--pdl", type=int, choices=(0, 1, 2), default=None,
                    help="programmatic dependent launch of the chained kernels: 0 off, 1 next kernel launched early, "
                         "2 launched as programs exit (kernels/_pdl.py)")
    args = ap.parse_args()
    if args.pdl is not None:
        os.environ["AUTOGAZE_PDL"] = str(args.pdl)
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    dev = torch.device("cuda")
    fx = fixture_dir()
    cfg, w, _ = load_checkpoint(fx / "model")
    dec = Decoder({k: t.to(dev) for k, t in w.items()}, cfg)
    v1 = clip_vision(fx, w, cfg, dev)
    T = v1.shape[1]
    gen_kw = dict(dtype=torch.bfloat16 if args.bf16 else torch.float32, use_cuda_graph=not args.no_graph)
    gen = TritonGenerator(w, cfg, chunk=args.chunk, **gen_kw)
    if args.key_block is not None:
        gen.key_block = args.key_block
    for arg, attr in (("down_k", "mlp_block_k"), ("block_i", "mlp_block_i"), ("block_c", "mlp_block_c"),
                      ("head_block", "head_block"), ("split_k", "decode_split_k"),
                      ("prefill_split_k", "prefill_split_k"), ("prefill_block", "prefill_block"),
                      ("attention_warps", "attention_warps"), ("merge_group", "merge_group"),
                      ("oproj_block", "oproj_block"), ("select_warps", "select_warps"),
                      ("linear_warps", "linear_warps"), ("prefill_linear_warps", "prefill_linear_warps"),
                      ("vocab_parts", "select_vocab_parts"),
                      ("bf16_dots", "bf16_dots"), ("f64_dots", "f64_dots"),
                      ("max_programs", "max_programs"), ("max_chunk", "max_chunk"),
                      ("prefill_block_i", "prefill_block_i"), ("prefill_block_c", "prefill_block_c"),
                      ("prefill_merge_rows", "prefill_merge_rows"), ("decode_programs", "decode_programs"),
                      ("gemm_block_n", "gemm_block_n"), ("gemm_block_k", "gemm_block_k"),
                      ("gemm_block_h", "gemm_block_h"), ("gemm_block_i", "gemm_block_i"),
                      ("gemm_block_c", "gemm_block_c")):
        if getattr(args, arg) is not None:
            setattr(gen, attr, getattr(args, arg))
    for arg in ("prefill_key_block", "large_decode_key_block"):
        if getattr(args, arg) is not None:
            setattr(gen, arg, getattr(args, arg) or None)
    for arg in ("flat_decode", "flat_qkv"):
        if getattr(args, arg) is not None:
            setattr(gen, arg, getattr(args, arg))
    if args.prefill_gemm_rows is not None:
        gen.prefill_gemm_rows = args.prefill_gemm_rows or None
    if args.decode_gemm_rows is not None:
        gen.decode_gemm_rows = args.decode_gemm_rows or None
    if args.row_group_rows is not None:
        gen.row_group_rows = args.row_group_rows or None
    if args.max_row_groups is not None:
        gen.max_row_groups = args.max_row_groups
    if args.stopping_row_groups is not None:
        sr = args.stopping_row_groups
        gen.stopping_row_groups = None if sr == "same" else tuple(int(x) for x in sr.split(","))
    if args.prefill_max_programs is not None:
        gen.prefill_max_programs = args.prefill_max_programs or None
    if args.skip_dead is not None:
        gen.skip_dead_steps = args.skip_dead
    skip = gen.skip_dead_steps
    if skip and not Branches.for_device(dev).supported():
        print(f"IF nodes unavailable: {Branches.for_device(dev).reason}")
        skip = False
    if args.f64_ops is not None:
        gen.f64_ops = frozenset(args.f64_ops.split(","))
    if args.prefill_attention_block is not None:
        gen.prefill_attention_block = args.prefill_attention_block or None
    if args.bf16_dots is False and args.prefill_block is None:
        gen.prefill_block = 32  # the FMA products' block (the bf16 default of 64 is for tensor-core products)
    M = frame_budget(0.75, cfg.num_vision_tokens_each_frame)
    budgets = [M] * T
    g = torch.Generator(device="cpu").manual_seed(0)

    def batch(n):  # distinct rows: the clip plus small perturbations
        noise = torch.randn(n, T, *v1.shape[2:], generator=g).to(dev) * 0.05
        noise[0] = 0
        return (v1 + noise).contiguous()

    v8 = batch(8)
    v45 = None if args.skip_big else batch(45)
    cases = [
        ("1 clip, tau None", v1, None, "upstream"),
        ("1 clip, tau -2", v1, -2.0, "upstream"),
        ("8 clips indep, tau None", v8, None, "independent"),
        ("8 clips indep, tau -2", v8, -2.0, "independent"),
        ("8 clips upstream, tau -2", v8, -2.0, "upstream"),
    ]
    if v45 is not None:
        cases += [("45 rows indep, tau None", v45, None, "independent"),
                  ("45 rows indep, tau -2", v45, -2.0, "independent")]
    for r in args.extra_rows:
        vr = batch(r)
        cases += [(f"{r} rows indep, tau None", vr, None, "independent"),
                  (f"{r} rows indep, tau -2", vr, -2.0, "independent")]
    cases = [c for c in cases if args.only in c[0]]
    print(f"device: {torch.cuda.get_device_name()}  dtype: {gen_kw['dtype']}  graphs: {not args.no_graph}  "
          f"chunk {args.chunk} key block {gen.key_block} down k {gen.mlp_block_k} block i {gen.mlp_block_i} "
          f"block c {gen.mlp_block_c} head block {gen.head_block} split k {gen.decode_split_k}/"
          f"{gen.prefill_split_k} prefill block {gen.prefill_block} attention warps {gen.attention_warps} "
          f"merge group {gen.merge_group} oproj block {gen.oproj_block} select warps {gen.select_warps} "
          f"linear warps {gen.linear_warps}/{gen.prefill_linear_warps} "
          f"vocab parts {gen.select_vocab_parts} "
          f"bf16 dots {gen.bf16_dots} f64 dots {gen.f64_dots} "
          f"max programs {gen.max_programs} (prefill {gen.prefill_max_programs}) "
          f"prefill attention block {gen.prefill_attention_block} prefill / large decode key blocks "
          f"{gen.prefill_key_block}/{gen.large_decode_key_block} flat decode {gen.flat_decode} (qkv {gen.flat_qkv}) "
          f"prefill merge rows {gen.prefill_merge_rows} "
          f"gemm rows {gen.prefill_gemm_rows}/{gen.decode_gemm_rows} (blocks n/k/h/i/c {gen.gemm_block_n}/{gen.gemm_block_k}/"
          f"{gen.gemm_block_h}/{gen.gemm_block_i}/{gen.gemm_block_c}) decode programs {gen.decode_programs} "
          f"pdl {pdl_wanted(v1)} skip dead steps {skip} row groups {gen.row_group_rows}/{gen.max_row_groups} "
          f"(stopping {gen.stopping_row_groups})")
    print(f"{'case':28s} {'rows':>4s} {'tokens':>7s} {'check':>22s} {'median ms':>10s}")
    for name, v, tau, sem in cases:
        B = v.shape[0]
        taut = None if tau is None else torch.full((B, T), tau, device=dev)
        out, st = gen.run(v, budgets, taut, sem)
        del st
        ntok = sum(int((f.ids != cfg.eos_id).sum()) for f in out.frames)
        check = "-"
        if B <= 8 and (sem == "independent" or B == 1):
            rows = min(B, args.check_rows) if B > 1 else 1
            ref = reference(dec, cfg, v[:rows], budgets, None if taut is None else taut[:rows], sem)
            check = compare(out, ref, rows, cfg.eos_id, args.bf16)
        ms, last = time_run(gen, v, budgets, taut, sem, args.iters)
        replay = "same" if same(out, last) else "DIFFERS"
        print(f"{name:28s} {B:4d} {ntok:7d} {check:>22s} {ms:10.2f}  replay {replay}",
              flush=True)
        if tau is None:
            elem = 2 if args.bf16 else 4
            gb = kv_bytes(cfg, budgets, B, elem, gen.prefill_attention_block or gen.prefill_block) / 1e9
            least = kv_bytes(cfg, budgets, B, elem, prefill_block=None) / 1e9
            print(f"{'':28s} KV-cache reads {gb:.2f} GB -> {gb / ms * 1e3:.0f} GB/s achieved (the least any "
                  f"engine reads: {least:.2f} GB)", flush=True)
    print(f"device-to-device copy (1 GiB, read + write): {copy_bandwidth():.0f} GB/s")


def kv_bytes(cfg, budgets, rows, elem, prefill_block: int | None) -> float:
    """Bytes of K and V the attention reads in a full-budget call: every query block reads every key it may see.
    prefill_block: queries a prefill attention program (the fp32 engine's 32, bf16's 64); None: each prefill reads
    its keys once, which with the decode feeds' reads is the least any implementation reads (the copy-bandwidth
    floor)."""
    from triton_autogaze.engine.plan import make_plan

    d = cfg.decoder
    K, N, C, L = d.num_multi_token_pred, cfg.num_tokens, d.hidden_size, d.num_hidden_layers
    per_key = L * 2 * C * elem
    total = 0
    for fp in make_plan(list(budgets), K, N, 0, 0).frames:
        base = fp.start_hi
        n = fp.pending_hi + N
        if prefill_block is None:
            total += base + n
        else:
            total += sum(min(base + n, base + q + prefill_block) for q in range(0, n, prefill_block))
        end = base + n
        total += sum(end + K * s for s in range(1, fp.steps))  # decode feeds
    return float(total * per_key * rows)


def copy_bandwidth() -> float:
    a = torch.empty(1 << 28, device="cuda")  # 1 GiB fp32
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 4 * 10 / (time.perf_counter() - t0) / 1e9


if __name__ == "__main__":
    main()
