"""Static device buffers of the engine: packed decoder weights, and one Workspace per batch of rows.

A Workspace holds everything a generation touches, allocated once for ``rows`` rows and ``capacity`` cached
tokens, so a whole call can be captured in a CUDA graph: per-layer K/V caches [B, H, Lmax, D], key-mask bits
[B, Lmax], per-row device state (cache length, unmasked count, pending chunk, frame offsets, alive history),
activation buffers over S = K + N slots (the prefill layout: K pending slots, then N vision slots; decode feeds
use slots 0..K-1), the MLP activations, split-K attention partials and RoPE tables indexed by position.
"""

from __future__ import annotations

import torch
import triton

from ..config import AutoGazeConfig
from ..reference.decoder import rope_inv_freq
from triton_autogaze.kernels.attention import AttentionScratch
from triton_autogaze.kernels.heads_select import SelectScratch, ban_width


class PackedWeights:
    """Decoder weights in kernel layout: cat(q,k,v) [3C, C], cat(gate, up) [2I, C], in fp32 or bf16.

    Norm weights stay fp32 (they are read once per token); ``dtype`` applies to the matrices and embeddings.
    """

    def __init__(self, w: dict[str, torch.Tensor], cfg: AutoGazeConfig, device: torch.device, dtype: torch.dtype):
        d = cfg.decoder
        mat = lambda t: t.to(device=device, dtype=dtype).contiguous()  # noqa: E731
        vec = lambda t: t.to(device=device, dtype=torch.float32).contiguous()  # noqa: E731
        self.layers = []
        for i in range(d.num_hidden_layers):
            p = f"gaze_decoder.model.layers.{i}."
            self.layers.append(dict(
                ln1=vec(w[p + "input_layernorm.weight"]),
                qkv=mat(torch.cat([w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"],
                                   w[p + "self_attn.v_proj.weight"]], 0)),
                o=mat(w[p + "self_attn.o_proj.weight"]),
                ln2=vec(w[p + "post_attention_layernorm.weight"]),
                gate_up=mat(torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]], 0)),
                down=mat(w[p + "mlp.down_proj.weight"]),
            ))
        self.embed = mat(w["gaze_decoder.model.embed_tokens.weight"])
        self.norm = vec(w["gaze_decoder.model.norm.weight"])
        self.lm_head = mat(w["gaze_decoder.lm_head.weight"])
        self.tl_head = mat(w["gaze_decoder.task_loss_prediction_head.weight"])
        self.inv_freq = rope_inv_freq(d.rope, d.head_dim).to(device)


INDEX_LIMIT = 2**31  # the kernels address their buffers with 32-bit offsets


def check_index_range(sizes: dict[str, int], hint: str) -> None:
    """Raise ValueError naming the first buffer whose element count the kernels' 32-bit offsets cannot address."""
    for name, n in sizes.items():
        if n >= INDEX_LIMIT:
            raise ValueError(f"{name}: {n} elements exceed what the Triton kernels can index (2^31 - 1); {hint}")


