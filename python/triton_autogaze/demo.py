"""Demo assets: deterministic untrained AutoGaze weights with the NVIDIA architecture, and a synthetic clip.

seed -> (AutoGazeConfig, {name: fp32 tensor}) / a checkpoint folder; seed -> moving-shapes uint8 [T, H, W, 3].
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from .checkpoint import PREFIX, expected_shapes
from .config import AutoGazeConfig

# Untrained task-loss predictions are ~N(0, small), so a threshold like 0.7 would stop every frame after its
# first token. Two residual channels that no layer writes to fix that: OFFSET holds a constant in every
# decoder input, which the task-loss head reads back as a mean prediction above 0.7; STOP holds a random
# value per gaze id, which spreads the predictions of the step after that id was chosen. The element-wise
# stop (SPEC §7.2) then fires at pseudo-random steps and frames end at varied lengths, as with a trained model.
OFFSET_CHANNEL, STOP_CHANNEL = 0, 1
# Decoder weights are normal(0, 0.02) unless listed here. Sharper query/key weights make attention pick out
# particular patches instead of averaging the frame, so the chosen ids depend on the content, not only on the
# previous id; larger embeddings let each chosen id steer the next step.
DECODER_STD = {"embed_tokens": 0.1, "q_proj": 0.2, "k_proj": 0.2, "v_proj": 0.072}
GAZE_OFFSET = 7.4  # about the norm of the rest of a gaze token's residual, so the channel holds ~half
VISION_OFFSET = 8.9  # the same for vision tokens
STOP_SCALE = 3.2  # std of the STOP channel in gaze embeddings
OFFSET_NORMED = 9.8  # typical OFFSET value after the final RMSNorm: sqrt(192 / 2)
STOP_NORMED = 4.0  # typical |STOP| value after the final RMSNorm
TASK_LOSS_CENTER = 1.0  # mean task-loss prediction
TASK_LOSS_SPREAD = 0.25  # std of the prediction coming from the STOP channel
HEAD_DRIFT = 0.01  # later heads predict slightly lower loss
HEAD_NOISE = 0.003  # std of the task-loss head's other weights


def demo_config_dict() -> dict:
    """A ``config.json``-shaped dict with the NVIDIA AutoGaze architecture and inference defaults (SPEC §1.2)."""
    return {
        "architectures": ["AutoGaze"],
        "model_type": "autogaze",
        "torch_dtype": "float32",
        "attn_mode": "sdpa",
        "use_flash_attn": False,
        "scales": "32+64+112+224",
        "num_vision_tokens_each_frame": 265,
        "max_num_frames": 16,
        "gazing_ratio_config": {
            "sample_strategy_during_inference": "fixed",
            "fixed": {"gazing_ratio": 0.75},
        },
        "gazing_ratio_each_frame_config": {"sample_strategy_during_inference": "uniform"},
        "has_task_loss_requirement_during_inference": True,
        "task_loss_requirement_config": {
            "sample_strategy_during_inference": "fixed",
            "fixed": {"task_loss_requirement": 0.7},
        },
        "gaze_model_config": {
            "input_img_size": 224,
            "num_vision_tokens_each_frame": 265,
            "vision_model_config": {
                "hidden_dim": 192,
                "out_dim": 192,
                "depth": 1,
                "kernel_size": 16,
                "temporal_patch_size": 1,
                "trunk_temporal_kernel_size": 3,
                "trunk_spatial_kernel_size": 3,
            },
            "connector_config": {"hidden_dim": 192, "num_tokens": 196},
            "gaze_decoder_config": {
                "model_type": "llama",
                "vocab_size": 266,
                "eos_token_id": 265,
                "bos_token_id": 1,
                "hidden_size": 192,
                "intermediate_size": 384,
                "num_hidden_layers": 4,
                "num_attention_heads": 6,
                "num_key_value_heads": 6,
                "head_dim": 32,
                "hidden_act": "silu",
                "rms_norm_eps": 1e-05,
                "max_position_embeddings": 131072,
                "rope_theta": 500000.0,
                "rope_scaling": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8192,
                },
                "attention_bias": False,
                "mlp_bias": False,
                "num_multi_token_pred": 10,
                "tie_word_embeddings": False,
                "initializer_range": 0.02,
            },
        },
    }


def demo_preprocessor_dict() -> dict:
    """``preprocessor_config.json`` with the NVIDIA values (SPEC §1.3)."""
    return {
        "image_processor_type": "AutoGazeImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": 224},
        "resample": 2,
        "do_center_crop": False,
        "crop_size": {"height": 224, "width": 224},
        "do_rescale": True,
        "rescale_factor": 0.00784313725490196,
        "offset": True,
        "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }


def _normal(gen: torch.Generator, shape: tuple[int, ...], std: float) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float32) * std


def _decoder_std(name: str) -> float:
    for key, std in DECODER_STD.items():
        if key in name:
            return std
    return 0.02


def demo_checkpoint(seed: int = 0) -> tuple[AutoGazeConfig, dict[str, torch.Tensor]]:
    """Deterministic untrained weights: (config, {name without ``gazing_model.``: fp32 CPU tensor}).

    Shapes are exactly :func:`checkpoint.expected_shapes`. Vision convs use fan-in scaling, norms ones, biases
    zeros, decoder weights normal(0, 0.02) (Llama's init) except those in ``DECODER_STD``, plus the two reserved
    channels described above. Gaze ids are meaningless but depend on the frames' content, and
    with ``task_loss_requirement=0.7`` frames stop after a varied number of 10-token steps (seed 0, 16-frame
    synthetic clip: 20 to 90 tokens a frame).
    """
    cfg = AutoGazeConfig.from_dict(demo_config_dict())
    gen = torch.Generator().manual_seed(int(seed))
    weights: dict[str, torch.Tensor] = {}
    # Draw in sorted-name order so the weights depend only on the seed, not on dict ordering.
    for name, shape in sorted(expected_shapes(cfg).items()):
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            weights[name] = torch.ones(shape)
        elif name.endswith(".bias"):
            weights[name] = torch.zeros(shape)
        elif name.startswith("vision_model."):
            fan_in = math.prod(shape[1:])
            weights[name] = _normal(gen, shape, 1.0 / math.sqrt(fan_in))
        else:
            weights[name] = _normal(gen, shape, _decoder_std(name))

    C = cfg.decoder.hidden_size
    K = cfg.decoder.num_multi_token_pred
    kept = [OFFSET_CHANNEL, STOP_CHANNEL]
    weights["vision_model.out_proj.weight"][kept] = 0.0
    for layer in range(cfg.decoder.num_hidden_layers):
        p = f"gaze_decoder.model.layers.{layer}."
        weights[p + "self_attn.o_proj.weight"][kept] = 0.0
        weights[p + "mlp.down_proj.weight"][kept] = 0.0
    embed = weights["gaze_decoder.model.embed_tokens.weight"]
    embed[:, OFFSET_CHANNEL] = GAZE_OFFSET
    embed[:, STOP_CHANNEL] = _normal(gen, (embed.shape[0],), STOP_SCALE)
    pos_embed = weights["connector.pos_embed"]
    pos_embed[:, OFFSET_CHANNEL] = VISION_OFFSET
    pos_embed[:, STOP_CHANNEL] = 0.0
    # lm_head ignores both channels, so which ids win is decided by the frames and the ids already chosen.
    weights["gaze_decoder.lm_head.weight"][:, kept] = 0.0
    tl = _normal(gen, (K, C), HEAD_NOISE)
    tl[:, OFFSET_CHANNEL] = (TASK_LOSS_CENTER - HEAD_DRIFT * torch.arange(K, dtype=torch.float32)) / OFFSET_NORMED
    tl[:, STOP_CHANNEL] = TASK_LOSS_SPREAD / STOP_NORMED
    weights["gaze_decoder.task_loss_prediction_head.weight"] = tl
    return cfg, weights


def write_demo_checkpoint(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``preprocessor_config.json`` into ``folder``.

    The result loads with ``AutoGaze.from_pretrained(folder)`` to the same weights as ``demo_checkpoint(seed)``.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _, weights = demo_checkpoint(seed)
    (folder / "config.json").write_text(json.dumps(demo_config_dict(), indent=2) + "\n")
    (folder / "preprocessor_config.json").write_text(json.dumps(demo_preprocessor_dict(), indent=2) + "\n")
    tensors = {PREFIX + name: t.contiguous() for name, t in weights.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def synthesize_clip(num_frames: int = 16, height: int = 224, width: int = 224, seed: int = 0) -> np.ndarray:
    """A deterministic moving-shapes clip: uint8 [T, H, W, 3].

    Three rectangles and two discs of distinct colours glide (bouncing off the edges) over a slowly
    shifting diagonal colour gradient.
    """
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"num_frames, height, width must be >= 1, got ({num_frames}, {height}, {width})")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = xx / max(width - 1, 1), yy / max(height - 1, 1)
    n_shapes = 5
    size = rng.uniform(0.12, 0.25, n_shapes) * min(height, width)  # side (rect) or diameter (disc)
    start = rng.uniform(0.1, 0.9, (n_shapes, 2)) * (width, height)
    speed = rng.uniform(1.5, 4.0, (n_shapes, 2)) * rng.choice([-1, 1], (n_shapes, 2)) * min(height, width) / 224
    colour = rng.integers(40, 256, (n_shapes, 3)).astype(np.float32)
    is_disc = np.arange(n_shapes) >= 3

    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        phase = 2 * np.pi * t / max(num_frames, 8)
        img = np.stack([
            80 + 100 * u + 20 * np.sin(phase),
            60 + 80 * v,
            150 - 70 * (u + v) / 2 + 20 * np.cos(phase),
        ], axis=-1)
        for s in range(n_shapes):
            lo = np.array([size[s] / 2, size[s] / 2])
            hi = np.array([width, height]) - size[s] / 2
            cx, cy = _bounce(start[s] + speed[s] * t, lo, hi)
            r = size[s] / 2
            if is_disc[s]:
                inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            else:
                inside = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r * 0.7)
            img[inside] = colour[s]
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def _bounce(p: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Reflect positions into [lo, hi] (a triangle wave), so shapes bounce instead of leaving the frame."""
    span = np.maximum(hi - lo, 1e-6)
    q = np.mod(p - lo, 2 * span)
    return lo + np.where(q > span, 2 * span - q, q)
