"""Pipeline speed: packed RGBA 1080p 16-frame clip -> trace end to end vs the model alone (and its upload alone),
trace_video frames per second on the shared example video (CPU and GPU), and streaming latency per frame. GPU
groups skip without CUDA.

Run: python -m pytest bench/bench_pipeline.py --benchmark-only -p no:cacheprovider
Media: $AUTOGAZE_SHARED_MEDIA (default <repo>/../shared/media)/example_input.mp4.
GPU model: $AUTOGAZE_BENCH_BACKEND ("auto" or "torch") and $AUTOGAZE_BENCH_DTYPE ("float32" or "bfloat16").
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from _stats import stat
from fixture_data import LOCAL
from triton_autogaze.pipeline import AutoGazePipeline

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("AUTOGAZE_SHARED_MEDIA", REPO.parent / "shared" / "media"))
VIDEO = MEDIA / "example_input.mp4"
GAZE = dict(gazing_ratio=0.75, task_loss_requirement=0.7)
BACKEND = os.environ.get("AUTOGAZE_BENCH_BACKEND", "auto")  # the GPU model backend ("torch": the reference)
# the GPU model's dtype: "float32" (default) or "bfloat16"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
_DTYPE_NAME = os.environ.get("AUTOGAZE_BENCH_DTYPE", "float32")
if _DTYPE_NAME not in _DTYPES:
    raise ValueError(f"AUTOGAZE_BENCH_DTYPE: expected one of {sorted(_DTYPES)}, got {_DTYPE_NAME!r}")
GPU_DTYPE = _DTYPES[_DTYPE_NAME]
# untimed rounds before a GPU benchmark: the engine and the encoder capture a call shape's CUDA graphs on its second
# call, so the first two rounds are the compile and the capture
WARM_GPU = 2
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
try:
    import av  # noqa: F401
    _AV = True
except ImportError:
    _AV = False
needs_video = pytest.mark.skipif(not (VIDEO.is_file() and _AV), reason=f"needs PyAV and {VIDEO}")


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _record_device(benchmark, device):
    benchmark.extra_info["device"] = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    if device == "cuda":
        benchmark.extra_info["dtype"] = str(GPU_DTYPE)


@pytest.fixture(scope="module")
def clip_1080p():
    from triton_autogaze.demo import synthesize_clip

    rgb = synthesize_clip(16, 1080, 1920, seed=0)
    alpha = np.full(rgb.shape[:-1] + (1,), 255, np.uint8)
    return np.ascontiguousarray(np.concatenate([rgb, alpha], axis=-1))  # [16, 1080, 1920, 4]


@pytest.fixture(scope="module")
def gpu_pipe():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    return AutoGazePipeline.from_pretrained(LOCAL / "model", device="cuda", backend=BACKEND, dtype=GPU_DTYPE)


@pytest.fixture(scope="module")
def cpu_pipe():
    torch.set_num_threads(min(os.cpu_count() or 1, 8))
    return AutoGazePipeline.from_pretrained(LOCAL / "model", device="cpu", backend="torch")


@needs_cuda
@pytest.mark.benchmark(group="gpu-rgba-1080p-16f")
@pytest.mark.parametrize("mode,overlap", [("resize-224", None), ("resize-224", 2), ("resize-224", 4),
                                          ("resize-224", 8), ("anyres-tile-224", None)])
def test_gpu_rgba_clip_end_to_end(benchmark, gpu_pipe, clip_1080p, mode, overlap):
    """Host uint8 RGBA -> upload -> Triton resize/affine -> tiles -> gaze -> stitched trace. resize-224 feeds the
    model ``overlap`` frames at a time (one call, run_packed_chunks) while the rest of the clip uploads (None:
    the model starts after the whole upload)."""
    _record_device(benchmark, "cuda")
    default, gpu_pipe.overlap_frames = gpu_pipe.overlap_frames, overlap

    def run():
        trace = gpu_pipe.trace_rgba_clip(clip_1080p, mode=mode, **GAZE)
        _sync()
        return trace

    trace = benchmark.pedantic(run, rounds=8, iterations=1, warmup_rounds=WARM_GPU)
    gpu_pipe.overlap_frames = default
    benchmark.extra_info["tiles"] = trace.tiling.num_tiles
    benchmark.extra_info["valid_tokens"] = int((~trace.if_padded_gazing).sum())


@needs_cuda
@pytest.mark.benchmark(group="gpu-upload-1080p")
@pytest.mark.parametrize("path", ["pageable", "staged"])
@pytest.mark.parametrize("size", ["clip", "frame"])
def test_gpu_upload(benchmark, clip_1080p, path, size):
    """Host -> GPU: the 133 MB RGBA clip (16 frames) or one 6.2 MB RGB frame (what a stream pushes), by torch's
    pageable copy vs the pipeline's pinned stage (upload.py; the pipeline stages tensors of MIN_STAGED_BYTES or
    more)."""
    from triton_autogaze.upload import HostUploader

    _record_device(benchmark, "cuda")
    src = torch.from_numpy(clip_1080p)
    if size == "frame":
        src = src[:1, ..., :3].contiguous()
    up = HostUploader("cuda")

    def run():
        out = src.to("cuda") if path == "pageable" else up(src)
        _sync()
        return out

    out = benchmark.pedantic(run, rounds=30 if size == "frame" else 10, iterations=1, warmup_rounds=2)
    assert torch.equal(out[-1, -1].cpu(), src[-1, -1])
    if (t := stat(benchmark, "median")) is not None:  # None under --benchmark-disable
        benchmark.extra_info["GB_per_s"] = src.numel() / t / 1e9
    up.close()


@needs_cuda
@pytest.mark.benchmark(group="gpu-rgba-1080p-16f")
@pytest.mark.parametrize("mode", ["resize-224", "anyres-tile-224"])
def test_gpu_model_only(benchmark, gpu_pipe, clip_1080p, mode):
    """The model alone on the same clip's inputs, already on the GPU (what the pipeline adds is the difference)."""
    _record_device(benchmark, "cuda")
    frames = torch.from_numpy(clip_1080p).cuda()
    grid = gpu_pipe.plan(1080, 1920, mode)
    tiles = gpu_pipe.packed_tiles(frames, grid)(range(grid.num_tiles))  # [n, 16, 3, h, w]

    step = gpu_pipe.auto_tile_batch(tiles.shape[0])  # the pipeline's default tile_batch_size (all 45 on an H100)

    def run():
        for start in range(0, tiles.shape[0], step):
            gpu_pipe.model.generate(tiles[start:start + step], batch_semantics="independent", **GAZE)
        _sync()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=WARM_GPU)


