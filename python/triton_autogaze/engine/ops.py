"""Kernel dispatch: the Triton launchers on CUDA (or under TRITON_INTERPRET=1), else their torch references.

Every op has the same signature in both forms and works in place on the engine's buffers, so the engine's
launch sequence is written once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from triton_autogaze.kernels import attention as _attn
from triton_autogaze.kernels._checks import interpreting
from triton_autogaze.kernels import frame_finish as _ff
from triton_autogaze.kernels import frame_setup as _fs
from triton_autogaze.kernels import heads_select as _hs
from triton_autogaze.kernels import mlp_down as _down
from triton_autogaze.kernels import mlp_gate_up as _up
from triton_autogaze.kernels import residual_norm as _rn
from triton_autogaze.kernels import rmsnorm_qkv_rope as _qkv


@dataclass(frozen=True)
class Ops:
    frame_setup: Callable
    rmsnorm_qkv_rope: Callable
    attention: Callable
    residual_norm: Callable
    mlp_gate_up: Callable
    mlp_down: Callable
    heads_select: Callable
    frame_finish: Callable
    triton: bool


TRITON_OPS = Ops(_fs.frame_setup, _qkv.rmsnorm_qkv_rope, _attn.attention, _rn.residual_norm, _up.mlp_gate_up,
                 _down.mlp_down, _hs.heads_select, _ff.frame_finish, True)
TORCH_OPS = Ops(_fs.frame_setup_ref, _qkv.rmsnorm_qkv_rope_ref, _attn.attention_ref, _rn.residual_norm_ref,
                _up.mlp_gate_up_ref, _down.mlp_down_ref, _hs.heads_select_ref, _ff.frame_finish_ref, False)


def ops_for(device: torch.device, backend: str = "auto") -> Ops:
    """backend "auto": Triton on CUDA or under the interpreter, torch otherwise; "triton" / "torch" force one."""
    if backend == "torch":
        return TORCH_OPS
    if backend == "triton":
        if device.type != "cuda" and not interpreting():
            raise ValueError("backend 'triton' on a CPU device needs TRITON_INTERPRET=1")
        return TRITON_OPS
    if backend != "auto":
        raise ValueError(f"backend: expected 'auto', 'triton' or 'torch', got {backend!r}")
    return TRITON_OPS if device.type == "cuda" or interpreting() else TORCH_OPS
