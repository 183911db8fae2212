"""Llama-style gaze decoder (SPEC §5-§6): input embeddings + positions + key mask -> final hidden states.

A static KV cache (:class:`KVCache`) holds already-rotated keys and raw values per layer, written in place.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import AutoGazeConfig, RopeConfig


def rope_inv_freq(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2] fp32, with llama3 scaling, as Hugging Face computes them."""
    inv = 1.0 / (rope.theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope.rope_type != "llama3":
        return inv
    old = rope.original_max_position_embeddings
    low_w = old / rope.low_freq_factor
    high_w = old / rope.high_freq_factor
    wavelen = 2 * math.pi / inv
    inv_l = torch.where(wavelen > low_w, inv / rope.factor, inv)
    smooth = (old / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    smoothed = (1 - smooth) * inv_l / rope.factor + smooth * inv_l
    medium = ~(wavelen < high_w) * ~(wavelen > low_w)
    return torch.where(medium, smoothed, inv_l)


def rope_cos_sin(inv_freq: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """pos [B, n] int -> cos, sin [B, 1, n, D] fp32 ("rotate half" layout)."""
    freqs = pos.to(torch.float32)[..., None] * inv_freq.to(pos.device)  # [B, n, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    var = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(var + eps))


class KVCache:
    """Preallocated per-layer K/V buffers [B, H, capacity, D] and the key-mask bits of cached tokens.

    ``length`` tokens are valid. ``keymask`` [B, capacity] bool is the attendability bit of each cached key.
    Grows by doubling when a write would overflow (streaming of unknown length).
    """

    def __init__(self, num_layers: int, batch: int, heads: int, head_dim: int, capacity: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.num_layers, self.batch, self.heads, self.head_dim = num_layers, batch, heads, head_dim
        self.k = [torch.zeros(batch, heads, capacity, head_dim, device=device, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros_like(t) for t in self.k]
        self.keymask = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity)
        for lst in (self.k, self.v):
            for i, t in enumerate(lst):
                new = t.new_zeros(t.shape[0], t.shape[1], cap, t.shape[3])
                new[:, :, : self.length] = t[:, :, : self.length]
                lst[i] = new
        km = self.keymask.new_zeros(self.batch, cap)
        km[:, : self.length] = self.keymask[:, : self.length]
        self.keymask = km

    def select_rows(self, rows: list[int]) -> "KVCache":
        """A new cache holding the given batch rows (copies)."""
        out = KVCache.__new__(KVCache)
        out.num_layers, out.heads, out.head_dim = self.num_layers, self.heads, self.head_dim
        out.batch = len(rows)
        idx = torch.tensor(rows, device=self.keymask.device)
        out.k = [t.index_select(0, idx) for t in self.k]
        out.v = [t.index_select(0, idx) for t in self.v]
        out.keymask = self.keymask.index_select(0, idx)
        out.length = self.length
        return out


class Decoder:
    """The 4-layer decoder over a :class:`KVCache`. Holds references to the checkpoint tensors."""

    def __init__(self, w: dict[str, torch.Tensor], cfg: AutoGazeConfig):
        d = cfg.decoder
        self.cfg, self.d = cfg, d
        self.embed = w["gaze_decoder.model.embed_tokens.weight"]
        self.layers = []
        for i in range(d.num_hidden_layers):
            p = f"gaze_decoder.model.layers.{i}."
            self.layers.append(dict(
                ln1=w[p + "input_layernorm.weight"],
                # one [3C, C] matmul instead of three
                qkv=torch.cat([w[p + "self_attn.q_proj.weight"], w[p + "self_attn.k_proj.weight"],
                               w[p + "self_attn.v_proj.weight"]], dim=0),
                o=w[p + "self_attn.o_proj.weight"],
                ln2=w[p + "post_attention_layernorm.weight"],
                gate_up=torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]], dim=0),
                down=w[p + "mlp.down_proj.weight"],
            ))
        self.norm = w["gaze_decoder.model.norm.weight"]
        self.lm_head = w["gaze_decoder.lm_head.weight"]
        self.tl_head = w["gaze_decoder.task_loss_prediction_head.weight"]
        self.inv_freq = rope_inv_freq(d.rope, d.head_dim).to(self.embed.device)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        d = self.d
        return KVCache(d.num_hidden_layers, batch, d.num_attention_heads, d.head_dim, capacity,
                       device=self.embed.device, dtype=self.embed.dtype)

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, 1, 1, n, D] for position ids [B, n] (shared by q and k)."""
        cos, sin = rope_cos_sin(self.inv_freq, pos)
        return cos[:, None], sin[:, None]

    def forward(self, x: torch.Tensor, pos: torch.Tensor, new_keymask: torch.Tensor,
                cache: KVCache | None, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Run the decoder on new tokens.

        x: [B, n, C] fp32 input embeddings; pos: [B, n] int64 position ids; new_keymask: [B, n] bool mask bits
        of the new tokens (applied to keys). With a cache, new K/V are appended at ``cache.length`` and
        queries attend all cached keys; without one, the n tokens attend only each other.
        ``rope`` may pass precomputed :meth:`rope` values for ``pos``. Returns the final-normed hidden states
        [B, n, C].
        """
        d = self.d
        B, n, C = x.shape
        H, D = d.num_attention_heads, d.head_dim
        cos, sin = rope if rope is not None else self.rope(pos)
        if cache is not None:
            cache.reserve(n)
            L0 = cache.length
            cache.keymask[:, L0:L0 + n] = new_keymask
            keymask = cache.keymask[:, : L0 + n]
        else:
            L0 = 0
            keymask = new_keymask
        Lk = L0 + n
        # Additive float mask (0 allowed, -inf not): key-mask bits of every key, plus causality among the n
        # new tokens (earlier keys all precede every query). Every query sees key 0, a vision token, so no
        # row is fully masked. A float mask is measurably faster than a bool one in PyTorch's CPU SDPA.
        bias = torch.zeros(B, 1, n, Lk, dtype=x.dtype, device=x.device)
        bias.masked_fill_(~keymask[:, None, None, :], float("-inf"))
        future = torch.ones(n, n, dtype=torch.bool, device=x.device).triu_(1)
        bias[:, :, :, L0:].masked_fill_(future, float("-inf"))
        h = x
        for li, lw in enumerate(self.layers):
            a = rms_norm(h, lw["ln1"], d.rms_norm_eps)
            qkv = (a @ lw["qkv"].t()).view(B, n, 3, H, D).permute(0, 2, 3, 1, 4)  # [B, 3, H, n, D]
            qk = apply_rope(qkv[:, :2], cos, sin)  # q and k rotated together
            q, k, v = qk[:, 0], qk[:, 1], qkv[:, 2]  # [B, H, n, D]
            if cache is not None:
                cache.k[li][:, :, L0:Lk] = k
                cache.v[li][:, :, L0:Lk] = v
                k, v = cache.k[li][:, :, :Lk], cache.v[li][:, :, :Lk]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, H, n, D]
            h = h + o.transpose(1, 2).reshape(B, n, C) @ lw["o"].t()
            m = rms_norm(h, lw["ln2"], d.rms_norm_eps)
            gu = m @ lw["gate_up"].t()
            g, u = gu.split(d.intermediate_size, dim=-1)
            h = h + (F.silu(g) * u) @ lw["down"].t()
        if cache is not None:
            cache.length = Lk
        return rms_norm(h, self.norm, d.rms_norm_eps)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [..., C] -> (logits [..., K, V] fp32, task-loss predictions [..., K] fp32)."""
        d = self.d
        logits = (h @ self.lm_head.t()).view(*h.shape[:-1], d.num_multi_token_pred, d.vocab_size)
        return logits.float(), (h @ self.tl_head.t()).float()
