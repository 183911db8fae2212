"""The fused vision encoder (kernels/patch_embed.py) replayed from CUDA graphs for calls of a few frames.

A streaming push encodes one frame: about six small launches and copies from Python (~0.3 ms of host time on
the H100, ``bench/call_overhead.py``) for microseconds of GPU work. A graph replay is one launch. Each call
shape (frames [B, T, 3, H, W] and dtype, with or without a conv cache) is captured on its second occurrence
(the first one compiles the kernels), as the engine captures its calls.
"""

from __future__ import annotations

import torch

from ..kernels.patch_embed import PatchEmbedWeights, patch_embed


class _Captured:
    def __init__(self, video: torch.Tensor, cache: torch.Tensor | None, weights: PatchEmbedWeights):
        self.video = video.clone()
        self.cache = None if cache is None else cache.clone()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.new_cache = patch_embed(self.video, weights, self.cache)


class GraphedEncoder:
    """``patch_embed(video, weights, conv_cache)`` with CUDA-graph replays for calls of at most ``max_frames``
    frames (B * T); larger calls (whole clips, tile batches) launch eagerly, where the launches are a small
    share and a static input copy would not be.

    Returns fresh tensors (vision embeds [B, T, N, C] fp32, conv cache [B, C, KT-1, G, G]): copies of the
    graph's outputs, so that caches held by several streams of one model stay apart.
    """

    def __init__(self, weights: PatchEmbedWeights, max_frames: int = 8):
        self.weights = weights
        self.max_frames = max_frames
        self._graphs: dict[tuple, _Captured] = {}
        self._seen: set[tuple] = set()

    def __call__(self, video: torch.Tensor, conv_cache: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        if not video.is_cuda or video.dim() != 5 or video.shape[0] * video.shape[1] > self.max_frames:
            return patch_embed(video, self.weights, conv_cache)
        key = (tuple(video.shape), video.dtype, video.device,
               None if conv_cache is None else (tuple(conv_cache.shape), conv_cache.dtype, conv_cache.device))
        g = self._graphs.get(key)
        if g is None and key not in self._seen:  # first time: eager (compiles; patch_embed checks every argument)
            out = patch_embed(video, self.weights, conv_cache)
            self._seen.add(key)
            return out
        # the key holds every shape, dtype and device that patch_embed checked on the eager call; the static
        # buffers are inference tensors whatever the caller's mode (copies into them stay legal)
        with torch.inference_mode(), torch.cuda.device(video.device):
            if g is None:
                g = self._graphs[key] = _Captured(video, conv_cache, self.weights)
            g.video.copy_(video)
            if conv_cache is not None:
                g.cache.copy_(conv_cache)
            g.graph.replay()
        return g.out.clone(), g.new_cache.clone()
