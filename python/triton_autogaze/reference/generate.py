"""Greedy multi-token gaze generation (SPEC §6-§7, §9): vision embeddings -> gaze ids per frame.

This is the oracle every fast path is tested against. It follows upstream step for step, quirks included:
frozen decode positions, the deferred last chunk, per-frame no-repeat, element-wise task-loss padding,
first-token exemption, budget truncation inside a step, and (with ``semantics="upstream"``) batch coupling.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import AutoGazeConfig
from .decoder import Decoder, KVCache

NEG_INF = float("-inf")


def frame_budget(ratio: float, num_vision_tokens: int) -> int:
    """M_t = max(trunc(float32(ratio) * float32(NV)), 1), as upstream computes it."""
    # an IEEE float32 product, as torch's, without torch ops (cheap: the pipeline plans while upload threads run)
    r = np.float32(ratio) * np.float32(num_vision_tokens)
    return max(int(r), 1)


@dataclass
class GazeState:
    """Everything carried from one frame to the next, for one batch of rows that step together.

    cache: K/V and key-mask bits of every fed token; pending: [B, m] int64 ids chosen in the last step of the
    previous frame, not yet fed (m = 0 before the first frame); conv_cache: [B, Cv, 2, g, g] or None.
    """

    cache: KVCache
    pending: torch.Tensor
    conv_cache: torch.Tensor | None = None
    frames: int = 0

    def select_rows(self, rows: list[int]) -> "GazeState":
        idx = torch.tensor(rows, device=self.pending.device)
        return GazeState(
            cache=self.cache.select_rows(rows),
            pending=self.pending.index_select(0, idx),
            conv_cache=None if self.conv_cache is None else self.conv_cache.index_select(0, idx),
            frames=self.frames,
        )


@dataclass
class FrameResult:
    """One frame of one batch. ids: [B, L] int64 frame-local ids (pads = EOS); confidence: [B, L] fp32
    softmax probability of the chosen id among the ids still allowed at that choice (0 at pads)."""

    ids: torch.Tensor
    confidence: torch.Tensor


@dataclass
class PaddedFrames:
    """A call's frames at full width, as the Triton engine holds them: ids [T, B, M] int64 with EOS past each
    row's length, confidence [T, B, M] fp32 (0 there), lens [T, B] int32 row lengths (same device), widths: the
    T frame widths max_b lens[t] as host ints (frame t's FrameResult is its first widths[t] columns); prepared:
    what the call's ``prepare`` hook made of them before its sync (``record.record_preparer``), if any."""

    ids: torch.Tensor
    confidence: torch.Tensor
    lens: torch.Tensor
    widths: list[int]
    prepared: Any = None

    def frame_results(self) -> list[FrameResult]:
        """The per-frame [B, widths[t]] results: views of the full-width tensors."""
        return [FrameResult(ids=self.ids[t, :, :w], confidence=self.confidence[t, :, :w])
                for t, w in enumerate(self.widths)]


@dataclass
class GenerationOutput:
    frames: list[FrameResult] = field(default_factory=list)
    padded: PaddedFrames | None = None  # the same frames at full width, where the generator holds them
    # [T, B] int64 (CPU) each row's own frame length, where rows generated apart were padded to the longest
    # (merge_rows); with ``padded`` its ``lens`` say the same
    row_lens: torch.Tensor | None = None


def new_state(decoder: Decoder, batch: int, capacity: int) -> GazeState:
    dev = decoder.embed.device
    return GazeState(cache=decoder.new_cache(batch, capacity),
                     pending=torch.empty(batch, 0, dtype=torch.long, device=dev))


def generate_frame(decoder: Decoder, cfg: AutoGazeConfig, state: GazeState, vision: torch.Tensor,
                   budget: int, tau: torch.Tensor | None) -> FrameResult:
    """Run SPEC §7.2 for one frame with upstream batch semantics; updates ``state`` in place.

    vision: [B, N, C] fp32 connector output of this frame; tau: [B] fp32 thresholds or None.
    """
    K, eos = cfg.decoder.num_multi_token_pred, cfg.eos_id
    cache, pending = state.cache, state.pending
    B, N = vision.shape[0], vision.shape[1]
    dev = vision.device
    embed = decoder.embed

    # Prefill: the previous frame's pending chunk, then this frame's vision tokens, with cumsum positions.
    x = torch.cat([embed[pending], vision], dim=1)  # [B, m + N, C]
    xm = torch.cat([pending != eos, torch.ones(B, N, dtype=torch.bool, device=dev)], dim=1)
    Lc = cache.length
    full = torch.cat([cache.keymask[:, :Lc], xm], dim=1)
    pos = (full.long().cumsum(1) - 1)[:, Lc:]
    h = decoder.forward(x, pos, xm, cache)
    decode_pos = pos[:, -K:]  # frozen for every decode step of this frame (quirk §11.1)
    decode_rope = decoder.rope(decode_pos)
    feed_bits = torch.ones(B, K, dtype=torch.bool, device=dev)
    frame_gaze_start = cache.length

    ids = torch.empty(B, 0, dtype=torch.long, device=dev)
    confs = torch.empty(B, 0, dtype=torch.float32, device=dev)
    alive = torch.ones(B, dtype=torch.bool, device=dev)
    first = True
    choose = getattr(decoder, "choose_step", choose_step)  # cpu_fast.FastDecoder brings a native one
    while True:
        logits, tl = decoder.heads(h[:, -1])  # [B, K, V], [B, K]
        step_ids, step_conf, cut = choose(logits, ids, budget, eos)
        n = step_ids.shape[1]
        step_ids[~alive] = eos
        hit = torch.zeros(B, n, dtype=torch.bool, device=dev)
        if tau is not None:
            hit = tl[:, :n] <= tau[:, None]
            if first:
                hit[:, 0] = False
            step_ids[hit] = eos
        full_budget = ids.shape[1] + n >= budget
        if full_budget:
            keep = budget - ids.shape[1]
            step_ids, step_conf = step_ids[:, :keep], step_conf[:, :keep]
        ids = torch.cat([ids, step_ids], 1)
        confs = torch.cat([confs, torch.where(step_ids == eos, 0.0, step_conf)], 1)
        alive = alive & ~hit.any(1)
        first = False
        if full_budget or cut or not bool(alive.any()):
            break
        # Feed the chunk: frozen positions, mask bit 1 within the frame even for pads (quirk §11.8).
        h = decoder.forward(embed[step_ids], decode_pos, feed_bits, cache, rope=decode_rope)

    fed = ids.shape[1] - step_ids.shape[1]
    if fed:  # from the next frame on, fed pads are masked
        cache.keymask[:, frame_gaze_start:frame_gaze_start + fed] = ids[:, :fed] != eos
    state.pending = step_ids
    state.frames += 1
    return FrameResult(ids=ids, confidence=confs)


def choose_step(logits: torch.Tensor, ids: torch.Tensor, budget: int, eos: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """The greedy choice of one step (before padding): up to K ids per row.

    logits: [B, K, V] fp32; ids: [B, L] ids already generated in this frame (banned on every head).
    Returns (chosen [B, n] int64, confidence [B, n] fp32, cut) where n < K only when the budget or an
    all-banned head stopped the step (``cut``).
    """
    B, K, _ = logits.shape
    scores = logits.clone()
    if ids.shape[1]:
        scores.scatter_(2, ids[:, None, :].expand(B, K, ids.shape[1]), NEG_INF)
    scores[:, :, eos] = NEG_INF
    # With finite logits a head cannot be all-banned before the budget ends the step (ids <= budget <= NV),
    # so the per-head check is only needed when the model produced non-finite logits.
    check_banned = not bool(torch.isfinite(logits).all())
    ar = torch.arange(B, device=logits.device)
    chosen, cut = [], False
    for i in range(K):
        if ids.shape[1] + i >= budget or (check_banned and bool(torch.isneginf(scores[:, i]).all())):
            cut = True
            break
        c = scores[:, i].argmax(-1)  # first index on ties
        scores[ar, i + 1:, c] = NEG_INF  # no repeats later in this step
        chosen.append(c)
    n = len(chosen)
    if n == 0:
        empty = torch.empty(B, 0, dtype=torch.long, device=logits.device)
        return empty, empty.float(), cut
    chosen_t = torch.stack(chosen, 1)
    # Row i of ``scores`` is final once head i has chosen (later choices ban only later heads), so one
    # softmax gives every choice's probability among the ids allowed at that moment.
    conf = torch.softmax(scores[:, :n], -1).gather(-1, chosen_t[..., None])[..., 0]
    return chosen_t, conf, cut


def capacity_for(cfg: AutoGazeConfig, frames: int, budgets: list[int]) -> int:
    K = cfg.decoder.num_multi_token_pred
    return sum(cfg.num_tokens + K + b + K for b in budgets) + K


def generate_upstream(decoder: Decoder, cfg: AutoGazeConfig, vision: torch.Tensor, budgets: list[int],
                      tau: torch.Tensor | None, state: GazeState) -> GenerationOutput:
    """All rows step together (upstream semantics). vision: [B, T, N, C]; tau: [B, T] or None."""
    out = GenerationOutput()
    state.cache.reserve(capacity_for(cfg, vision.shape[1], budgets))
    for t in range(vision.shape[1]):
        out.frames.append(generate_frame(decoder, cfg, state, vision[:, t], budgets[t],
                                         None if tau is None else tau[:, t]))
    return out


def merge_rows(cfg: AutoGazeConfig, per_row: list[GenerationOutput]) -> GenerationOutput:
    """Stack independently generated rows into one batch, padding each frame to the longest row with EOS."""
    eos = cfg.eos_id
    out = GenerationOutput()
    out.row_lens = torch.tensor([[r.frames[t].ids.shape[1] for r in per_row] for t in range(len(per_row[0].frames))],
                                dtype=torch.int64)
    for t in range(len(per_row[0].frames)):
        rows = [r.frames[t] for r in per_row]
        L = max(f.ids.shape[1] for f in rows)
        ids = torch.cat([torch.nn.functional.pad(f.ids, (0, L - f.ids.shape[1]), value=eos) for f in rows])
        conf = torch.cat([torch.nn.functional.pad(f.confidence, (0, L - f.ids.shape[1])) for f in rows])
        out.frames.append(FrameResult(ids=ids, confidence=conf))
    return out


def row_lens(out: GenerationOutput) -> torch.Tensor | None:
    """[T, B] int64 (CPU) each row's own frame length, where the output knows it (see GenerationOutput)."""
    if out.padded is not None:
        return out.padded.lens.to("cpu", torch.int64)
    return out.row_lens


def split_rows(out: GenerationOutput, bounds: list[tuple[int, int]]) -> list[GenerationOutput]:
    """Row ranges [start, stop) of an independent-semantics output, each laid out as a call of those rows alone
    would give them: each frame as wide as its longest row there. Needs each row's own length
    (``GenerationOutput.padded`` or ``row_lens``, read once for all ranges): rows end in pads that count, so the
    ids alone cannot tell."""
    lens = row_lens(out)
    if lens is None:
        raise ValueError("split_rows: the output does not hold its rows' own lengths")
    parts = []
    pf = out.padded
    for start, stop in bounds:
        widths = [int(w) for w in lens[:, start:stop].max(dim=1).values]
        if pf is not None:
            cut = PaddedFrames(pf.ids[:, start:stop].contiguous(), pf.confidence[:, start:stop].contiguous(),
                               pf.lens[:, start:stop].contiguous(), widths)
            parts.append(GenerationOutput(frames=cut.frame_results(), padded=cut))
        else:
            frames = [FrameResult(ids=f.ids[start:stop, :w], confidence=f.confidence[start:stop, :w])
                      for f, w in zip(out.frames, widths)]
            parts.append(GenerationOutput(frames=frames, row_lens=lens[:, start:stop].clone()))
    return parts


@dataclass
class TorchState:
    """Streaming state of :class:`TorchGenerator`: one GazeState (upstream) or one per row (independent)."""

    semantics: str
    states: list[GazeState]


class TorchGenerator:
    """Reference generation behind the same contract as the Triton engine's ``run``."""

    def __init__(self, decoder: Decoder, cfg: AutoGazeConfig):
        self.decoder, self.cfg = decoder, cfg

    def run(self, vision: torch.Tensor, budgets: list[int], tau: torch.Tensor | None, semantics: str,
            state: TorchState | None = None) -> tuple[GenerationOutput, TorchState]:
        """vision: [B, T, N, C]; budgets: T ints; tau: [B, T] fp32 or None."""
        B = vision.shape[0]
        if state is None:
            n_states = 1 if semantics == "upstream" else B
            rows = B if semantics == "upstream" else 1
            state = TorchState(semantics, [new_state(self.decoder, rows, 16) for _ in range(n_states)])
        if state.semantics != semantics:
            raise ValueError(f"cannot continue a '{state.semantics}' stream with batch_semantics='{semantics}'")
        scope = getattr(self.decoder, "generation", None)  # cpu_fast.FastDecoder: torch single-threaded in the loop
        with scope() if scope is not None else nullcontext():
            return self._run(vision, budgets, tau, semantics, state)

    def _run(self, vision: torch.Tensor, budgets: list[int], tau: torch.Tensor | None, semantics: str,
             state: TorchState) -> tuple[GenerationOutput, TorchState]:
        B = vision.shape[0]
        if semantics == "upstream":
            out = generate_upstream(self.decoder, self.cfg, vision, budgets, tau, state.states[0])
            return out, state
        outs = [
            generate_upstream(self.decoder, self.cfg, vision[b:b + 1], budgets,
                              None if tau is None else tau[b:b + 1], state.states[b])
            for b in range(B)
        ]
        return merge_rows(self.cfg, outs), state
