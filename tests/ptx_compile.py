"""Compile kernels for sm_90 without a GPU and report what only real hardware depends on (test utility).

Run as a script in a process without TRITON_INTERPRET (under the interpreter ``@triton.jit`` yields functions
the compiler cannot take): prints one JSON object, ``{"skip": reason}`` when this Triton build cannot compile for
CUDA here, else per kernel whether a cubin came out, where the fences sit around the ticket atomics (attention,
heads_select: ``FENCE=True``), and for the frame kernels, which overwrite values every warp read, whether all
global loads come before a CTA barrier that the final stores follow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _compile(fn, types: dict, constexprs: dict, num_warps: int = 4, divisible: tuple = ()):
    """``fn`` compiled for sm_90; ``types``: non-constexpr argument -> Triton type (default i32); ``divisible``:
    the arguments a launch would specialize as divisible by 16 (pointers aligned to 16 bytes, integers that are
    multiples of 16), as Triton's launcher does, so that loads vectorize as they do on the GPU."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {n: "constexpr" if n in constexprs else types.get(n, "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in divisible if n not in constexprs}
    return triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                          target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})


def _fence_sites(ptx: str) -> dict:
    lines = [ln.strip() for ln in ptx.splitlines() if not ln.strip().startswith(".loc")]
    fences = [i for i, ln in enumerate(lines) if ln.startswith("fence.acq_rel.gpu")]
    ticket = next(i for i, ln in enumerate(lines) if "atom.global.gpu.acq_rel.add" in ln)
    return {"before_ticket": any(i < ticket for i in fences), "after_ticket": any(i > ticket for i in fences)}


def gdc_wait_first(ptx: str) -> bool:
    """Whether ``griddepcontrol.wait`` (programmatic dependent launch, kernels/_pdl.py) comes before every global
    memory access: loads, stores, atomics and asynchronous copies."""
    lines = [ln.strip().split(" ", 1)[-1] if ln.strip().startswith("@") else ln.strip() for ln in ptx.splitlines()]
    waits = [i for i, ln in enumerate(lines) if ln.startswith("griddepcontrol.wait")]
    access = [i for i, ln in enumerate(lines)
              if ln.startswith(("ld.global", "st.global", "atom.", "red.", "cp.async", "cp.reduce"))]
    return bool(waits) and (not access or waits[0] < access[0])


def _barrier_then_stores(ptx: str) -> dict:
    # instructions without their guard predicate ("@%p1 st.global..." -> "st.global...")
    lines = [ln.strip().split(" ", 1)[-1] if ln.strip().startswith("@") else ln.strip() for ln in ptx.splitlines()]
    bars = [i for i, ln in enumerate(lines) if ln.startswith("bar.sync") or ln.startswith("barrier.sync")]
    if not bars:
        return {"loads_before_barrier": False, "stores_after_barrier": 0}
    last = bars[-1]
    loads_after = [ln for ln in lines[last:] if ln.startswith("ld.global")]
    stores_after = [ln for ln in lines[last:] if ln.startswith("st.global")]
    return {"loads_before_barrier": not loads_after, "stores_after_barrier": len(stores_after)}


def main() -> dict:
    import triton

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    @triton.jit
    def _noop(x_ptr):
        pass

    try:
        if not _compile(_noop, {"x_ptr": "*fp32"}, {}).asm.get("cubin"):
            return {"skip": "no cubin from the CUDA backend"}
    except Exception as e:  # no CUDA backend / ptxas in this Triton build
        return {"skip": f"{type(e).__name__}: {e}"[:300]}
    from triton_autogaze.kernels.attention import _attention_kernel
    from triton_autogaze.kernels.heads_select import _heads_select_kernel

    f32 = "*fp32"
    att = {n: f32 for n in ("q_ptr", "k_ptr", "v_ptr", "acc_ptr", "ml_ptr", "wo_ptr", "out_ptr")}
    att.update(km_ptr="*i8", qoff_ptr="*i32", jmin_ptr="*i32", alive_ptr="*i32", cnt_ptr="*i32", scale="fp32")
    hs = {n: f32 for n in ("x_ptr", "part_ptr", "norm_ptr", "lm_ptr", "tlw_ptr", "tau_ptr", "logit_ptr", "tlv_ptr",
                           "embed_ptr", "xn_ptr", "out_conf_ptr")}
    hs.update(alive_in_ptr="*i32", alive_out_ptr="*i32", cnt_ptr="*i32", ban_ptr="*i8", chunk_ptr="*i32",
              chunk_n_ptr="*i32", out_ids_ptr="*i64", out_len_ptr="*i32", eps="fp32")
    cases = {
        "attention": (_attention_kernel, att, dict(C=192, H=6, D=32, BQ=16, BK=64, CHUNK=256, BLOCK_B=8,
                                                   UPSTREAM=False, G=8, FENCE=True, OB=256, GDC=False)),
        "heads_select": (_heads_select_kernel, hs, dict(C=192, K=10, V=266, EOS=265, BLOCK_C=256, BLOCK_V=512,
                                                        BLOCK_K=16, VCH=1, NV=9, BLOCK_B=1, UPSTREAM=False,
                                                        HAS_TAU=True, FENCE=True, GDC=False)),
    }
    out = {}
    for name, (fn, types, consts) in cases.items():
        c = _compile(fn, types, consts)
        out[name] = {"cubin": bool(c.asm.get("cubin")), **_fence_sites(c.asm["ptx"])}
    from triton_autogaze.kernels.frame_finish import _frame_finish_kernel
    from triton_autogaze.kernels.frame_setup import _frame_setup_kernel

    fs = {n: "*i32" for n in _frame_setup_kernel.arg_names if n.endswith("_ptr")}
    fs.update(vis_ptr=f32, x_ptr=f32, out_conf_ptr=f32, km_ptr="*i8", ban_ptr="*i8", out_ids_ptr="*i64")
    ff = {n: "*i32" for n in _frame_finish_kernel.arg_names if n.endswith("_ptr")}
    ff.update(out_ids_ptr="*i64", km_ptr="*i8")
    frames = {
        "frame_setup": (_frame_setup_kernel, fs, dict(C=192, N=196, K=10, EOS=265, TB=32, BLOCK_C=256, BLOCK_N=256,
                                                      BLOCK_K=16, BLOCK_F=256, BLOCK_V=512, BLOCK_L=256)),
        "frame_finish": (_frame_finish_kernel, ff, dict(EOS=265, BLOCK_L=256, GDC=False)),
    }
    for name, (fn, types, consts) in frames.items():
        c = _compile(fn, types, consts)
        out[name] = {"cubin": bool(c.asm.get("cubin")), **_barrier_then_stores(c.asm["ptx"])}
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
