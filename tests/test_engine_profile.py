"""bench/engine_profile.py's phase split (``--phases``) counts every launch under the right phase (CPU, torch ops,
a wall-clock stand-in for CUDA events)."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import torch

from triton_autogaze.checkpoint import load_checkpoint
from triton_autogaze.engine import TritonGenerator

PROFILE = Path(__file__).resolve().parents[1] / "bench" / "engine_profile.py"
MODEL = Path(__file__).resolve().parent / "fixtures" / "model"


class _Event:
    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


def test_phase_split_counts_every_launch():
    spec = importlib.util.spec_from_file_location("engine_profile", PROFILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg, w, _ = load_checkpoint(MODEL)
    g = TritonGenerator(w, cfg, use_cuda_graph=False, device="cpu", backend="torch")
    v = torch.randn(1, 2, cfg.num_tokens, cfg.decoder.hidden_size, generator=torch.Generator().manual_seed(0))
    agg = mod.phase_times(g, v, [30, 30], "upstream", event=_Event)
    calls = {k: n for k, (n, _) in agg.items()}
    layers = cfg.decoder.num_hidden_layers
    steps = -(-30 // cfg.decoder.num_multi_token_pred)  # selection steps a frame; a decode feed between two
    for op in ("rmsnorm_qkv_rope", "attention", "mlp_gate_up", "mlp_down"):
        assert calls[("prefill", op)] == 2 * layers
        assert calls[("decode", op)] == 2 * (steps - 1) * layers
    assert calls[("select", "heads_select")] == 2 * steps
    assert calls[("frame", "frame_setup")] == calls[("frame", "frame_finish")] == 2
    assert all(us >= 0 for _, us in agg.values())
    assert g.ops.attention.__name__ == "attention_ref"  # the wrappers are gone after the call
