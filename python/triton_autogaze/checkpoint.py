"""Strict checkpoint loading: a local folder or a hub id -> (AutoGazeConfig, {name: fp32 tensor}).

Names are the NVIDIA names with the ``gazing_model.`` prefix removed. Every tensor is checked against the
shape the config implies; a missing, unexpected, misshapen, non-float or non-finite tensor is an error that
names it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .config import AutoGazeConfig, ConfigError

PREFIX = "gazing_model."
HUB_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


class CheckpointError(ValueError):
    """The checkpoint's weights are missing, corrupt, or do not match its config."""


def expected_shapes(cfg: AutoGazeConfig) -> dict[str, tuple[int, ...]]:
    """Name (without prefix) -> shape, for every tensor an AutoGaze checkpoint must hold."""
    v, d = cfg.vision, cfg.decoder
    C, I, V, K = d.hidden_size, d.intermediate_size, d.vocab_size, d.num_multi_token_pred
    tk, sk = v.trunk_temporal_kernel_size, v.trunk_spatial_kernel_size
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.temporal_conv.weight": (v.hidden_dim, 3, v.temporal_patch_size, v.kernel_size, v.kernel_size),
        "vision_model.temporal_conv.bias": (v.hidden_dim,),
        "vision_model.norm.weight": (v.hidden_dim,),
        "vision_model.norm.bias": (v.hidden_dim,),
        "vision_model.blocks.0.conv3d.weight": (v.hidden_dim, v.hidden_dim, tk, sk, sk),
        "vision_model.blocks.0.conv3d.bias": (v.hidden_dim,),
        "vision_model.out_proj.weight": (v.out_dim, v.hidden_dim, 1, 1, 1),
        "vision_model.out_proj.bias": (v.out_dim,),
        "connector.pos_embed": (cfg.num_tokens, C),
        "gaze_decoder.model.embed_tokens.weight": (V, C),
        "gaze_decoder.model.norm.weight": (C,),
        "gaze_decoder.lm_head.weight": (K * V, C),
        "gaze_decoder.task_loss_prediction_head.weight": (K, C),
    }
    for layer in range(d.num_hidden_layers):
        p = f"gaze_decoder.model.layers.{layer}."
        shapes[p + "input_layernorm.weight"] = (C,)
        shapes[p + "post_attention_layernorm.weight"] = (C,)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (C, C)
        shapes[p + "mlp.gate_proj.weight"] = (I, C)
        shapes[p + "mlp.up_proj.weight"] = (I, C)
        shapes[p + "mlp.down_proj.weight"] = (C, I)
    return shapes


def validate_weights(cfg: AutoGazeConfig, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError naming the first problem tensor."""
    expected = expected_shapes(cfg)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing tensor(s): {', '.join(PREFIX + m for m in missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected tensor(s): {', '.join(PREFIX + u for u in unexpected)}")
    for name, shape in expected.items():
        t = weights[name]
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {PREFIX + name} has shape {tuple(t.shape)}, config implies {shape}"
            )
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: tensor {PREFIX + name} has dtype {t.dtype}, expected floating point")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{source}: tensor {PREFIX + name} holds non-finite values")


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read every tensor of a safetensors file, prefix stripped, as float32 CPU tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        raw = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file (truncated or corrupt?): {e}") from e
    out: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        key = name[len(PREFIX):] if name.startswith(PREFIX) else name
        out[key] = t if not t.is_floating_point() else t.float()
    return out


def resolve_checkpoint_dir(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> Path:
    """A local folder is used as is; anything else that looks like ``owner/name`` is fetched from the hub."""
    p = Path(path_or_hub_id)
    if p.is_dir():
        return p
    s = str(path_or_hub_id)
    if p.exists():
        raise CheckpointError(f"{s}: expected a checkpoint folder, got a file")
    looks_like_hub = s.count("/") == 1 and not s.startswith((".", "/", "~")) and not s.endswith("/")
    if not looks_like_hub:
        raise FileNotFoundError(f"checkpoint folder not found: {s}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ImportError(
            f"'{s}' is not a local folder and looks like a hub id, but huggingface_hub is not installed: "
            "pip install 'triton_autogaze[hub]'"
        ) from None
    return Path(snapshot_download(repo_id=s, revision=revision, allow_patterns=list(HUB_FILES)))


def load_checkpoint(path_or_hub_id: str | os.PathLike, revision: str | None = None) -> tuple[AutoGazeConfig, dict[str, torch.Tensor], Path]:
    """Load and validate ``config.json`` + ``model.safetensors``. Returns (config, weights, folder)."""
    folder = resolve_checkpoint_dir(path_or_hub_id, revision)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{folder}: config.json not found")
    cfg = AutoGazeConfig.from_file(cfg_path)
    weights = load_safetensors(folder / "model.safetensors")
    try:
        validate_weights(cfg, weights, source=str(folder / "model.safetensors"))
    except ConfigError as e:  # pragma: no cover - config errors are raised while parsing
        raise CheckpointError(str(e)) from e
    return cfg, weights, folder
