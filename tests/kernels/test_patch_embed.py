"""kernels/patch_embed.py against the torch vision encoder (SPEC §3-§4). Runs on CPU under TRITON_INTERPRET=1."""

import os
from pathlib import Path

import pytest

# The interpreter's tl.dot is numpy matmul; multithreaded OpenBLAS on a busy CI box can be ~100x slower than one
# thread. Only takes effect if numpy is not loaded yet (torch loads it), hence before `import torch`.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton decorates the kernels

from safetensors.torch import load_file  # noqa: E402

from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.kernels.patch_embed import (  # noqa: E402
    PatchEmbedWeights, patch_embed, patch_embed_ref, prepare_patch_embed_weights)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
ATOL = 1e-4  # SPEC §12 tolerance for vision_embeds in fp32
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _fixture(name: str) -> Path | None:
    for root in (REPO / "tests" / "fixtures", SHARED):
        if (root / name).exists():
            return root / name
    return None


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.Tensor]:
    folder = _fixture("model")
    if folder is None:
        pytest.skip("no fixture model (tests/fixtures/model or $AUTOGAZE_SHARED_FIXTURES/model)")
    _, w, _ = load_checkpoint(folder)
    return {k: v.to(DEV) for k, v in w.items()}


@pytest.fixture(scope="module")
def prepared(weights) -> PatchEmbedWeights:
    return prepare_patch_embed_weights(weights)


def _video(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, 3, 224, 224, generator=g).to(DEV)  # ~ normalised pixels


def _cache(B: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 192, 2, 14, 14, generator=g).to(DEV)  # ~ post-LayerNorm features


@pytest.mark.parametrize("T", [1, 2])
def test_fresh_clip_matches_reference(weights, prepared, T):
    video = _video(1, T, seed=T)
    ref, ref_cache = patch_embed_ref(video, weights)
    # T=1 takes the raw checkpoint dict (prepared inside), T=2 the cached preparation
    out, cache = patch_embed(video, weights if T == 1 else prepared)
    assert out.shape == (1, T, 196, 192) and out.dtype == torch.float32
    assert cache.shape == (1, 192, 2, 14, 14) and cache.is_contiguous()
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache, ref_cache, atol=ATOL, rtol=0)


def test_with_conv_cache_matches_reference(weights, prepared):
    video, cache_in = _video(2, 1, seed=10), _cache(2, seed=11)
    ref, ref_cache = patch_embed_ref(video, weights, cache_in)
    out, cache = patch_embed(video, prepared, cache_in)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache, ref_cache, atol=ATOL, rtol=0)
    assert torch.equal(cache[:, :, 0], cache_in[:, :, 1])  # the oldest cache frame shifts out unchanged


@pytest.mark.parametrize("k_split", [3, 27])
def test_split_conv_matches_reference(weights, prepared, k_split):
    """The conv's K steps in slices (partial sums side by side, then the op from their sum): what calls of a few
    frames on the GPU take. Same results as the reference and, up to the sum order, as one launch."""
    video, cache_in = _video(1, 1, seed=12), _cache(1, seed=13)
    ref, ref_cache = patch_embed_ref(video, weights, cache_in)
    out, cache = patch_embed(video, prepared, cache_in, k_split=k_split)
    one, one_cache = patch_embed(video, prepared, cache_in, k_split=1)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(out, one, atol=1e-5, rtol=0)
    assert torch.equal(cache, one_cache)  # the LayerNorm features do not go through the conv
    for bad in (0, 2, 5, True, 3.0):
        with pytest.raises(ValueError, match="k_split"):
            patch_embed(video, prepared, cache_in, k_split=bad)


def test_chained_calls_equal_one_clip(prepared):
    video = _video(1, 3, seed=20)
    whole, whole_cache = patch_embed(video, prepared)
    first, cache01 = patch_embed(video[:, :2], prepared)
    last, cache2 = patch_embed(video[:, 2:], prepared, cache01)
    torch.testing.assert_close(torch.cat([first, last], dim=1), whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(cache2, whole_cache, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["tile_view", "channels_last"])
def test_strided_video(weights, prepared, layout):
    if layout == "tile_view":  # a tile cut from a larger frame as a view: rows 448 apart, no copy
        video = _video(1, 1, seed=30).repeat(1, 1, 1, 2, 2)[..., 224:, :224]
    else:  # [B, T, H, W, 3] pixels permuted to [B, T, 3, H, W] without a copy (W stride 3)
        video = _video(1, 1, seed=31).permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    assert not video.is_contiguous()
    out, _ = patch_embed(video, prepared)
    ref, _ = patch_embed_ref(video.contiguous(), weights)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)


