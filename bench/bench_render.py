"""Rendering speed (full-blend, interframe keyframe, interframe delta) at 720p and 1080p, the whole ``run`` on the
shared example video, and the issue's target: rendering adds <= 10% to the model time of a 1080p clip (GPU).

Run: python -m pytest bench/bench_render.py --benchmark-only -p no:cacheprovider
GPU groups skip without CUDA; CPU groups time the torch path on 2-frame clips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from triton_autogaze.render import RenderSettings, cell_geometry, render_clip, side_by_side_buffer
from triton_autogaze.tiling import plan_tiles

REPO = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("AUTOGAZE_SHARED_MEDIA", REPO.parent / "shared" / "media"))
EXAMPLE = MEDIA / "example_input.mp4"
SIZES = {"720p": (720, 1280), "1080p": (1080, 1920)}
CASES = ("full-blend", "interframe-keyframe", "interframe-delta")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _gpu_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _inputs(size: str, T: int, device: str, case: str, seed: int = 0):
    """A clip of smooth noise frames with anyres-tile-224 stitched grids (~30% of cells gazed per scale)."""
    H, W = SIZES[size]
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (T, H, W, 3), dtype=torch.uint8, generator=g).to(device)
    grid = plan_tiles(H, W, "anyres-tile-224")
    geometry = cell_geometry(SimpleNamespace(tiling=grid, grid_sizes=grid.grid_sizes), H, W)
    masks = [(torch.rand(T, r, c, generator=g) < 0.3).to(device) for r, c in zip(geometry.rows, geometry.cols)]
    vis = "full-blend" if case == "full-blend" else "interframe"
    key = torch.full((T,), case != "interframe-delta", dtype=torch.bool, device=device)
    prev = None if case != "interframe-delta" else torch.zeros(H, W, 3, dtype=torch.uint8, device=device)
    return frames, masks, geometry, RenderSettings(vis), key, prev


def _render(frames, masks, geometry, settings, key, prev, backend):
    T, H, W, _ = frames.shape
    sbs = side_by_side_buffer(T, H, W, frames.device)
    out = render_clip(frames, masks, geometry, settings, key, prev, sbs[:, :, W:2 * W], sbs[:, :, 2 * W:],
                      sbs[:, :, :W], backend=backend)
    if frames.is_cuda:
        torch.cuda.synchronize()
    return out


@needs_cuda
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("size", list(SIZES))
def test_render_gpu(benchmark, size, case):
    """Triton kernel, 16-frame clip into a side-by-side buffer (input copy, mask, output, metric sums)."""
    benchmark.group = f"render-gpu-{size}"
    args = _inputs(size, 16, "cuda", case)
    ref = _render(*args, backend="torch")  # the torch path on the same GPU tensors: exact parity at full size
    out = _render(*args, backend="triton")
    assert torch.equal(out.output, ref.output) and torch.equal(out.mask, ref.mask)
    assert torch.equal(out.sse, ref.sse) and torch.equal(out.covered, ref.covered)
    benchmark.extra_info.update(gpu=_gpu_name(), frames=16)
    benchmark.pedantic(_render, args=args, kwargs=dict(backend="triton"), rounds=20, iterations=1, warmup_rounds=2)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("size", list(SIZES))
def test_render_cpu(benchmark, size, case):
    """The torch path on CPU, 2-frame clip."""
    benchmark.group = f"render-cpu-{size}"
    torch.set_num_threads(2)
    args = _inputs(size, 2, "cpu", case)
    benchmark.extra_info.update(frames=2)
    benchmark.pedantic(_render, args=args, kwargs=dict(backend="torch"), rounds=3, iterations=1, warmup_rounds=1)


def _subprocess(args: list[str], timeout: int = 900) -> str:
    """Each run gets a fresh process, as on the command line (and a GPU fault cannot spill into later tests)."""
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.mark.skipif(not EXAMPLE.is_file(), reason=f"{EXAMPLE} not found (set AUTOGAZE_SHARED_MEDIA)")
@pytest.mark.parametrize("mode", ["resize-224", "anyres-tile-224", "tiled-full-resolution"])
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_run_example(benchmark, tmp_path, device, mode):
    """The whole ``triton-autogaze run`` (process start, model load, decode, gaze, render, encode, report) on the
    shared example video; extra_info holds the per-stage split from its metrics.json. CPU: resize-224 on 16
    frames only (the model dominates)."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if device == "cpu" and mode != "resize-224":
        pytest.skip("CPU: resize-224 only")
    pytest.importorskip("av")
    benchmark.group = f"run-example-{device}"
    argv = ["-m", "triton_autogaze", "run", str(EXAMPLE), "-o", str(tmp_path / "out"), "--mode", mode,
            "--device", device, "--no-progress", "--task-loss-requirement", "0.7"]
    if device == "cpu":
        argv += ["--max-frames", "16"]
    else:
        _subprocess(argv)  # warm-up: fills Triton's on-disk kernel cache
    benchmark.pedantic(_subprocess, args=(argv,), rounds=1, iterations=1)
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    benchmark.extra_info.update(gpu=_gpu_name(), frames=doc["num_frames"], **{
        k: round(v, 4) for k, v in doc["timing"].items() if isinstance(v, float)})


