"""Teacher-forced scoring (SPEC §8): video + a gaze record -> per-gaze probabilities and task-loss predictions."""

from __future__ import annotations

import torch

from ..config import AutoGazeConfig
from .decoder import Decoder


def teacher_forced(decoder: Decoder, cfg: AutoGazeConfig, vision: torch.Tensor,
                   frame_ids: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """vision: [B, T, N, C] fp32; frame_ids: T tensors [B, L_t] frame-local ids (pads = EOS).

    Returns (probs [B, sum L] fp32, task_loss_prediction [B, sum L] fp32), one entry per gaze slot, pads
    scored as the EOS id.
    """
    K, eos = cfg.decoder.num_multi_token_pred, cfg.eos_id
    B, T, N, _ = vision.shape
    dev = vision.device
    segs, bits, gaze_idx, gaze_j = [], [], [], []
    offset = 0
    for t in range(T):
        segs.append(vision[:, t])
        bits.append(torch.ones(B, N, dtype=torch.bool, device=dev))
        offset += N
        ids = frame_ids[t]
        segs.append(decoder.embed[ids])
        bits.append(ids != eos)
        L = ids.shape[1]
        gaze_idx.append(torch.arange(offset, offset + L, device=dev))
        gaze_j.append(torch.arange(L, device=dev))
        offset += L
    x = torch.cat(segs, 1)
    mask = torch.cat(bits, 1)
    pos = mask.long().cumsum(1) - 1
    h = decoder.forward(x, pos, mask, cache=None)
    n = torch.cat(gaze_idx)  # sequence index of every gaze slot
    i = torch.cat(gaze_j) % K  # position inside its 10-chunk
    y = torch.cat(frame_ids, 1)  # [B, S]
    src = n - 1 - i  # the token just before the chunk
    hs = (i + 1) % K
    logits, _ = decoder.heads(h[:, src])  # [B, S, K, V]
    probs = torch.softmax(logits, -1)
    ar = torch.arange(n.shape[0], device=dev)
    p = probs[:, ar, i, :].gather(-1, y[..., None])[..., 0]
    _, tl_all = decoder.heads(h[:, n - hs])
    tl = tl_all[:, ar, hs]
    return p, tl
