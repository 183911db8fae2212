"""End of a frame (SPEC §6.4): commit the decode-fed tokens of each row.

Row ``b`` produced ``out_len[b]`` ids this frame; its last ``chunk_n[b]`` were never fed (the pending chunk).
The ``fed = out_len - chunk_n`` fed tokens sit at cache indices ``fstart[b] ..``; their key-mask bits were 1
during the frame and become ``id != EOS`` from now on. ``clen`` advances past them and ``ccount`` (unmasked
cached tokens, the base of later positions) by their real ids. Grid: (B,).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._pdl import gdc_enter, pdl_options, pdl_wanted


@triton.jit
def _frame_finish_kernel(out_ids_ptr, out_len_ptr, chunk_n_ptr, fstart_ptr, clen_ptr, ccount_ptr, km_ptr,
                         out_sb, km_sb, Lt, EOS: tl.constexpr, BLOCK_L: tl.constexpr, GDC: tl.constexpr):
    gdc_enter(GDC)  # first: see _pdl.py
    b = tl.program_id(0)
    fed = tl.load(out_len_ptr + b) - tl.load(chunk_n_ptr + b)
    fs = tl.load(fstart_ptr + b)
    offs = tl.arange(0, BLOCK_L)
    msk = (offs < fed) & (offs < Lt)
    ids = tl.load(out_ids_ptr + b * out_sb + offs, mask=msk, other=EOS)
    bits = (ids != EOS).to(tl.int8)
    tl.store(km_ptr + b * km_sb + fs + offs, bits, mask=msk)
    cc = tl.load(ccount_ptr + b) + tl.sum(bits.to(tl.int32), axis=0)
    tl.debug_barrier()  # every warp has read ccount before it is overwritten (see frame_setup)
    tl.store(ccount_ptr + b, cc)
    tl.store(clen_ptr + b, fs + fed)


def frame_finish(out_ids, out_len, chunk_n, fstart, clen, ccount, keymask, eos):
    """out_ids [B, Lt] int64 (this frame); out_len, chunk_n, fstart, clen, ccount [B] int32; keymask [B, Lmax] int8."""
    B, Lt = out_ids.shape
    dev = out_ids.device
    if out_ids.dtype != torch.int64 or not out_ids.is_contiguous():
        raise ValueError("out_ids: expected contiguous int64 [B, Lt]")
    for nm, t in (("out_len", out_len), ("chunk_n", chunk_n), ("fstart", fstart), ("clen", clen),
                  ("ccount", ccount)):
        if t.shape != (B,) or t.dtype != torch.int32 or t.device != dev:
            raise ValueError(f"{nm}: expected int32 [{B}] on {dev}, got {t.dtype} {tuple(t.shape)} on {t.device}")
    if keymask.dim() != 2 or keymask.shape[0] != B or keymask.dtype != torch.int8 or not keymask.is_contiguous():
        raise ValueError(f"keymask: expected contiguous int8 [{B}, Lmax]")
    _frame_finish_kernel[(B,)](out_ids, out_len, chunk_n, fstart, clen, ccount, keymask, out_ids.stride(0),
                               keymask.stride(0), Lt, EOS=eos, BLOCK_L=triton.next_power_of_2(max(Lt, 1)),
                               **pdl_options(pdl_wanted(out_ids)), num_warps=4)


def frame_finish_ref(out_ids, out_len, chunk_n, fstart, clen, ccount, keymask, eos):
    """Torch reference with the launcher's signature and in-place effects."""
    for b in range(out_ids.shape[0]):
        fed = int(out_len[b]) - int(chunk_n[b])
        fs = int(fstart[b])
        bits = out_ids[b, :fed] != eos
        keymask[b, fs:fs + fed] = bits.to(torch.int8)
        ccount[b] += int(bits.sum())
        clen[b] = fs + fed
