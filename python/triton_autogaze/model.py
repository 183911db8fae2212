"""AutoGaze: checkpoint loading, backend choice, the Pythonic ``generate`` and the upstream-compatible call.

frames [B, T, 3, H, W] (normalised) -> vision encoder -> gaze decoder generation -> GazeTrace / upstream dict.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .checkpoint import load_checkpoint, validate_weights
from .config import AutoGazeConfig
from .kernels._checks import interpreting
from .precision import exact_fp32
from .record import record_of, record_preparer
from .reference.decoder import Decoder
from .reference.generate import GenerationOutput, TorchGenerator, frame_budget, split_rows
from .reference.vision import encode_video, resize_to_model
from .trace import GazeTrace

SEMANTICS = ("upstream", "independent")


def check_video(video: Any, name: str = "video") -> torch.Tensor:
    """Validate a normalised clip: a floating tensor [B, T, 3, H, W] with finite values."""
    if not torch.is_tensor(video):
        raise TypeError(f"{name} must be a torch.Tensor [B, T, 3, H, W], got {type(video).__name__}")
    if video.dim() != 5:
        raise ValueError(f"{name} must have 5 dims [B, T, 3, H, W], got shape {tuple(video.shape)}")
    B, T, C, H, W = video.shape
    if C != 3:
        raise ValueError(f"{name} must have 3 channels at dim 2, got {C} (shape {tuple(video.shape)})")
    if B == 0 or T == 0:
        raise ValueError(f"{name} has zero {'batch rows' if B == 0 else 'frames'} (shape {tuple(video.shape)})")
    if H == 0 or W == 0:
        raise ValueError(f"{name} has zero-size frames (shape {tuple(video.shape)})")
    if not video.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of normalised pixels, got {video.dtype}")
    # one reduction pass, no [B, T, 3, H, W] bool temporary: min and max are finite iff every value is (a NaN
    # propagates into both, an inf into one of them). Dims in memory order, so that a channels-last clip (frames
    # decoded as HWC) is read as one contiguous stream.
    lo, hi = torch.aminmax(video.permute(sorted(range(5), key=lambda d: -video.stride(d))))
    if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return video


def ratios_per_frame(gazing_ratio: Any, T: int) -> list[float]:
    """A float, or one value per frame, each in (0, 1]."""
    if torch.is_tensor(gazing_ratio):
        gazing_ratio = gazing_ratio.flatten().tolist() if gazing_ratio.numel() != 1 else float(gazing_ratio)
    if isinstance(gazing_ratio, (int, float)) and not isinstance(gazing_ratio, bool):
        vals = [float(gazing_ratio)] * T
    elif isinstance(gazing_ratio, (list, tuple)):
        if len(gazing_ratio) != T:
            raise ValueError(f"gazing_ratio has {len(gazing_ratio)} values, expected one per frame ({T})")
        vals = [float(r) for r in gazing_ratio]
    else:
        raise TypeError(f"gazing_ratio must be a float or a per-frame list, got {type(gazing_ratio).__name__}")
    for r in vals:
        if not (0.0 < r <= 1.0):  # also rejects NaN
            raise ValueError(f"gazing_ratio must be in (0, 1], got {r}")
    return vals


def thresholds(task_loss_requirement: Any, B: int, T: int, device: torch.device) -> torch.Tensor:
    """A float, one value per frame [T], or anything broadcastable to [B, T] -> finite fp32 [B, T]."""
    if isinstance(task_loss_requirement, (int, float)) and not isinstance(task_loss_requirement, bool):
        with np.errstate(over="ignore"):  # as fp32, like the tensor path below: 1e40 is not finite there
            value = float(np.float32(task_loss_requirement))
        if not math.isfinite(value):
            raise ValueError("task_loss_requirement must be finite")
        # one value: filled on the device (no host tensor, pinning or copy: a streamed push builds one a frame)
        return torch.full((B, T), value, dtype=torch.float32, device=device)
    tau = torch.as_tensor(task_loss_requirement, dtype=torch.float32).cpu()
    if tau.dim() == 1 and tau.numel() == T:
        tau = tau[None]  # one value per frame
    try:
        tau = torch.broadcast_to(tau, (B, T))
    except RuntimeError:
        raise ValueError(
            f"task_loss_requirement of shape {tuple(tau.shape)} does not broadcast to [B, T] = [{B}, {T}]"
        ) from None
    if not torch.isfinite(tau).all():
        raise ValueError("task_loss_requirement must be finite")
    tau = tau.contiguous()
    if torch.device(device).type == "cuda":
        # through pinned memory: a pageable host-to-device copy waits for the copy engine's queue, i.e. for a
        # clip upload in flight (measured: the resize-224 pipeline's first frames waited ~7 ms for the whole upload)
        return tau.pin_memory().to(device, non_blocking=True)
    return tau.to(device)


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'triton', got {backend!r}")
    interpret = interpreting()
    has_triton = importlib.util.find_spec("triton") is not None
    if backend == "auto":
        return "triton" if device.type == "cuda" and has_triton else "torch"
    if backend == "triton":
        if device.type != "cuda" and not interpret:
            raise RuntimeError(
                f"backend='triton' needs a CUDA device (got device {device}); use backend='torch' or 'auto' "
                "(or set TRITON_INTERPRET=1 to run the kernels in Triton's CPU interpreter)"
            )
        if not has_triton:
            raise RuntimeError("backend='triton' needs the triton package")
    return backend


@dataclass
class Generated:
    """Internal result of one generation call (before formatting)."""

    out: GenerationOutput
    vision: torch.Tensor | None  # [B, T, N, C] (None from _generate_fed)
    state: Any
    conv_cache: torch.Tensor


class AutoGaze:
    """The AutoGaze gaze model.

    Build with :meth:`from_pretrained`. ``model(inputs, ...)`` is upstream's call (a dict out);
    :meth:`generate` is the typed API (a :class:`GazeTrace` out).
    """

    def __init__(self, config: AutoGazeConfig, weights: dict[str, torch.Tensor], device: str | torch.device = "cpu",
                 backend: str = "auto", dtype: torch.dtype = torch.float32, use_cuda_graph: bool = True,
                 reference: bool = False):
        validate_weights(config, weights)
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' requested but no CUDA device is available")
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype must be torch.float32 or torch.bfloat16, got {dtype}")
        self.backend = resolve_backend(backend, self.device)
        if dtype != torch.float32 and self.backend != "triton":
            raise ValueError("dtype=torch.bfloat16 needs the triton backend; the torch reference is fp32 only")
        self.dtype = dtype
        self.weights = {k: v.to(self.device, torch.float32).contiguous() for k, v in weights.items()}
        self.decoder = Decoder(self.weights, config)
        self._torch_gen = TorchGenerator(self.decoder, config)
        if self.backend == "torch" and not reference:
            from . import cpu_fast

            if cpu_fast.available(self.decoder):  # on the CPU: the fused C++ decoder (reference=True: the oracle)
                self._torch_gen = TorchGenerator(cpu_fast.FastDecoder(self.decoder), config)
        self._triton_gen = None
        self._patch_weights = None
        self._encoder = None
        self.use_cuda_graph = use_cuda_graph
        self.checkpoint_dir: Path | None = None

    # ----- construction ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, device: str | torch.device = "cpu",
                        backend: str = "auto", dtype: torch.dtype = torch.float32, revision: str | None = None,
                        use_cuda_graph: bool = True, reference: bool = False) -> "AutoGaze":
        """Load a local checkpoint folder (config.json + model.safetensors) or a hub id (needs the hub extra).

        ``"demo"`` builds deterministic untrained weights with the NVIDIA architecture. With backend "torch"
        on the CPU, generation runs the fused C++ decoder (``cpu_fast.py``); ``reference=True`` runs the
        pure-torch oracle (``reference/``) instead.
        """
        if str(path_or_hub_id) == "demo" and not Path("demo").exists():
            from .demo import demo_checkpoint

            cfg, weights = demo_checkpoint()
            model = cls(cfg, weights, device=device, backend=backend, dtype=dtype, use_cuda_graph=use_cuda_graph,
                        reference=reference)
            return model
        cfg, weights, folder = load_checkpoint(path_or_hub_id, revision=revision)
        model = cls(cfg, weights, device=device, backend=backend, dtype=dtype, use_cuda_graph=use_cuda_graph,
                        reference=reference)
        model.checkpoint_dir = folder
        return model

    # ----- stages ------------------------------------------------------------------------------------
    def encode(self, video: torch.Tensor, conv_cache: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """video [B, T, 3, H, W] normalised -> (vision embeds [B, T, N, C] fp32, conv cache [B, Cv, 2, g, g])."""
        video = video.to(self.device, torch.float32)
        with exact_fp32(self.dtype == torch.float32):
            return self._encode(video, conv_cache)

    def _encode(self, video: torch.Tensor, conv_cache: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.backend == "triton":
            from triton_autogaze.kernels.patch_embed import patch_embed, prepare_patch_embed_weights

            if self._patch_weights is None:
                self._patch_weights = prepare_patch_embed_weights(self.weights)
                if self.use_cuda_graph and self.device.type == "cuda":
                    from .engine.encoder import GraphedEncoder

                    self._encoder = GraphedEncoder(self._patch_weights)
            video = resize_to_model(video, self.config.input_img_size).contiguous()
            if self._encoder is not None:  # calls of a few frames (streaming) replay CUDA graphs
                return self._encoder(video, conv_cache)
            return patch_embed(video, self._patch_weights, conv_cache)
        return encode_video(self.weights, self.config, video, conv_cache)

    def _generator(self):
        if self.backend == "triton":
            if self._triton_gen is None:
                from .engine import TritonGenerator

                self._triton_gen = TritonGenerator(self.weights, self.config, dtype=self.dtype,
                                                   use_cuda_graph=self.use_cuda_graph)
            return self._triton_gen
        return self._torch_gen

    def _generate(self, video: torch.Tensor, budgets: list[int], tau: torch.Tensor | None, semantics: str,
                  state: Any = None, conv_cache: torch.Tensor | None = None,
                  prepare: Callable | None = None) -> Generated:
        """prepare: the Triton engine's hook on its full-width outputs before its sync (``TritonGenerator.run``;
        ignored by the torch generator)."""
        if semantics not in SEMANTICS:
            raise ValueError(f"batch_semantics must be one of {SEMANTICS}, got {semantics!r}")
        with torch.inference_mode(), exact_fp32(self.dtype == torch.float32):
            vision, new_conv = self.encode(video, conv_cache)
            extra = {} if prepare is None or self.backend != "triton" else {"prepare": prepare}
            out, state = self._generator().run(vision, budgets, tau, semantics, state, **extra)
        return Generated(out=out, vision=vision, state=state, conv_cache=new_conv)

    def _generate_fed(self, video_of: Callable[[int, int], torch.Tensor], rows: int, budgets: list[int],
                      tau: torch.Tensor | None, semantics: str, segment: int) -> Generated:
        """One clip's generation with its frames encoded and fed ``segment`` at a time: ``video_of(a, b)`` returns
        normalised frames [a, b) as [rows, b - a, 3, H, W] and is called just before the model needs them, so
        whatever it waits for (an upload in flight) overlaps the earlier frames' generation. The Triton engine
        does it in one call (:meth:`TritonGenerator.run_fed`); the torch generator gets the whole clip at once.
        Same gaze as :meth:`_generate` on the whole clip (``vision`` is not kept: None)."""
        if semantics not in SEMANTICS:
            raise ValueError(f"batch_semantics must be one of {SEMANTICS}, got {semantics!r}")
        conv = None

        def feed(a: int, b: int) -> torch.Tensor:
            nonlocal conv
            vision, conv = self.encode(video_of(a, b), conv)
            return vision

        T = len(budgets)
        with torch.inference_mode(), exact_fp32(self.dtype == torch.float32):
            gen = self._generator()
            if hasattr(gen, "run_fed"):
                out, state = gen.run_fed(feed, rows, budgets, tau, semantics, None, segment)
            else:
                vision = torch.cat([feed(a, min(T, a + segment)) for a in range(0, T, segment)], dim=1)
                out, state = gen.run(vision, budgets, tau, semantics)
        return Generated(out=out, vision=None, state=state, conv_cache=conv)

    def budgets(self, gazing_ratio: Any, T: int, max_gaze_tokens_each_frame: int | None = None) -> list[int]:
        nv = self.config.num_vision_tokens_each_frame
        out = [frame_budget(r, nv) for r in ratios_per_frame(gazing_ratio, T)]
        if max_gaze_tokens_each_frame is not None:
            if int(max_gaze_tokens_each_frame) < 1:
                raise ValueError(f"max_gaze_tokens_each_frame must be >= 1, got {max_gaze_tokens_each_frame}")
            out = [min(m, int(max_gaze_tokens_each_frame)) for m in out]
        return out

    # ----- Pythonic API ------------------------------------------------------------------------------
    def generate(self, video: torch.Tensor, gazing_ratio: float | Sequence[float] = 0.75,
                 task_loss_requirement: float | torch.Tensor | None = None,
                 batch_semantics: str = "independent",
                 max_gaze_tokens_each_frame: int | None = None) -> GazeTrace:
        """Greedy gaze for a batch of normalised clips.

        video: [B, T, 3, H, W] or [T, 3, H, W] float (as the image processor returns it).
        gazing_ratio: budget per frame as a share of the 265 tokens, a float or one per frame, in (0, 1].
        task_loss_requirement: stop a frame once the predicted task loss is <= this (None: no stopping).
        batch_semantics: "independent" (default; each clip as if run alone) or "upstream" (batch-coupled).
        """
        g, tau = self._generate_clips(video, gazing_ratio, task_loss_requirement, batch_semantics,
                                      max_gaze_tokens_each_frame, record_preparer(self.config))
        return self._trace(g.out, tau)

    def generate_each(self, video: torch.Tensor, gazing_ratio: float | Sequence[float] = 0.75,
                      task_loss_requirement: float | torch.Tensor | None = None,
                      max_gaze_tokens_each_frame: int | None = None) -> list[GazeTrace]:
        """:meth:`generate` of a batch of clips in independent semantics, one GazeTrace per clip laid out as if
        that clip were generated alone (each frame as wide as the clip's own length, not the batch's longest).
        One model call for all clips: on a GPU several rows a call cost far less than one call each.

        video: [B, T, 3, H, W] float; the other arguments as :meth:`generate`."""
        g, tau = self._generate_clips(video, gazing_ratio, task_loss_requirement, "independent",
                                      max_gaze_tokens_each_frame)
        B = g.vision.shape[0]
        return [self._trace(out, None if tau is None else tau[b:b + 1])
                for b, out in enumerate(split_rows(g.out, [(b, b + 1) for b in range(B)]))]

    def _generate_clips(self, video, gazing_ratio, task_loss_requirement, semantics: str,
                        max_gaze_tokens_each_frame: int | None, prepare: Callable | None = None):
        """The checks and one model call behind :meth:`generate` / :meth:`generate_each`: (Generated, tau)."""
        if torch.is_tensor(video) and video.dim() == 4:
            video = video[None]
        video = check_video(video)
        B, T = video.shape[:2]
        budgets = self.budgets(gazing_ratio, T, max_gaze_tokens_each_frame)
        tau = None if task_loss_requirement is None else thresholds(task_loss_requirement, B, T, self.device)
        return self._generate(video, budgets, tau, semantics, prepare=prepare), tau

    def _trace(self, out: GenerationOutput, tau: torch.Tensor | None) -> GazeTrace:
        cfg = self.config
        rec = record_of(cfg, out)
        return GazeTrace(
            gazing_pos=rec["gazing_pos"], if_padded_gazing=rec["if_padded_gazing"],
            num_gazing_each_frame=rec["num_gazing_each_frame"], gazing_mask=rec["gazing_mask"],
            confidence=rec["confidence"], grid_sizes=cfg.grid_sizes, scale_offsets=cfg.scale_offsets,
            num_vision_tokens=cfg.num_vision_tokens_each_frame, task_loss_requirement=tau,
        )

    # ----- upstream-compatible call ------------------------------------------------------------------
    def __call__(self, inputs: dict, gazing_ratio: Any = None, task_loss_requirement: Any = None,
                 target_scales: Sequence[int] | None = None, target_patch_size: int | None = None,
                 gazing_info: dict | None = None, temperature: float | None = None, generate_only: bool = False,
                 use_cache: bool = False, past_key_values: Any = None, past_inputs_embeds: list | None = None,
                 past_attention_mask: list | None = None, past_conv_values: list | None = None,
                 batch_semantics: str = "upstream") -> dict:
        """Upstream AutoGaze's ``model(inputs, ...)``: same arguments, same output keys (SPEC §7-§10)."""
        from .upstream import upstream_call

        return upstream_call(self, inputs, gazing_ratio=gazing_ratio, task_loss_requirement=task_loss_requirement,
                             target_scales=target_scales, target_patch_size=target_patch_size,
                             gazing_info=gazing_info, generate_only=generate_only, use_cache=use_cache,
                             past_key_values=past_key_values, past_inputs_embeds=past_inputs_embeds,
                             past_attention_mask=past_attention_mask, past_conv_values=past_conv_values,
                             batch_semantics=batch_semantics)