class Workspace:
    """All buffers of one batch of ``rows`` rows with room for ``capacity`` cached tokens per row."""

    def __init__(self, cfg: AutoGazeConfig, rows: int, capacity: int, device: torch.device, dtype: torch.dtype,
                 inv_freq: torch.Tensor, prefill_block: int, decode_block: int, chunk: int, decode_splits: int = 0,
                 prefill_attention_block: int | None = None):
        d = cfg.decoder
        pab = prefill_block if prefill_attention_block is None else prefill_attention_block
        K, N, C = d.num_multi_token_pred, cfg.num_tokens, d.hidden_size
        H, D, V = d.num_attention_heads, d.head_dim, d.vocab_size
        B = rows
        check_index_range({
            "KV cache (one layer)": B * H * capacity * D,
            "attention o_proj partials": H * B * (K + N) * C,
            "MLP activations": B * (K + N) * d.intermediate_size,
            "attention split partials": AttentionScratch.acc_size(B * H * triton.cdiv(K + N, pab),
                                                                 triton.cdiv(capacity, chunk), pab, D),
        }, f"{B} rows x {capacity} cached tokens is too large for one call: use fewer rows per call "
           "(tile_batch_size, smaller batches) or restart long streams")
        self.rows, self.capacity, self.device, self.dtype = rows, capacity, device, dtype
        self.K, self.N, self.S = K, N, K + N
        S = self.S
        i32 = dict(dtype=torch.int32, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        self.k = [torch.zeros(B, H, capacity, D, dtype=dtype, device=device) for _ in range(d.num_hidden_layers)]
        self.v = [torch.zeros(B, H, capacity, D, dtype=dtype, device=device) for _ in range(d.num_hidden_layers)]
        self.keymask = torch.zeros(B, capacity, dtype=torch.int8, device=device)
        freqs = torch.arange(capacity, device=device).float()[:, None] * inv_freq[None, :]
        self.cos, self.sin = freqs.cos().contiguous(), freqs.sin().contiguous()
        # persistent per-row state (carried across calls)
        self.clen = torch.zeros(B, **i32)
        self.ccount = torch.zeros(B, **i32)
        self.chunk_n = torch.zeros(B, **i32)
        self.chunk_ids = torch.full((B, K), cfg.eos_id, **i32)
        self.x = torch.zeros(B, S, C, **f32)  # layer-0 input; slots 0..K-1 also carry the pending embeddings
        # per-frame state
        self.pre_qoff = torch.zeros(B, **i32)
        self.pre_jmin = torch.zeros(B, **i32)
        self.fstart = torch.zeros(B, **i32)
        self.zeros = torch.zeros(B, **i32)
        self.pos = torch.zeros(B, S, **i32)
        self.dpos = torch.zeros(B, K, **i32)
        self.alive = torch.zeros(triton.cdiv(V - 1, K) + 1, B, **i32)
        self.ban = torch.zeros(B, ban_width(V), dtype=torch.int8, device=device)
        # activations
        self.hA = torch.zeros(B, S, C, **f32)
        self.m: torch.Tensor | None = None  # [B, S, C] fp32, allocated by the first merged prefill feed
        self.hB = torch.zeros(B, S, C, **f32)
        self.q = torch.zeros(B, H, S, D, **f32)
        self.opart = torch.zeros(H, B, S, C, **f32)
        self.act = torch.zeros(B, S, d.intermediate_size, **f32)
        self.prefill_block, self.decode_block, self.chunk = prefill_block, decode_block, chunk
        nsplit = triton.cdiv(capacity, chunk)
        self.att_prefill = AttentionScratch(B * H * triton.cdiv(S, pab), nsplit, pab, D, device)
        # decode feeds may take smaller chunks while the cache is short (TritonGenerator.decode_chunk): at most
        # decode_splits splits then
        self.att_decode = AttentionScratch(B * H * triton.cdiv(K, decode_block), max(nsplit, decode_splits),
                                           decode_block, D, device)
        self.select = SelectScratch(B, K, V, device)
        self.graphs: dict = {}
        self.seen: set = set()
        self.calls: dict = {}
        self.owner = None  # weakref to the EngineState that currently owns this workspace

    def reset(self) -> None:
        """Start a fresh clip: empty cache, no pending chunk."""
        self.clen.zero_()
        self.ccount.zero_()
        self.chunk_n.zero_()

    def carry_from(self, old: "Workspace") -> None:
        """Copy the persistent state of a smaller workspace of the same rows (cache growth while streaming)."""
        self.carry_rows_from(old, 0)

    def carry_rows_from(self, old: "Workspace", first: int) -> None:
        """Copy the persistent state of ``old`` (no larger) into rows [first, first + old.rows) of this one."""
        if old.capacity > self.capacity or first < 0 or first + old.rows > self.rows:
            raise ValueError(f"carry_rows_from: {old.rows} rows x {old.capacity} tokens do not fit rows from {first} "
                             f"of {self.rows} x {self.capacity}")
        n, r = old.capacity, slice(first, first + old.rows)
        for dst, src in zip(self.k + self.v, old.k + old.v):
            dst[r, :, :n].copy_(src)
        self.keymask[r, :n].copy_(old.keymask)
        for name in ("clen", "ccount", "chunk_n", "chunk_ids"):
            getattr(self, name)[r].copy_(getattr(old, name))
        self.x[r, : self.K].copy_(old.x[:, : self.K])


class CallBuffers:
    """Static inputs/outputs of one call shape: vision [B, T, N, C], tau [T, B], outputs [T, B, Mmax]."""

    def __init__(self, rows: int, frames: int, max_budget: int, cfg: AutoGazeConfig, device: torch.device):
        C, N = cfg.decoder.hidden_size, cfg.num_tokens
        check_index_range({"vision": rows * frames * N * C, "ids": frames * rows * max_budget},
                          f"{rows} rows x {frames} frames is too large for one call: use fewer rows or frames per call")
        self.vision = torch.zeros(rows, frames, N, C, dtype=torch.float32, device=device)
        self.tau = torch.zeros(frames, rows, dtype=torch.float32, device=device)
        self.ids = torch.full((frames, rows, max_budget), cfg.eos_id, dtype=torch.int64, device=device)
        self.conf = torch.zeros(frames, rows, max_budget, dtype=torch.float32, device=device)
        self.lens = torch.zeros(frames, rows, dtype=torch.int32, device=device)
