"""pytest-benchmark: Triton kernels vs their torch references at real shapes (skipped without CUDA).

Run: pytest bench/bench_kernels.py --benchmark-group-by=param:frames (not part of the default test run).
patch_embed is timed for B*T = 16 frames (one clip) and 720 frames (45 tiles of a 1080p frame x 16 frames);
the reference runs once with TF32 off (the fp32 contract) and once with PyTorch's cuDNN default (TF32 on).
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

FRAMES = {16: (1, 16), 720: (45, 16)}  # B*T -> (B, T)


@pytest.fixture(scope="module")
def weights():
    import os
    from pathlib import Path

    from triton_autogaze.checkpoint import load_checkpoint

    repo = Path(__file__).resolve().parents[1]
    for folder in (repo / "tests" / "fixtures" / "model",
                   Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", repo.parent / "shared" / "fixtures")) / "model"):
        if folder.is_dir():
            _, w, _ = load_checkpoint(folder)  # random weights; timings do not depend on the values
            return {k: v.cuda() for k, v in w.items()}
    pytest.skip("no fixture model")


def _timed(benchmark, fn, **info):
    benchmark.extra_info.update(gpu=torch.cuda.get_device_name(), torch=torch.__version__, **info)
    fn()  # compile / warm up outside the timing

    def run():
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(run, rounds=20, warmup_rounds=2, iterations=1)


@pytest.mark.parametrize("frames", sorted(FRAMES))
@pytest.mark.parametrize("impl", ["triton-fp32", "triton-bf16", "torch-fp32", "torch-tf32"])
def test_patch_embed(benchmark, weights, impl, frames):
    from triton_autogaze.kernels.patch_embed import patch_embed, patch_embed_ref, prepare_patch_embed_weights

    B, T = FRAMES[frames]
    video = torch.randn(B, T, 3, 224, 224, device="cuda")
    if impl.startswith("triton"):
        pw = prepare_patch_embed_weights(weights, dtype=torch.bfloat16 if impl.endswith("bf16") else torch.float32)
        _timed(benchmark, lambda: patch_embed(video, pw), frames=frames)
    else:
        tf32 = impl.endswith("tf32")
        _timed(benchmark, lambda: patch_embed_ref(video, weights, allow_tf32=tf32), frames=frames)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_scatter_and_stitch_1080p(benchmark, impl):
    from triton_autogaze.kernels.mask_scatter import scatter_and_stitch, scatter_masks_ref, stitch_tile_masks_ref

    # 45 tiles (5 x 9) x 16 frames, up to 200 ids per frame; crop to the 1080p extent (fm = 1920/16 = 120 wide)
    ids = torch.randint(0, 266, (45, 16, 200), device="cuda")
    crop = [(9, 17), (19, 35), (34, 62), (68, 120)]
    if impl == "triton":
        _timed(benchmark, lambda: scatter_and_stitch(ids, 5, 9, crop=crop), frames=720)
    else:
        _timed(benchmark, lambda: stitch_tile_masks_ref(scatter_masks_ref(ids), 5, 9, crop), frames=720)
