"""Fast CPU decoder for the torch backend: the reference generation loop over a fused C++ decoder forward.

``reference/generate.py`` runs unchanged; only the decoder differs. :class:`FastDecoder` keeps the interface of
:class:`~triton_autogaze.reference.decoder.Decoder` (``forward``, ``heads``, ``rope``, ``new_cache``, ``embed``)
but runs each forward as one call into ``_cpu_decoder`` (AVX2 + FMA GEMM micro-kernels, fused two-pass
attention, a spin-waiting thread pool of ``torch.get_num_threads()`` threads, no per-op dispatch; torch itself
runs single-threaded inside the loop, see :meth:`FastDecoder.generation`) and returns
only the last token's hidden state, the one the loop reads. Same math in fp32, different summation order: tokens
equal the oracle's and upstream's on every parity fixture (tests/test_parity.py runs both paths).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from .reference.decoder import Decoder, rope_cos_sin
from .reference.generate import choose_step as reference_choose_step

try:
    from . import _cpu_decoder
except ImportError:  # built without the extension (non-x86 machine): the oracle runs instead
    _cpu_decoder = None

PANEL = 16  # the C++ GEMM reads weights (and cached keys) in panels of 16 columns


def available(decoder: Decoder) -> bool:
    """True when the fused CPU decoder can run this model: x86 with AVX2/FMA, CPU fp32 weights, sizes it handles."""
    if _cpu_decoder is None or not _cpu_decoder.supported():
        return False
    d = decoder.d
    return (decoder.embed.device.type == "cpu" and decoder.embed.dtype == torch.float32
            and d.hidden_size % PANEL == 0 and d.intermediate_size % PANEL == 0 and d.head_dim % PANEL == 0
            and d.head_dim <= 256 and d.num_attention_heads * d.head_dim == d.hidden_size
            and d.num_key_value_heads == d.num_attention_heads)


def pack(w: torch.Tensor) -> torch.Tensor:
    """Linear weight [N, K] (y = x W^T) -> panels [ceil(N/16), K, 16] of W^T, zero-padded to whole panels."""
    N, K = w.shape
    Np = -(-N // PANEL) * PANEL
    wt = torch.zeros(K, Np, dtype=torch.float32)
    wt[:, :N] = w.t()
    return wt.reshape(K, Np // PANEL, PANEL).permute(1, 0, 2).contiguous()


class FastKVCache:
    """The fused decoder's KV cache: rotated keys in 16-key tiles ``kp`` [L, B, H, cap/16, D, 16] (key-minor, so
    q.k for 16 keys is one GEMM panel), values ``v`` [L, B, H, cap, D], and ``keymask`` [B, cap] bool, the
    attendability bit of each cached key. ``length`` tokens are valid. Grows by doubling (streaming)."""

    def __init__(self, num_layers: int, batch: int, heads: int, head_dim: int, capacity: int):
        self.num_layers, self.batch, self.heads, self.head_dim = num_layers, batch, heads, head_dim
        cap = -(-max(capacity, 1) // PANEL) * PANEL
        self._set(torch.zeros(num_layers, batch, heads, cap // PANEL, head_dim, PANEL),
                  torch.zeros(num_layers, batch, heads, cap, head_dim), torch.zeros(batch, cap, dtype=torch.bool))
        self.length = 0

    def _set(self, kp: torch.Tensor, v: torch.Tensor, keymask: torch.Tensor) -> None:
        self.kp, self.v, self.keymask = kp, v, keymask
        # numpy views share the tensors' memory: in-place writes to keymask are seen by the C++ side
        self.views = (kp.numpy(), v.numpy(), keymask.view(torch.uint8).numpy())

    @property
    def capacity(self) -> int:
        return self.keymask.shape[1]

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need <= self.capacity:
            return
        cap = -(-max(need, 2 * self.capacity) // PANEL) * PANEL
        tiles = -(-self.length // PANEL)
        # uninitialised: a page is touched (and zero-filled by the OS) only once keys are written there. The C++
        # side never reads a value slot past `length`, and reads key slots past it only in the last partial tile,
        # whose lanes it masks to -inf before use (whatever bits they hold).
        kp = self.kp.new_empty(*self.kp.shape[:3], cap // PANEL, *self.kp.shape[4:])
        v = self.v.new_empty(*self.v.shape[:3], cap, self.v.shape[4])
        km = self.keymask.new_zeros(self.batch, cap)
        kp[:, :, :, :tiles] = self.kp[:, :, :, :tiles]
        v[:, :, :, : self.length] = self.v[:, :, :, : self.length]
        km[:, : self.length] = self.keymask[:, : self.length]
        self._set(kp, v, km)

    def select_rows(self, rows: list[int]) -> "FastKVCache":
        """A new cache holding the given batch rows (copies)."""
        out = FastKVCache.__new__(FastKVCache)
        out.num_layers, out.heads, out.head_dim, out.batch = self.num_layers, self.heads, self.head_dim, len(rows)
        idx = torch.tensor(rows)
        out._set(self.kp.index_select(1, idx), self.v.index_select(1, idx), self.keymask.index_select(0, idx))
        out.length = self.length
        return out


class FastDecoder:
    """Drop-in for the reference :class:`Decoder` inside ``reference/generate.py`` on the CPU.

    ``forward`` returns [B, 1, C]: the final-normed hidden state of each row's last new token only.
    """

    def __init__(self, ref: Decoder):
        if not available(ref):
            raise RuntimeError("the fused CPU decoder needs an x86-64 CPU with AVX2 and FMA and fp32 CPU weights")
        d = self.d = ref.d
        self.cfg, self.embed, self.inv_freq = ref.cfg, ref.embed, ref.inv_freq
        self.K, self.V = d.num_multi_token_pred, d.vocab_size
        layers = [dict(ln1=lw["ln1"].contiguous().numpy(), wqkv=pack(lw["qkv"]).numpy(), wo=pack(lw["o"]).numpy(),
                       ln2=lw["ln2"].contiguous().numpy(), wgu=pack(lw["gate_up"]).numpy(),
                       wdown=pack(lw["down"]).numpy())
                  for lw in ref.layers]
        heads = pack(torch.cat([ref.lm_head, ref.tl_head], 0))  # logits | task-loss predictions | zero padding
        self.native = _cpu_decoder.Decoder(d.hidden_size, d.num_attention_heads, d.head_dim, d.intermediate_size,
                                           d.rms_norm_eps, layers, ref.norm.contiguous().numpy(), heads.numpy())

    threads: int | None = None  # the native pool's size inside ``generation``; torch.get_num_threads() outside

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Scope of a generation loop (reference/generate.py enters it): torch runs on one thread while the native
        pool keeps torch's count. The loop's torch ops are tiny, and each multi-threaded one leaves libgomp's
        workers spin-waiting for the next parallel region for milliseconds afterwards, on the very cores the native
        pool needs (a 16-frame clip with stopping ran ~1.4x slower for it on 2 cores). Thread counts change no
        value here: the loop's torch ops are element-wise, integer or boolean."""
        n = torch.get_num_threads()
        if self.threads is not None or n <= 1:  # nested, or nothing to change
            yield
            return
        self.threads = n
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(n)
            self.threads = None

    def _threads(self) -> int:
        return self.threads or torch.get_num_threads()

    def new_cache(self, batch: int, capacity: int) -> FastKVCache:
        d = self.d
        return FastKVCache(d.num_hidden_layers, batch, d.num_attention_heads, d.head_dim, capacity)

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [B, n, D] fp32 for position ids [B, n] (the reference's values, laid out for the C++ side)."""
        cos, sin = rope_cos_sin(self.inv_freq, pos)
        return cos[:, 0].contiguous(), sin[:, 0].contiguous()

    def forward(self, x: torch.Tensor, pos: torch.Tensor, new_keymask: torch.Tensor, cache: FastKVCache,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """x: [B, n, C] fp32; pos: [B, n] int64; new_keymask: [B, n] bool. Appends n tokens to ``cache`` and
        returns the final-normed hidden state of each row's last token, [B, 1, C]."""
        B, n, C = x.shape
        cos, sin = rope if rope is not None else self.rope(pos)
        cache.reserve(n)
        L0 = cache.length
        cache.keymask[:, L0:L0 + n] = new_keymask
        out = torch.empty(B, C)
        kp, v, km = cache.views
        self.native.forward(x.contiguous().numpy(), cos.numpy(), sin.numpy(), kp, v, km, L0, out.numpy(),
                            self._threads())
        cache.length = L0 + n
        return out[:, None]

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, C] -> (logits [B, K, V] fp32, task-loss predictions [B, K] fp32)."""
        B = h.shape[0]
        out = torch.empty(B, self.native.n_out)
        self.native.heads(h.contiguous().numpy(), out.numpy(), self._threads())
        KV = self.K * self.V
        return out[:, :KV].view(B, self.K, self.V), out[:, KV:KV + self.K]

    def choose_step(self, logits: torch.Tensor, ids: torch.Tensor, budget: int,
                    eos: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """reference/generate.py ``choose_step`` in one native call (the reference runs for non-finite logits)."""
        B, K, _ = logits.shape
        chosen = torch.empty(B, K, dtype=torch.long)
        conf = torch.empty(B, K)
        n = _cpu_decoder.choose(logits.contiguous().numpy(), ids.contiguous().numpy(), budget, eos, chosen.numpy(),
                                conf.numpy())
        if n < 0:
            return reference_choose_step(logits, ids, budget, eos)
        return chosen[:, :n], conf[:, :n], n < K
