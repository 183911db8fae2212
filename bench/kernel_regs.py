"""Registers and spills of every engine kernel as the GPU engine launches it, from ptxas, without a GPU.

    python bench/kernel_regs.py [--rows 1] [--bf16] [--set attr=value ...] [--ptx-dir DIR] [--sass-dir DIR]

Step 1 (a child process under TRITON_INTERPRET=1): the engine's launch sequence runs on CPU tensors with the
GPU's block sizes and every `_kernel[grid](...)` call replaced by a recorder (nothing executes), collecting each
distinct launch configuration: argument types and constexprs. Step 2 (this process, no TRITON_INTERPRET):
each configuration is compiled for sm_90 with Triton's CUDA backend and assembled by the ptxas that ships with
Triton (`-v`), which prints registers, stack frame and spill bytes per kernel. A spill in a latency-bound kernel
is local-memory traffic on its critical path; this finds them before any device time is spent. Kernels that
take ``GDC`` compile as an H100 launches them (with programmatic dependent launch, kernels/_pdl.py) and the
line says whether their ``griddepcontrol.wait`` comes before every global memory access.
Each configuration compiles with the launcher's specialization of its arguments (integers equal to 1 as
constants; 16-byte aligned pointers and multiples of 16 as divisible, which vectorizes loads), as on the GPU;
``--sass-dir`` writes each one's machine code (nvdisasm) to count the instructions of a launch's chain.
Kernels whose products run on fp64 tensor cores (fp32 mode on an H100, ``TC`` 3) also say how many DMMA
instructions they hold. ``--set`` overrides generator attributes (e.g. ``--set merge_group=16 --set chunk=128``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNELS = {  # module -> kernel attribute launched by the engine
    "attention": "_attention_kernel", "frame_finish": "_frame_finish_kernel", "frame_setup": "_frame_setup_kernel",
    "heads_select": "_heads_select_kernel", "mlp_down": "_mlp_down_kernel", "mlp_gate_up": "_mlp_gate_up_kernel",
    "residual_norm": "_residual_norm_kernel", "rmsnorm_qkv_rope": "_rmsnorm_qkv_rope_kernel",
}
GPU_SIZES = dict(mlp_block_i=16, mlp_block_c=16, prefill_block=32, head_block=16, key_block=64, decode_split_k=32,
                 prefill_split_k=32, select_vocab_parts=9, f64_dots=1, prefill_gemm_rows=4)


def _type_of(v) -> str:
    import torch

    if isinstance(v, torch.Tensor):
        return "*" + {torch.float32: "fp32", torch.bfloat16: "bf16", torch.int32: "i32", torch.int64: "i64",
                      torch.int8: "i8", torch.uint8: "u8", torch.float16: "fp16"}[v.dtype]
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        return "i64" if abs(v) >= 2 ** 31 else "i32"
    if isinstance(v, float):
        return "fp32"
    raise TypeError(type(v))


def record(rows: int, overrides: dict, bf16: bool = False) -> list[dict]:
    """Child side: the launch configurations of one engine call (B=rows, 2 frames, full budget)."""
    import importlib

    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from fixture_data import model_dir

    from triton_autogaze.checkpoint import load_checkpoint
    from triton_autogaze.engine.generator import TritonGenerator

    seen: dict[str, dict] = {}

    class Recorder:
        def __init__(self, name, fn):
            self.name, self.fn = name, fn

        def __getitem__(self, grid):
            def launch(*args, num_warps=4, **kwargs):
                names = self.fn.arg_names
                consts = {k: v for k, v in kwargs.items()}
                # Triton's launcher specializes integer arguments equal to 1 as constants and marks 16-byte
                # aligned pointers and multiples of 16 divisible (vectorized loads): record the same here
                for n, a in zip(names, args):
                    if isinstance(a, int) and not isinstance(a, bool) and a == 1:
                        consts[n] = 1
                types = {n: _type_of(a) for n, a in zip(names, args) if n not in consts}
                div = sorted(n for n, a in zip(names, args) if n not in consts and (
                    (isinstance(a, torch.Tensor) and a.data_ptr() % 16 == 0)
                    or (isinstance(a, int) and not isinstance(a, bool) and a % 16 == 0)))
                key = json.dumps([self.name, types, consts, num_warps, div], sort_keys=True)
                seen.setdefault(key, dict(kernel=self.name, types=types, constexprs=consts, num_warps=num_warps,
                                          divisible=div))
            return launch

    for mod, attr in KERNELS.items():
        m = importlib.import_module(f"triton_autogaze.kernels.{mod}")
        setattr(m, attr, Recorder(f"{mod}.{attr}", getattr(m, attr)))
    cfg, w, _ = load_checkpoint(model_dir())
    g = TritonGenerator(w, cfg, use_cuda_graph=False, device="cpu", backend="triton",
                        chunk=int(overrides.pop("chunk", 256)), dtype=torch.bfloat16 if bf16 else torch.float32)
    for k, v in {**GPU_SIZES, **overrides}.items():
        setattr(g, k, int(v))
    g.decode_chunks = (64, 128)  # the GPU's decode splits while the cache is short (TritonGenerator.decode_chunk)
    # the rest of the H100's launch rules (TritonGenerator.__init__): the fp64-product prefill key blocks (bf16: 64
    # too) and large-launch chunks, and its SM count for the o_proj-block rule
    if "prefill_key_block" not in overrides:
        g.prefill_key_block = None if bf16 or g.f64_dots else 128
    if "max_programs" not in overrides:
        g.max_programs = 600 if bf16 else (400 if g.f64_dots else 1600)
    if "sms" not in overrides:
        g.sms = 132
    v = torch.zeros(rows, 2, cfg.num_tokens, cfg.decoder.hidden_size)
    for tau in (None, torch.full((rows, 2), -2.0)):
        try:
            g.run(v, [198, 198], tau, "upstream")
        except Exception:  # noqa: BLE001 (nothing ran: the host reads back garbage at the end)
            pass
    return list(seen.values())


def ptxas_stats(ptx: str) -> str:
    import triton

    base = triton.knobs.nvidia.ptxas.path
    ver = ptx.split(".version", 1)[1].split()[0]
    for exe in (base, base + "-blackwell"):
        if not os.path.exists(exe):
            continue
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "k.ptx")
            Path(p).write_text(ptx)
            r = subprocess.run([exe, "-arch=sm_90a", "-v", p, "-o", os.path.join(d, "k.o")], capture_output=True,
                               text=True)
            out = r.stdout + r.stderr
            if r.returncode == 0:
                lines = [ln.split(":", 1)[-1].strip() for ln in out.splitlines() if "Used" in ln or "spill" in ln]
                return " | ".join(lines)
    return f"no ptxas here accepts PTX {ver}"


def sass_of(cubin: bytes) -> str:
    """The machine code of a compiled kernel, from the nvdisasm that ships with Triton."""
    import triton

    exe = os.path.join(os.path.dirname(triton.knobs.nvidia.ptxas.path), "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "k.cubin")
        Path(p).write_bytes(cubin)
        r = subprocess.run([exe, "-c", p], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else f"nvdisasm failed: {r.stderr[-500:]}"


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="generator attribute=value")
    ap.add_argument("--bf16", action="store_true", help="the bf16 engine (tensor-core products)")
    ap.add_argument("--ptx-dir", help="also write each configuration's PTX (without line info) here, to compare "
                                      "two versions of a kernel's source for the same machine code")
    ap.add_argument("--sass-dir", help="also write each configuration's SASS (nvdisasm of the cubin) here, to count "
                                       "the instructions of a launch's dependent chain")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    overrides = dict(s.split("=", 1) for s in args.set)
    if args.child:
        print(json.dumps(record(args.rows, overrides, args.bf16)))
        return
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, __file__, "--child", "--rows", str(args.rows)]
                       + (["--bf16"] if args.bf16 else []) + [f"--set={s}" for s in args.set], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(r.stderr[-3000:])
    configs = json.loads(r.stdout.strip().splitlines()[-1])
    os.environ.pop("TRITON_INTERPRET", None)
    import importlib
    import warnings

    sys.path.insert(0, str(REPO / "tests"))
    from ptx_compile import _compile, gdc_wait_first
    from triton_autogaze.kernels._pdl import DEFAULT_MODE

    warnings.filterwarnings("ignore")
    for c in sorted(configs, key=lambda c: c["kernel"]):
        mod, attr = c["kernel"].split(".")
        fn = getattr(importlib.import_module(f"triton_autogaze.kernels.{mod}"), attr)
        if "FENCE" in c["constexprs"]:  # recorded on CPU tensors; the GPU launch compiles the fenced path
            c["constexprs"]["FENCE"] = True
        if "GDC" in c["constexprs"]:  # likewise: on an H100 the engine's kernels launch with PDL (kernels/_pdl.py)
            c["constexprs"]["GDC"] = DEFAULT_MODE
        if c["constexprs"].get("TC") == 2:  # the interpreter's stand-in; the GPU launch takes tensor cores
            c["constexprs"]["TC"] = 1
        k = _compile(fn, c["types"], c["constexprs"], c["num_warps"], tuple(c["divisible"]))
        shown = {k2: v for k2, v in c["constexprs"].items()
                 if k2 not in ("C", "H", "D", "EOS", "V", "N", "FENCE", "BLOCK_B", "UPSTREAM", "GDC")}
        notes = "" if "GDC" not in c["constexprs"] else f" | gdc wait first: {gdc_wait_first(k.asm['ptx'])}"
        if c["constexprs"].get("TC") == 3:  # fp64 products: on tensor cores (DMMA), not fp64 FMA loops
            notes += f" | f64 mma: {sum('mma.sync' in ln and '.f64.f64' in ln for ln in k.asm['ptx'].splitlines())}"
        print(f"{mod:17s} w{c['num_warps']} {shown}\n    {ptxas_stats(k.asm['ptx'])}{notes}", flush=True)
        # one file a configuration: its constexprs, then a tag of its divisible arguments (launches that differ
        # only there compile apart)
        name = (f"{mod}-w{c['num_warps']}-" + "-".join(f"{a}{b}" for a, b in sorted(c["constexprs"].items()))
                + "-div" + hashlib.sha1(" ".join(c["divisible"]).encode()).hexdigest()[:6])
        if args.ptx_dir:
            os.makedirs(args.ptx_dir, exist_ok=True)
            code = [ln for ln in k.asm["ptx"].splitlines() if not ln.strip().startswith((".loc", ".file", "//"))]
            Path(args.ptx_dir, name + ".ptx").write_text("\n".join(code))
        if args.sass_dir:
            os.makedirs(args.sass_dir, exist_ok=True)
            Path(args.sass_dir, name + ".sass").write_text(sass_of(k.asm["cubin"]))


if __name__ == "__main__":
    main()