def _trace_video(pipe, max_frames, clips_per_call=1):
    frames = 0
    for trace in pipe.trace_video(VIDEO, progress=False, max_frames=max_frames, clips_per_call=clips_per_call,
                                  **GAZE):
        frames += trace.num_frames
    _sync()
    return frames


@needs_video
@pytest.mark.benchmark(group="trace-video-example")
def test_cpu_trace_video_fps(benchmark, cpu_pipe):
    _record_device(benchmark, "cpu")
    frames = benchmark.pedantic(_trace_video, args=(cpu_pipe, 16), rounds=1, iterations=1)
    benchmark.extra_info["frames"] = frames
    if (t := stat(benchmark, "mean")) is not None:  # None under --benchmark-disable
        benchmark.extra_info["fps"] = frames / t


@needs_cuda
@needs_video
@pytest.mark.benchmark(group="trace-video-example")
@pytest.mark.parametrize("clips_per_call", [1, 4])
def test_gpu_trace_video_fps(benchmark, gpu_pipe, clips_per_call):
    """The example video's 4 clips of 16 frames one per model call, or all 4 in one (rows)."""
    _record_device(benchmark, "cuda")
    frames = benchmark.pedantic(_trace_video, args=(gpu_pipe, None, clips_per_call), rounds=3, iterations=1,
                                warmup_rounds=WARM_GPU)
    benchmark.extra_info["clips_per_call"] = clips_per_call
    benchmark.extra_info["frames"] = frames
    if (t := stat(benchmark, "mean")) is not None:  # None under --benchmark-disable
        benchmark.extra_info["fps"] = frames / t


@pytest.mark.benchmark(group="stream-latency")
@pytest.mark.parametrize("device,stage", [("cpu", "default"), pytest.param("cuda", "default", marks=needs_cuda),
                                          pytest.param("cuda", "pageable", marks=needs_cuda)])
def test_stream_latency_per_frame(benchmark, request, device, stage, monkeypatch):
    """Seconds per push() of a 1080p RGB frame in resize-224 (the realtime mode), 16 frames per round.
    stage "default": the pipeline's threshold (a 6.2 MB frame takes the pinned stage); "pageable": frames take
    torch's pageable copy (MIN_STAGED_BYTES raised above a frame's size, as before session 11)."""
    pipe = request.getfixturevalue("gpu_pipe" if device == "cuda" else "cpu_pipe")
    _record_device(benchmark, device)
    if stage == "pageable":
        from triton_autogaze import upload

        monkeypatch.setattr(upload, "MIN_STAGED_BYTES", 16 << 20)
    from triton_autogaze.demo import synthesize_clip

    rgb = synthesize_clip(16, 1080, 1920, seed=1)

    def run():
        session = pipe.stream(**GAZE)
        for frame in rgb:
            session.push(frame)
        _sync()

    cuda = device == "cuda"
    benchmark.pedantic(run, rounds=3 if cuda else 1, iterations=1, warmup_rounds=WARM_GPU if cuda else 0)
    if (t := stat(benchmark, "mean")) is not None:  # None under --benchmark-disable
        benchmark.extra_info["seconds_per_frame"] = t / len(rgb)