def test_fixture_vision_embeds(prepared):
    path = _fixture("clip224_t4.safetensors")
    if path is None:
        pytest.skip("clip224_t4 fixture not found")
    data = load_file(str(path))
    raw = data["raw_rgb"][:1, :2]  # row 0, frames 0-1 (uint8 [B, T, H, W, 3])
    x = raw.float().permute(0, 1, 4, 2, 3) / 127.5 - 1
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 1, 3, 1, 1)
    video = ((x - mean) / std).to(DEV)
    out, _ = patch_embed(video, prepared)
    torch.testing.assert_close(out.cpu(), data["vision_embeds"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("k_split", [None, 9])  # None on the GPU: one frame takes the sliced conv as well
def test_bf16_mode(weights, k_split):
    pw16 = prepare_patch_embed_weights(weights, dtype=torch.bfloat16)
    video, cache_in = _video(1, 1, seed=40), _cache(1, seed=41)
    ref, ref_cache = patch_embed_ref(video, weights, cache_in)
    out, cache = patch_embed(video, pw16, cache_in.bfloat16(), k_split=k_split)
    assert out.dtype == torch.float32 and cache.dtype == torch.bfloat16
    # bf16 operands, fp32 accumulation: ~1e-3 relative in practice
    assert ((out - ref).norm() / ref.norm()).item() < 1e-2
    assert ((cache.float() - ref_cache).norm() / ref_cache.norm()).item() < 1e-2


def test_launcher_rejects_bad_inputs(prepared):
    good = torch.zeros(1, 1, 3, 224, 224, device=DEV)
    cases = [
        (torch.zeros(1, 1, 3, 112, 112, device=DEV), None, "video"),
        (torch.zeros(1, 3, 224, 224, device=DEV), None, "video"),
        (good.double(), None, "video"),
        (torch.zeros(1, 0, 3, 224, 224, device=DEV), None, "video"),
        (good, torch.zeros(1, 192, 1, 14, 14, device=DEV), "conv_cache"),
        (good, torch.zeros(1, 192, 2, 14, 14, device=DEV, dtype=torch.bfloat16), "conv_cache"),
    ]
    for video, cache, name in cases:
        with pytest.raises(ValueError, match=name):
            patch_embed(video, prepared, cache)
    with pytest.raises(ValueError, match="dtype"):
        prepare_patch_embed_weights({}, dtype=torch.float16)
    with pytest.raises(ValueError, match="missing"):
        prepare_patch_embed_weights({})


@needs_cuda
def test_cuda_device_checks(weights, prepared):
    with pytest.raises(ValueError, match="video"):
        patch_embed(torch.zeros(1, 1, 3, 224, 224), prepared)  # a CPU video outside the interpreter
    on_cpu = prepare_patch_embed_weights(weights, device="cpu")
    with pytest.raises(ValueError, match="weights"):
        patch_embed(torch.zeros(1, 1, 3, 224, 224, device=DEV), on_cpu)
    with pytest.raises(ValueError, match="conv_cache"):
        patch_embed(torch.zeros(1, 1, 3, 224, 224, device=DEV), prepared, torch.zeros(1, 192, 2, 14, 14))


@needs_cuda
@pytest.mark.parametrize("B,T", [(3, 5), (45, 2)])
def test_cuda_larger_batches(weights, prepared, B, T):
    video, cache_in = _video(B, T, seed=B), _cache(B, seed=T)
    ref, ref_cache = patch_embed_ref(video, weights, cache_in)
    out, cache = patch_embed(video, prepared, cache_in)
    torch.testing.assert_close(out, ref, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache, ref_cache, atol=ATOL, rtol=0)
    out16, _ = patch_embed(video, prepare_patch_embed_weights(weights, dtype=torch.bfloat16), cache_in.bfloat16())
    assert ((out16 - ref).norm() / ref.norm()).item() < 1e-2


@needs_cuda
def test_cuda_graph_replay(prepared):
    video = _video(2, 2, seed=50)
    static = video.clone()
    patch_embed(static, prepared)  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, cache = patch_embed(static, prepared)
    fresh = _video(2, 2, seed=51)
    static.copy_(fresh)
    graph.replay()
    want, want_cache = patch_embed(fresh, prepared)
    assert torch.equal(out, want) and torch.equal(cache, want_cache)
