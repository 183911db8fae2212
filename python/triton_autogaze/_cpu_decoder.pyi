"""AutoGaze fused fp32 CPU decoder forward over a static KV cache (AVX2 + FMA), used by cpu_fast.py.

Arrays are numpy views of contiguous CPU torch tensors (never copied); every function raises ValueError naming
the bad argument. Weights are panel-packed: [N/16, K, 16] = W^T [K, N] cut into 16-column panels.
"""

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

def supported() -> bool:
    """True when this CPU has AVX2 and FMA (the kernels need both)."""

def linear(x: F32, w_packed: F32, out: F32, num_threads: int = 1) -> None:
    """out [M, N] = x [M, K] @ W^T, W panel-packed [N/16, K, 16] float32."""

def choose(logits: F32, ids: npt.NDArray[np.int64], budget: int, eos: int, out_ids: npt.NDArray[np.int64],
           out_conf: F32) -> int:
    """The greedy 10-token choice of one step (finite logits); returns the number of heads that chose, or -1."""

class Decoder:
    def __init__(self, hidden: int, heads: int, head_dim: int, intermediate: int, eps: float,
                 layers: list[dict[str, F32]], norm: F32, head_weights: F32) -> None:
        """layers: per layer ln1 [C], wqkv, wo, ln2 [C], wgu, wdown (packed); head_weights packed [n_out/16, C, 16]."""
    @property
    def n_out(self) -> int: ...
    def forward(self, x: F32, cos: F32, sin: F32, kp: F32, v: F32, keymask: npt.NDArray[np.uint8], L0: int,
                out: F32, num_threads: int = 1) -> None:
        """x [B, n, C], cos/sin [B, n, D]; kp [L, B, H, cap/16, D, 16], v [L, B, H, cap, D], keymask [B, cap]:
        appends n tokens at L0 and writes the final-normed hidden state of each row's last token to out [B, C]."""
    def heads(self, h: F32, out: F32, num_threads: int = 1) -> None:
        """out [M, n_out] = h [M, C] @ head_weights^T."""
