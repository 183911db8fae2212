"""Upstream AutoGaze's call surface (SPEC §7.1, §7.4, §8, §9, §10.1): argument rules, streaming state,
teacher-forced scoring and resolution adaptation, producing upstream's output dict."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from .record import assemble_record, record_of, split_record
from .reference.teacher import teacher_forced

if TYPE_CHECKING:  # pragma: no cover
    from .model import AutoGaze

PAST_KEYS = ("past_key_values", "past_input_embeds", "past_attention_mask", "past_conv_values")


class GazeKVCache:
    """Opaque ``past_key_values`` of a stream: the generator's state (KV cache, key-mask bits, pending chunk).

    Pass it back, with the three lists returned beside it, to continue the clip frame by frame.
    """

    def __init__(self, state: Any, semantics: str, batch: int, backend: str):
        self.state, self.semantics, self.batch, self.backend = state, semantics, batch, backend
        self.frames = 0

    def __repr__(self) -> str:
        return f"GazeKVCache(batch={self.batch}, frames={self.frames}, semantics={self.semantics!r})"


def _budget_and_threshold(model: "AutoGaze", gazing_ratio: Any, task_loss_requirement: Any, B: int, T: int):
    from .model import thresholds

    cfg = model.config
    if gazing_ratio is None and task_loss_requirement is None:
        ratio: Any = cfg.default_gazing_ratio
        tl = cfg.default_task_loss_requirement if cfg.has_task_loss_requirement_during_inference else None
    elif gazing_ratio is None:
        ratio, tl = 1.0, task_loss_requirement
    else:
        ratio, tl = gazing_ratio, task_loss_requirement
    budgets = model.budgets(ratio, T)
    tau = None if tl is None else thresholds(tl, B, T, model.device)
    return budgets, tau


def _base_output(model: "AutoGaze", rec: dict, tau: torch.Tensor | None) -> dict:
    cfg = model.config
    out = dict(rec)
    out.update(
        scales=list(cfg.scales),
        frame_sampling_rate=1,
        num_vision_tokens_each_frame=cfg.num_vision_tokens_each_frame,
        has_task_loss_requirement=tau is not None,
        task_loss_requirement=tau,
        log_action_probs=None,
        task_loss_prediction=None,
    )
    for k in PAST_KEYS:
        out[k] = None
    return out


def _score(model: "AutoGaze", video: torch.Tensor, frame_ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    from .precision import exact_fp32

    with torch.inference_mode(), exact_fp32():
        vision, _ = model.encode(video)
        return teacher_forced(model.decoder, model.config, vision, frame_ids)


def upstream_call(model: "AutoGaze", inputs: dict, *, gazing_ratio: Any, task_loss_requirement: Any,
                  target_scales: Sequence[int] | None, target_patch_size: int | None, gazing_info: dict | None,
                  generate_only: bool, use_cache: bool, past_key_values: Any, past_inputs_embeds: list | None,
                  past_attention_mask: list | None, past_conv_values: list | None, batch_semantics: str) -> dict:
    from .model import check_video

    if not isinstance(inputs, dict) or "video" not in inputs:
        raise TypeError("inputs must be a dict with key 'video' holding a [B, T, 3, H, W] tensor")
    video = check_video(inputs["video"], "inputs['video']").to(model.device, torch.float32)
    B, T = video.shape[:2]
    pasts = (past_key_values, past_inputs_embeds, past_attention_mask, past_conv_values)
    given = sum(p is not None for p in pasts)
    if given not in (0, 4):
        raise ValueError("past_key_values, past_inputs_embeds, past_attention_mask and past_conv_values "
                         "must be given together or not at all")
    if use_cache and not generate_only:
        raise ValueError("use_cache=True requires generate_only=True")
    budgets, tau = _budget_and_threshold(model, gazing_ratio, task_loss_requirement, B, T)

    if target_scales is not None or target_patch_size is not None:
        if target_scales is None or target_patch_size is None:
            raise ValueError("target_scales and target_patch_size must be given together")
        if _needs_resadapt(model, target_scales, target_patch_size):
            if given or use_cache:
                raise ValueError("streaming (use_cache / past_*) is not supported with target_scales adaptation")
            if gazing_info is not None:
                raise ValueError("gazing_info is not supported with target_scales adaptation")
            return _resadapt_call(model, video, budgets, tau, list(target_scales), int(target_patch_size),
                                  batch_semantics)

    if gazing_info is not None:
        return _score_given(model, video, gazing_info, tau)

    state, conv = None, None
    if given:
        if not isinstance(past_key_values, GazeKVCache):
            raise TypeError("past_key_values must be the GazeKVCache returned by a previous use_cache=True call")
        if past_key_values.batch != B:
            raise ValueError(f"past_key_values holds {past_key_values.batch} rows, the video has {B}")
        if past_key_values.semantics != batch_semantics:
            raise ValueError(f"past_key_values was made with batch_semantics={past_key_values.semantics!r}")
        if past_key_values.backend != model.backend:
            raise ValueError(f"past_key_values was made by the {past_key_values.backend!r} backend")
        state = past_key_values.state
        conv = past_conv_values[0] if len(past_conv_values) else None
    g = model._generate(video, budgets, tau, batch_semantics, state=state, conv_cache=conv)
    frame_ids = [f.ids for f in g.out.frames]
    rec = record_of(model.config, g.out)
    confidence = rec.pop("confidence")
    out = _base_output(model, rec, tau)
    # not an upstream key: each gaze's softmax probability when it was chosen (0 at pads), [B, N] fp32
    out["confidence"] = confidence

    if use_cache:
        cache = past_key_values if given else GazeKVCache(g.state, batch_semantics, B, model.backend)
        cache.state = g.state
        cache.frames += T
        embeds = past_inputs_embeds if given else []
        masks = past_attention_mask if given else []
        convs = past_conv_values if given else []
        for t, ids in enumerate(frame_ids):  # upstream extends the caller's lists in place (quirk §11.19)
            embeds += [g.vision[:, t], model.decoder.embed[ids]]
            masks += [torch.ones(B, g.vision.shape[2], dtype=torch.long, device=model.device),
                      (ids != model.config.eos_id).long()]
        convs[:] = [g.conv_cache]
        out.update(past_key_values=cache, past_input_embeds=embeds, past_attention_mask=masks,
                   past_conv_values=convs)
    if not generate_only:
        probs, tl = _score(model, video, frame_ids)
        out["log_action_probs"] = torch.log(probs + 1e-8)
        out["task_loss_prediction"] = tl
    return out


def _score_given(model: "AutoGaze", video: torch.Tensor, gazing_info: dict, tau: torch.Tensor | None) -> dict:
    """Skip generation and score a given gaze record (upstream's ``gazing_info=``)."""
    try:
        pos, pad, num = (gazing_info[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame"))
    except (KeyError, TypeError):
        raise ValueError("gazing_info must be a dict with gazing_pos, if_padded_gazing and num_gazing_each_frame") from None
    pos, pad = torch.as_tensor(pos, device=model.device), torch.as_tensor(pad, device=model.device).bool()
    if pos.dim() != 2 or pos.shape != pad.shape or pos.shape[0] != video.shape[0]:
        raise ValueError(f"gazing_info: gazing_pos {tuple(pos.shape)} / if_padded_gazing {tuple(pad.shape)} "
                         f"must both be [B={video.shape[0]}, N]")
    frame_ids = split_record(model.config, pos, pad, num)
    if len(frame_ids) != video.shape[1]:
        raise ValueError(f"gazing_info has {len(frame_ids)} frames, the video has {video.shape[1]}")
    nv = model.config.num_vision_tokens_each_frame
    for t, ids in enumerate(frame_ids):
        if ((ids < 0) | (ids > nv)).any():
            raise ValueError(f"gazing_info: frame {t} has ids outside 0..{nv - 1}")
    out = _base_output(model, assemble_record(model.config, frame_ids), tau)
    probs, tl = _score(model, video, frame_ids)
    out["log_action_probs"] = torch.log(probs + 1e-8)
    out["task_loss_prediction"] = tl
    return out


# ----- resolution adaptation (SPEC §10.1) ---------------------------------------------------------------
def _needs_resadapt(model: "AutoGaze", target_scales: Sequence[int], p: int) -> bool:
    cfg = model.config
    ts = [int(s) for s in target_scales]
    if len(ts) != len(cfg.scales):
        raise ValueError(f"target_scales must have {len(cfg.scales)} entries, got {len(ts)}")
    if int(p) <= 0:
        raise ValueError(f"target_patch_size must be positive, got {p}")
    for s in ts:
        if s <= 0 or s % int(p):
            raise ValueError(f"target_scales entry {s} is not a positive multiple of target_patch_size {p}")
    plain = ts == list(cfg.scales) and [(s // int(p)) ** 2 for s in ts] == list(cfg.tokens_per_scale)
    return not plain


def _resadapt_call(model: "AutoGaze", video: torch.Tensor, budgets: list[int], tau: torch.Tensor | None,
                   ts: list[int], p: int, semantics: str) -> dict:
    cfg = model.config
    B, T, C, H, W = video.shape
    if H != ts[-1] or W != ts[-1]:
        raise ValueError(f"with target_scales the input must be square at the largest target scale "
                         f"{ts[-1]}x{ts[-1]}, got {H}x{W}")
    tf = cfg.grid_sizes
    fm = [s // p for s in ts]
    nh = nw = math.ceil(fm[-1] / tf[-1])
    tile = tf[-1] * p
    pad = nh * tile - H
    v = F.pad(video, (0, pad, 0, pad)) if pad else video  # zeros in normalised space, bottom and right
    tiles = v.reshape(B, T, C, nh, tile, nw, tile).permute(0, 3, 5, 1, 2, 4, 6).reshape(B * nh * nw, T, C, tile, tile)
    tau_tiles = None if tau is None else tau.repeat_interleave(nh * nw, dim=0)
    g = model._generate(tiles, budgets, tau_tiles, semantics)
    rec = assemble_record(cfg, [f.ids for f in g.out.frames])
    masks = stitch_masks(rec["gazing_mask"], B, nh, nw, tf, crop=fm)
    out = _base_output(model, records_from_masks(masks), tau)
    out["gazing_mask"] = masks
    out["num_vision_tokens_each_frame"] = sum(f * f for f in fm)
    del out["log_action_probs"], out["task_loss_prediction"]
    return out


def stitch_masks(tile_masks: list[torch.Tensor], B: int, nh: int, nw: int, grids: Sequence[int],
                 crop: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Per-scale tile masks [B*nh*nw, T, g*g] (tiles batch-major, row, col) -> [B, T, rows*cols] flattened
    full grids, cropped to the top-left crop[s] x crop[s] when given."""
    out = []
    for s, m in enumerate(tile_masks):
        g = grids[s]
        T = m.shape[1]
        full = m.reshape(B, nh, nw, T, g, g).permute(0, 3, 1, 4, 2, 5).reshape(B, T, nh * g, nw * g)
        if crop is not None:
            full = full[:, :, : crop[s], : crop[s]]
        out.append(full.reshape(B, T, -1).contiguous())
    return out


def records_from_masks(masks: list[torch.Tensor]) -> dict:
    """Re-derive gazing_pos / if_padded_gazing / num_gazing_each_frame from per-scale masks (order is lost:
    ids ascending; rows padded with -1 to the longest row of each frame, then offset by N'*t)."""
    full = torch.cat(masks, dim=-1) > 0  # [B, T, N']
    B, T, Np = full.shape
    counts = full.sum(-1)  # [B, T]
    lengths = counts.max(0).values if B else torch.zeros(T, dtype=torch.long)
    pos_parts, pad_parts = [], []
    ar = torch.arange(Np, device=full.device)
    for t in range(T):
        L = int(lengths[t])
        # ascending indices of ones, -1 after them: sort keys put ones first in index order
        key = torch.where(full[:, t], ar, Np + ar)
        idx = key.sort(-1).values[:, :L]
        valid = idx < Np
        idx = torch.where(valid, idx, torch.full_like(idx, -1))
        pos_parts.append(idx + Np * t)
        pad_parts.append(~valid)
    return {
        "gazing_pos": torch.cat(pos_parts, 1) if pos_parts else torch.zeros(B, 0, dtype=torch.long),
        "if_padded_gazing": torch.cat(pad_parts, 1) if pad_parts else torch.zeros(B, 0, dtype=torch.bool),
        "num_gazing_each_frame": lengths.long(),
        "gazing_mask": masks,
    }
