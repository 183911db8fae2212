"""Typed AutoGaze configuration, parsed from a checkpoint's ``config.json`` and ``preprocessor_config.json``.

Only the fields that change inference are kept; the dozens of generic Hugging Face defaults are ignored.
Derived values (tokens per scale, grid sides, id offsets) are computed once here, with the checks of SPEC §1.2.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config file is missing a field, or holds a value this implementation cannot run."""


def read_json(path: str | Path, what: str) -> dict:
    """A JSON object from a file; FileNotFoundError / ConfigError that name the file."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return d


def _get(d: Mapping[str, Any], path: str, default: Any = ...) -> Any:
    cur: Any = d
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            if default is ...:
                raise ConfigError(f"config.json: missing field '{path}'")
            return default
        cur = cur[part]
    return cur


@dataclass(frozen=True)
class VisionConfig:
    hidden_dim: int = 192  # channels of the patch embedding and temporal block
    out_dim: int = 192  # channels after out_proj (must equal the decoder width)
    depth: int = 1  # number of causal temporal blocks
    kernel_size: int = 16  # patch size in pixels
    temporal_patch_size: int = 1  # frames per patch; only 1 is supported
    trunk_temporal_kernel_size: int = 3  # temporal taps of the causal 3-D conv
    trunk_spatial_kernel_size: int = 3  # spatial taps of the causal 3-D conv


@dataclass(frozen=True)
class RopeConfig:
    theta: float = 500000.0
    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 266  # NV + 1 (the EOS/pad id)
    eos_token_id: int = 265
    hidden_size: int = 192
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 6
    head_dim: int = 32
    rms_norm_eps: float = 1e-5
    rope: RopeConfig = field(default_factory=RopeConfig)
    num_multi_token_pred: int = 10  # K: tokens chosen per decoder step


@dataclass(frozen=True)
class AutoGazeConfig:
    """Everything the model and generation need. Build with :meth:`from_dict` or :meth:`from_file`."""

    scales: tuple[int, ...] = (32, 64, 112, 224)  # sorted ascending
    num_vision_tokens_each_frame: int = 265  # NV
    max_num_frames: int = 16  # informational: clip length the model was trained on
    input_img_size: int = 224
    num_tokens: int = 196  # vision tokens per frame (connector)
    vision: VisionConfig = field(default_factory=VisionConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    default_gazing_ratio: float = 0.75
    has_task_loss_requirement_during_inference: bool = True
    default_task_loss_requirement: float = 0.7
    use_flash_attn: bool = False

    def __post_init__(self) -> None:
        nv = self.num_vision_tokens_each_frame
        counts = self.tokens_per_scale
        if sum(counts) != nv:
            raise ConfigError(f"config.json: tokens per scale {counts} sum to {sum(counts)}, expected {nv}")
        for s, n in zip(self.scales, counts):
            if math.isqrt(n) ** 2 != n:
                raise ConfigError(f"config.json: scale {s} gives {n} tokens, not a perfect square")
        d = self.decoder
        if d.vocab_size != nv + 1:
            raise ConfigError(f"config.json: vocab_size {d.vocab_size} must equal num_vision_tokens_each_frame + 1 = {nv + 1}")
        if d.eos_token_id != nv:
            raise ConfigError(f"config.json: eos_token_id {d.eos_token_id} must equal {nv}")
        if self.vision.temporal_patch_size != 1:
            raise ConfigError("config.json: only temporal_patch_size 1 is supported")
        if self.vision.out_dim != d.hidden_size:
            raise ConfigError(f"config.json: vision out_dim {self.vision.out_dim} != decoder hidden_size {d.hidden_size}")
        if d.num_attention_heads * d.head_dim != d.hidden_size:
            raise ConfigError("config.json: num_attention_heads * head_dim must equal hidden_size")
        if d.num_key_value_heads != d.num_attention_heads:
            raise ConfigError("config.json: grouped KV heads are not supported")
        grid = self.input_img_size // self.vision.kernel_size
        if grid * grid != self.num_tokens:
            raise ConfigError(f"config.json: connector num_tokens {self.num_tokens} != ({self.input_img_size}/{self.vision.kernel_size})^2")
        if self.scales[-1] != self.input_img_size:
            raise ConfigError(f"config.json: largest scale {self.scales[-1]} != input_img_size {self.input_img_size}")
        if self.vision.trunk_temporal_kernel_size < 1 or self.vision.depth != 1:
            raise ConfigError("config.json: only one causal temporal block (depth 1) is supported")

    # ----- derived values -------------------------------------------------------------------------------
    @property
    def tokens_per_scale(self) -> tuple[int, ...]:
        total = float(sum(s * s for s in self.scales))
        return tuple(int(s * s / total * self.num_vision_tokens_each_frame) for s in self.scales)

    @property
    def grid_sizes(self) -> tuple[int, ...]:
        return tuple(math.isqrt(n) for n in self.tokens_per_scale)

    @property
    def scale_offsets(self) -> tuple[int, ...]:
        out, acc = [], 0
        for n in self.tokens_per_scale:
            out.append(acc)
            acc += n
        return tuple(out)

    @property
    def eos_id(self) -> int:
        return self.decoder.eos_token_id

    @property
    def vision_grid(self) -> int:
        return self.input_img_size // self.vision.kernel_size

    # ----- parsing --------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AutoGazeConfig":
        try:
            scales_raw = _get(d, "scales")
            if isinstance(scales_raw, str):
                scales = tuple(sorted(int(s) for s in scales_raw.split("+")))
            else:
                scales = tuple(sorted(int(s) for s in scales_raw))
            gm = _get(d, "gaze_model_config")
            vc = _get(gm, "vision_model_config")
            dc = _get(gm, "gaze_decoder_config")
            rs = dc.get("rope_scaling") or {}
            rope_type = rs.get("rope_type", rs.get("type", "default"))
            rope = RopeConfig(
                theta=float(_get(dc, "rope_theta")),
                rope_type=str(rope_type),
                factor=float(rs.get("factor", 1.0)),
                low_freq_factor=float(rs.get("low_freq_factor", 1.0)),
                high_freq_factor=float(rs.get("high_freq_factor", 4.0)),
                original_max_position_embeddings=int(rs.get("original_max_position_embeddings", 8192)),
            )
            if rope.rope_type not in ("llama3", "default"):
                raise ConfigError(f"config.json: rope_scaling.rope_type '{rope.rope_type}' is not supported")
            if dc.get("hidden_act", "silu") != "silu":
                raise ConfigError(f"config.json: hidden_act '{dc.get('hidden_act')}' is not supported")
            if dc.get("attention_bias", False) or dc.get("mlp_bias", False):
                raise ConfigError("config.json: attention_bias / mlp_bias are not supported")
            hidden = int(_get(dc, "hidden_size"))
            heads = int(_get(dc, "num_attention_heads"))
            decoder = DecoderConfig(
                vocab_size=int(_get(dc, "vocab_size")),
                eos_token_id=int(_get(dc, "eos_token_id")),
                hidden_size=hidden,
                intermediate_size=int(_get(dc, "intermediate_size")),
                num_hidden_layers=int(_get(dc, "num_hidden_layers")),
                num_attention_heads=heads,
                num_key_value_heads=int(dc.get("num_key_value_heads", heads)),
                head_dim=int(dc.get("head_dim") or hidden // heads),
                rms_norm_eps=float(_get(dc, "rms_norm_eps")),
                rope=rope,
                num_multi_token_pred=int(_get(dc, "num_multi_token_pred")),
            )
            vision = VisionConfig(
                hidden_dim=int(_get(vc, "hidden_dim")),
                out_dim=int(_get(vc, "out_dim")),
                depth=int(_get(vc, "depth")),
                kernel_size=int(_get(vc, "kernel_size")),
                temporal_patch_size=int(_get(vc, "temporal_patch_size")),
                trunk_temporal_kernel_size=int(_get(vc, "trunk_temporal_kernel_size")),
                trunk_spatial_kernel_size=int(_get(vc, "trunk_spatial_kernel_size")),
            )
            ratio_cfg = d.get("gazing_ratio_config") or {}
            tl_cfg = d.get("task_loss_requirement_config") or {}
            return cls(
                scales=scales,
                num_vision_tokens_each_frame=int(_get(d, "num_vision_tokens_each_frame")),
                max_num_frames=int(d.get("max_num_frames", 16)),
                input_img_size=int(_get(gm, "input_img_size")),
                num_tokens=int(_get(gm, "connector_config.num_tokens")),
                vision=vision,
                decoder=decoder,
                default_gazing_ratio=float(_get(ratio_cfg, "fixed.gazing_ratio", 0.75)),
                has_task_loss_requirement_during_inference=bool(
                    d.get("has_task_loss_requirement_during_inference", False)
                ),
                default_task_loss_requirement=float(_get(tl_cfg, "fixed.task_loss_requirement", 0.7)),
                use_flash_attn=bool(d.get("use_flash_attn", False)),
            )
        except (TypeError, ValueError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"config.json: malformed value ({e})") from e

    @classmethod
    def from_file(cls, path: str | Path) -> "AutoGazeConfig":
        return cls.from_dict(read_json(path, "config file"))


@dataclass(frozen=True)
class PreprocessorConfig:
    """``preprocessor_config.json``. Defaults here are the NVIDIA values; the file always wins."""

    do_resize: bool = True
    shortest_edge: int = 224
    resample: int = 2  # Pillow BILINEAR; the only filter implemented
    do_rescale: bool = True
    rescale_factor: float = 1 / 127.5
    offset: bool = True
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessorConfig":
        size = d.get("size") or {}
        if "shortest_edge" not in size and d.get("do_resize", True):
            raise ConfigError("preprocessor_config.json: size.shortest_edge is required")
        resample = int(d.get("resample", 2))
        if resample != 2:
            raise ConfigError(f"preprocessor_config.json: resample {resample} is not supported (only 2, bilinear)")
        if d.get("do_center_crop", False):
            raise ConfigError("preprocessor_config.json: do_center_crop is not supported")
        mean = tuple(float(x) for x in d.get("image_mean", cls.image_mean))
        std = tuple(float(x) for x in d.get("image_std", cls.image_std))
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError("preprocessor_config.json: image_mean and image_std need 3 values")
        if any(s == 0 for s in std):
            raise ConfigError("preprocessor_config.json: image_std has a zero")
        return cls(
            do_resize=bool(d.get("do_resize", True)),
            shortest_edge=int(size.get("shortest_edge", 224)),
            resample=resample,
            do_rescale=bool(d.get("do_rescale", True)),
            rescale_factor=float(d.get("rescale_factor", 1 / 127.5)),
            offset=bool(d.get("offset", True)),
            do_normalize=bool(d.get("do_normalize", True)),
            image_mean=mean,  # type: ignore[arg-type]
            image_std=std,  # type: ignore[arg-type]
        )

    @classmethod
    def from_file(cls, path: str | Path) -> "PreprocessorConfig":
        return cls.from_dict(read_json(path, "preprocessor config"))
