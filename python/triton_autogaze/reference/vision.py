"""Vision encoder and connector (SPEC §2.2-§4): normalised frames -> per-frame decoder input embeddings.

video [B, T, 3, H, W] fp32 -> model-side bicubic squash to 224 -> 16x16 patch embed -> LayerNorm -> causal
3x3x3 temporal conv + ReLU (with a 2-frame conv cache) -> 1x1 out_proj -> + pos_embed = [B, T, 196, C].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import AutoGazeConfig


def resize_to_model(video: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic squash (PyTorch ``interpolate``, align_corners=False, no antialias) to size x size.

    video: [B, T, 3, H, W] fp32. A frame already size x size passes through unchanged (an exact identity).
    """
    B, T, C, H, W = video.shape
    if H == size and W == size:
        return video
    flat = video.reshape(B * T, C, H, W)
    out = F.interpolate(flat, size=(size, size), mode="bicubic", align_corners=False)
    return out.reshape(B, T, C, size, size)


def encode_video(
    w: dict[str, torch.Tensor],
    cfg: AutoGazeConfig,
    video: torch.Tensor,
    conv_cache: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode every frame at once.

    video: [B, T, 3, H, W] fp32 (already normalised). conv_cache: [B, Cv, tk-1, g, g] post-LayerNorm features
    of the previous frames (oldest first), or None for a fresh clip (zeros).
    Returns (vision_embeds [B, T, N, C], new conv cache [B, Cv, tk-1, g, g]).
    """
    video = resize_to_model(video, cfg.input_img_size)
    B, T = video.shape[:2]
    x = video.permute(0, 2, 1, 3, 4)  # [B, 3, T, 224, 224]
    k = cfg.vision.kernel_size
    x = F.conv3d(x, w["vision_model.temporal_conv.weight"], w["vision_model.temporal_conv.bias"], stride=(1, k, k))
    # [B, Cv, T, g, g]; LayerNorm over channels
    x = x.permute(0, 2, 3, 4, 1)
    x = F.layer_norm(x, (x.shape[-1],), w["vision_model.norm.weight"], w["vision_model.norm.bias"], eps=1e-5)
    z = x.permute(0, 4, 1, 2, 3)  # [B, Cv, T, g, g]
    tk = cfg.vision.trunk_temporal_kernel_size
    if conv_cache is None:
        conv_cache = z.new_zeros(B, z.shape[1], tk - 1, z.shape[3], z.shape[4])
    ext = torch.cat([conv_cache.to(z.dtype), z], dim=2)  # [B, Cv, T + tk - 1, g, g]
    pad = cfg.vision.trunk_spatial_kernel_size // 2
    y = F.conv3d(ext, w["vision_model.blocks.0.conv3d.weight"], w["vision_model.blocks.0.conv3d.bias"], padding=(0, pad, pad))
    y = F.relu(y)
    y = F.conv3d(y, w["vision_model.out_proj.weight"], w["vision_model.out_proj.bias"])  # [B, C, T, g, g]
    new_cache = ext[:, :, ext.shape[2] - (tk - 1):].contiguous()
    embeds = y.flatten(3).permute(0, 2, 3, 1)  # [B, T, N, C], token index = 14 i + j
    embeds = embeds + w["connector.pos_embed"]
    return embeds.contiguous(), new_cache
