"""pytest-benchmark suite of the Triton backend on one GPU (skipped without CUDA).

Groups: generation alone (engine, 224px clips, B=1 and B=8, task-loss stopping off/on, fp32 and bf16, the torch
reference beside it); many independent rows as one group vs the engine's row groups on concurrent streams; end to end (AutoGaze.generate from normalised frames: embedding + generation); AnyRes
1280x720 and 1920x1080 clips of 2 and 16 frames through the pipeline; a tile batch size sweep; streaming
latency of one 224px frame.

Run: python -m pytest bench/bench_engine.py --benchmark-only -p no:cacheprovider [-k expr]
"""

from __future__ import annotations

import pytest
import torch

from _stats import stat
from fixture_data import LOCAL
from triton_autogaze import AutoGaze
from triton_autogaze.pipeline import AutoGazePipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
FULL = dict(gazing_ratio=0.75, task_loss_requirement=None)  # 198 tokens a frame, no stopping
TAU = -2.0  # the fixtures' stopping setting (stops early on the random-weight model)


def _info(benchmark, **kw):
    benchmark.extra_info.update(gpu=torch.cuda.get_device_name(), **kw)


def _bench(benchmark, fn, rounds=5):
    fn()
    fn()  # the second call captures the CUDA graph

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=1)


def _video(B, T, H=224, W=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, T, 3, H, W, generator=g) * 4 - 2).cuda()


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def model(request):
    dtype = torch.float32 if request.param == "fp32" else torch.bfloat16
    return AutoGaze.from_pretrained(LOCAL / "model", device="cuda", backend="triton", dtype=dtype)


@pytest.fixture(scope="module")
def reference():
    return AutoGaze.from_pretrained(LOCAL / "model", device="cuda", backend="torch")


@pytest.mark.benchmark(group="generation-224-16f")
@pytest.mark.parametrize("B", [1, 8])
@pytest.mark.parametrize("tau", [None, TAU])
def test_generation(benchmark, model, B, tau):
    """Generation alone: vision embeddings already computed, engine.run (one host sync at the end)."""
    v = model.encode(_video(B, 16))[0]
    budgets = model.budgets(0.75, 16)
    t = None if tau is None else torch.full((B, 16), tau, device="cuda")
    sem = "upstream" if B == 1 else "independent"
    gen = model._generator()
    out = _bench(benchmark, lambda: gen.run(v, budgets, t, sem)[0])  # drop the state: the workspace is reused
    _info(benchmark, dtype=str(model.dtype), tokens=sum(int((f.ids != model.config.eos_id).sum()) for f in out.frames))


@pytest.mark.benchmark(group="generation-row-groups-16f")
@pytest.mark.parametrize("B", [8, 24, 45])
@pytest.mark.parametrize("groups", ["one", "auto"])
def test_generation_row_groups(benchmark, model, B, groups):
    """Independent rows (full budget) as one group or in the engine's default row groups (fp32: up to 4, each a
    captured call on its own CUDA stream; bf16: 2 groups from 32 rows). 24 / 45 rows: the 720p / 1080p tiles."""
    v = model.encode(_video(B, 16))[0]
    budgets = model.budgets(0.75, 16)
    gen = model._generator()
    saved = gen.row_group_rows
    if groups == "one":
        gen.row_group_rows = None
    try:
        _bench(benchmark, lambda: gen.run(v, budgets, None, "independent")[0], rounds=3)
        _info(benchmark, dtype=str(model.dtype), groups=len(gen.row_groups(B, "independent", no_stopping=True)))
    finally:
        gen.row_group_rows = saved


@pytest.mark.benchmark(group="generation-224-16f")
def test_generation_reference(benchmark, reference):
    """The pure-torch reference on the same GPU, same call (B=1, full budget)."""
    v = reference.encode(_video(1, 16))[0]
    gen = reference._generator()
    budgets = reference.budgets(0.75, 16)
    benchmark.pedantic(lambda: (gen.run(v, budgets, None, "upstream")[0], torch.cuda.synchronize()), rounds=2,
                       iterations=1, warmup_rounds=1)
    _info(benchmark, dtype="float32 (torch reference)")


@pytest.mark.benchmark(group="end-to-end-224-16f")
@pytest.mark.parametrize("B", [1, 8])
def test_end_to_end_224(benchmark, model, B):
    """Normalised frames on the GPU -> fused patch embedding -> generation -> GazeTrace."""
    video = _video(B, 16)
    _bench(benchmark, lambda: model.generate(video, **FULL))
    _info(benchmark, dtype=str(model.dtype))


@pytest.fixture(scope="module")
def pipe(model):
    return AutoGazePipeline(model)


@pytest.mark.benchmark(group="anyres")
@pytest.mark.parametrize("size", ["720p", "1080p"])
@pytest.mark.parametrize("T", [2, 16])
def test_anyres_clip(benchmark, pipe, size, T):
    """A normalised 1280x720 / 1920x1080 clip, anyres-tile-224 (24 / 45 tiles), all tiles in one batch."""
    H, W = (720, 1280) if size == "720p" else (1080, 1920)
    video = _video(1, T, H, W)[0]
    grid = pipe.plan(H, W, "anyres-tile-224")
    _bench(benchmark, lambda: pipe.trace_clip(video, mode="anyres-tile-224", tile_batch_size=grid.num_tiles, **FULL),
           rounds=3)
    _info(benchmark, dtype=str(pipe.model.dtype), tiles=grid.num_tiles)


@pytest.mark.benchmark(group="tile-batch-sweep-1080p-2f")
@pytest.mark.parametrize("tbs", [1, 2, 4, 8, 16, 32, 64, None], ids=lambda v: "auto" if v is None else str(v))
def test_tile_batch_sweep(benchmark, pipe, tbs):
    """None: the default, AutoGazePipeline.auto_tile_batch (all 45 tiles in one batch on an H100)."""
    if pipe.model.dtype != torch.float32:
        pytest.skip("the sweep runs in fp32")
    video = _video(1, 2, 1080, 1920)[0]
    _bench(benchmark, lambda: pipe.trace_clip(video, mode="anyres-tile-224", tile_batch_size=tbs, **FULL), rounds=3)
    _info(benchmark, tile_batch_size=tbs)


@pytest.mark.benchmark(group="stream-224")
@pytest.mark.parametrize("tau", [None, 0.7], ids=["full", "tau0.7"])
def test_stream_frame_latency(benchmark, pipe, tau):
    """One push() of a 224x224 RGB frame (resize-224; full budget, or the default task-loss stopping at 0.7),
    16 frames per round, per-frame mean."""
    import numpy as np

    frames = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)

    def run():
        s = pipe.stream(mode="resize-224", gazing_ratio=0.75, task_loss_requirement=tau)
        for f in frames:
            s.push(f)
        torch.cuda.synchronize()

    run()
    benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    if (t := stat(benchmark, "median")) is not None:  # None under --benchmark-disable
        benchmark.extra_info["ms_per_frame"] = t / len(frames) * 1e3
    _info(benchmark, dtype=str(pipe.model.dtype), task_loss_requirement=tau)