def overhead_1080p(mode: str) -> dict:
    """Model vs render seconds (best of a few) for a 16-frame 1080p clip (the synthetic demo clip at 1920x1080,
    demo weights, gazing ratio 0.75, task loss 0.7) in ``mode``."""
    from triton_autogaze.demo import synthesize_clip
    from triton_autogaze.pipeline import AutoGazePipeline
    from triton_autogaze.render import Renderer

    frames = torch.from_numpy(synthesize_clip(16, *SIZES["1080p"])).cuda()  # uint8 [16, 1080, 1920, 3]
    pipe = AutoGazePipeline.from_pretrained("demo", device="cuda")
    T, H, W = frames.shape[:3]

    def model():
        tr = pipe.trace_rgba_clip(frames, mode=mode, gazing_ratio=0.75, task_loss_requirement=0.7)
        torch.cuda.synchronize()
        return tr

    def render(trace, visualization):
        sbs = side_by_side_buffer(T, H, W, "cuda")
        Renderer(RenderSettings(visualization), backend="triton").render(frames, trace, sbs)
        torch.cuda.synchronize()

    def best(fn, *a, n=5):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn(*a)
            times.append(time.perf_counter() - t0)
        return min(times)

    trace = model()  # warm-up: compiles
    render(trace, "full-blend")
    render(trace, "interframe")
    out = {"model_s": best(model, n=3), "render_blend_s": best(render, trace, "full-blend"),
           "render_interframe_s": best(render, trace, "interframe"), "gpu": _gpu_name(), "mode": mode}
    out["ratio"] = max(out["render_blend_s"], out["render_interframe_s"]) / out["model_s"]
    return out


@needs_cuda
@pytest.mark.parametrize("mode", ["anyres-tile-224", "tiled-full-resolution", "resize-224"])
def test_render_overhead_1080p(benchmark, mode):
    """Target: rendering a 1080p clip costs <= 10% of its model time, in each mode, for both visualizations
    (measured in a fresh process by :func:`overhead_1080p`; the benchmark times that whole process)."""
    benchmark.group = "render-overhead-1080p"
    out = benchmark.pedantic(lambda: json.loads(_subprocess([__file__, mode]).strip().splitlines()[-1]),
                             rounds=1, iterations=1)
    benchmark.extra_info.update(out)
    assert out["ratio"] <= 0.10, out


if __name__ == "__main__":  # python bench/bench_render.py MODE: one overhead_1080p measurement as JSON
    print(json.dumps(overhead_1080p(sys.argv[1])))
