"""Gaze records in upstream's layout (SPEC §7.4): per-frame id lists -> gazing_pos, padding flags, masks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .config import AutoGazeConfig
from .kernels._checks import interpreting

if TYPE_CHECKING:
    from .reference.generate import GenerationOutput
    from .tiling import TileGrid


def assemble_record(cfg: AutoGazeConfig, frame_ids: list[torch.Tensor]) -> dict[str, object]:
    """frame_ids: T tensors [B, L_t] int64 of frame-local ids (pads = EOS).

    Returns gazing_pos [B, sum L] int64 (ids + NV*t; pads hold NV*(t+1) as upstream), if_padded_gazing
    [B, sum L] bool, num_gazing_each_frame [T] int64, gazing_mask: list of [B, T, n_s] fp32 per scale.
    """
    nv, eos = cfg.num_vision_tokens_each_frame, cfg.eos_id
    B = frame_ids[0].shape[0]
    dev = frame_ids[0].device
    T = len(frame_ids)
    pos = torch.cat([ids + nv * t for t, ids in enumerate(frame_ids)], dim=1)
    padded = torch.cat([ids == eos for ids in frame_ids], dim=1)
    lengths = torch.tensor([ids.shape[1] for ids in frame_ids], dtype=torch.long, device=dev)
    dense = torch.zeros(B, T, nv + 1, dtype=torch.float32, device=dev)
    for t, ids in enumerate(frame_ids):
        if ids.shape[1]:
            dense[:, t].scatter_(1, ids, 1.0)
    dense = dense[..., :nv]  # drop the pad column
    masks = list(dense.split(list(cfg.tokens_per_scale), dim=-1))
    return {
        "gazing_pos": pos,
        "if_padded_gazing": padded,
        "num_gazing_each_frame": lengths,
        "gazing_mask": [m.contiguous() for m in masks],
    }


def record_of(cfg: AutoGazeConfig, out: "GenerationOutput", grid: "TileGrid | None" = None) -> dict[str, object]:
    """A generation output -> :func:`assemble_record`'s dict plus ``confidence`` [B, sum L] fp32 and, with a tile
    grid over the rows (tiles row-major), ``scale_masks`` (``tiling.stitch_masks``).

    Full-width outputs on the GPU (the Triton engine's ``GenerationOutput.padded``) take one kernel
    (``kernels/trace_record.py``) in place of ~25 small torch ops, each a host launch; others the torch
    functions that kernel is tested against."""
    pf = out.padded
    if pf is not None and (pf.ids.is_cuda or interpreting()):
        from triton_autogaze.kernels.trace_record import cut_record, trace_record

        tiles, crop = _stitching(cfg, grid)
        if pf.prepared is not None and pf.prepared[0] == (tiles, crop):  # record_preparer(cfg, grid)'s launch
            return cut_record(pf.prepared[1], pf.widths)
        return trace_record(pf.ids, pf.confidence, pf.lens, pf.widths, cfg.tokens_per_scale, tiles, crop)
    rec = assemble_record(cfg, [f.ids for f in out.frames])
    rec["confidence"] = torch.cat([f.confidence for f in out.frames], dim=1)
    if grid is not None:
        from .tiling import stitch_masks

        rec["scale_masks"] = stitch_masks(rec["gazing_mask"], grid)
    return rec


def record_preparer(cfg: AutoGazeConfig, grid: "TileGrid | None" = None):
    """The ``prepare`` hook of a Triton generation call (``TritonGenerator.run``) whose output goes to
    ``record_of(cfg, out, grid)`` with the same grid: it launches the record's kernel on the call's full-width
    outputs before the call's host sync, so that its host work overlaps the call's kernels. (``record_of`` with
    another grid builds the record again; the torch generator never calls the hook.)"""
    tiles, crop = _stitching(cfg, grid)

    def prepare(ids: torch.Tensor, conf: torch.Tensor, lens: torch.Tensor):
        from triton_autogaze.kernels.trace_record import trace_record

        return (tiles, crop), trace_record(ids, conf, lens, None, cfg.tokens_per_scale, tiles, crop)

    return prepare


def _stitching(cfg: AutoGazeConfig, grid: "TileGrid | None"):
    if grid is None:
        return None, None
    return grid.tiles, [grid.stitched_shape(s) for s in range(len(cfg.grid_sizes))]


def split_record(cfg: AutoGazeConfig, gazing_pos: torch.Tensor, if_padded: torch.Tensor,
                 num_each_frame: torch.Tensor | list[int]) -> list[torch.Tensor]:
    """Inverse of :func:`assemble_record`: per-frame frame-local ids [B, L_t], pads set to EOS."""
    nv, eos = cfg.num_vision_tokens_each_frame, cfg.eos_id
    lengths = [int(x) for x in (num_each_frame.tolist() if torch.is_tensor(num_each_frame) else num_each_frame)]
    if sum(lengths) != gazing_pos.shape[1]:
        raise ValueError(f"num_gazing_each_frame sums to {sum(lengths)}, gazing_pos has {gazing_pos.shape[1]} columns")
    out, start = [], 0
    for t, L in enumerate(lengths):
        ids = gazing_pos[:, start:start + L] - nv * t
        ids = torch.where(if_padded[:, start:start + L].bool(), torch.full_like(ids, eos), ids)
        out.append(ids.long())
        start += L
    return out
