"""The Pythonic API (generate -> GazeTrace), argument rules of the upstream call, and bad-input errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixture_data import LOCAL, load_case, model_dir, model_input, cases
from triton_autogaze import AutoGaze, GazeTrace


@pytest.fixture(scope="module")
def model():
    return AutoGaze.from_pretrained(model_dir(), backend="torch")


@pytest.fixture(scope="module")
def clip():
    c = [c for c in cases(LOCAL) if c["name"] == "clip224_t4"][0]
    return model_input(c, load_case(LOCAL, c))


def test_generate_matches_upstream_call(model, clip):
    trace = model.generate(clip, gazing_ratio=0.75, task_loss_requirement=-2.0)
    out = model({"video": clip}, gazing_ratio=0.75, task_loss_requirement=-2.0, generate_only=True)
    assert isinstance(trace, GazeTrace)
    assert torch.equal(trace.gazing_pos, out["gazing_pos"])
    assert torch.equal(trace.if_padded_gazing, out["if_padded_gazing"])
    # a 4-D clip is one batch row
    t2 = model.generate(clip[0], gazing_ratio=0.75, task_loss_requirement=-2.0)
    assert torch.equal(t2.gazing_pos, trace.gazing_pos)


def test_generate_each_equals_one_clip_at_a_time(model, clip):
    """generate_each: one batched call, one trace per clip laid out as that clip alone (rows stopping at
    different steps, so the batch's frames are wider than some clips')."""
    video = torch.cat([clip, clip.flip(-1), clip * 0.8], 0)
    kw = dict(gazing_ratio=0.3, task_loss_requirement=-2.5)
    traces = model.generate_each(video, **kw)
    assert len(traces) == 3
    batched = model.generate(video, **kw)
    widths = set()
    for b, t in enumerate(traces):
        alone = model.generate(video[b:b + 1], **kw)
        widths.add(tuple(t.num_gazing_each_frame.tolist()))
        assert torch.equal(t.gazing_pos, alone.gazing_pos)
        assert torch.equal(t.if_padded_gazing, alone.if_padded_gazing)
        assert torch.equal(t.num_gazing_each_frame, alone.num_gazing_each_frame)
        torch.testing.assert_close(t.confidence, alone.confidence, rtol=0, atol=1e-6)
        assert torch.equal(t.task_loss_requirement, alone.task_loss_requirement)
    assert len(widths) > 1 and tuple(batched.num_gazing_each_frame.tolist()) not in widths  # trimmed per clip


def test_generate_is_deterministic(model, clip):
    a = model.generate(clip, gazing_ratio=0.3)
    b = model.generate(clip, gazing_ratio=0.3)
    assert torch.equal(a.gazing_pos, b.gazing_pos) and torch.equal(a.confidence, b.confidence)


def test_fixations_decode(model, clip):
    trace = model.generate(clip, gazing_ratio=0.75, task_loss_requirement=-2.0)
    frames = trace.fixations(0)
    assert len(frames) == clip.shape[1]
    for t, (sl, fr) in enumerate(zip(trace.frame_slices(), frames)):
        assert len(fr) == int((~trace.if_padded_gazing[0, sl]).sum())
        for f in fr:
            s = f.scale_index
            g = trace.grid_sizes[s]
            assert f.grid_size == g and 0 <= f.row < g and 0 <= f.col < g
            assert f.token_id == trace.scale_offsets[s] + f.row * g + f.col
            assert trace.gazing_mask[s][0, t, f.row * g + f.col] == 1
            x0, y0, x1, y1 = f.rect
            assert math.isclose(x1 - x0, 1 / g) and math.isclose(y1 - y0, 1 / g)
            assert 0.0 < f.confidence <= 1.0
    packed, cu = trace.packed()
    assert cu.tolist() == [0, int((~trace.if_padded_gazing).sum())]
    assert torch.equal(packed, trace.gazing_pos[~trace.if_padded_gazing])
    assert trace.to_dict()["num_frames"] == clip.shape[1]


def test_budget_rules(model, clip):
    # ratio 0.2 -> 53 tokens a frame (5 x 10 + 3), a per-frame list sets each frame's budget
    out = model({"video": clip[:, :2]}, gazing_ratio=[0.1, 0.2], generate_only=True)
    assert out["num_gazing_each_frame"].tolist() == [26, 53]
    out = model({"video": clip[:, :1]}, gazing_ratio=1.0, generate_only=True)
    assert out["num_gazing_each_frame"].tolist() == [265]
    ids = out["gazing_pos"][0]
    assert sorted(ids.tolist()) == list(range(265))  # every id exactly once, never EOS
    trace = model.generate(clip[:, :1], gazing_ratio=0.75, max_gaze_tokens_each_frame=7)
    assert trace.num_gazing_each_frame.tolist() == [7]


def test_huge_threshold_gives_one_real_token(model, clip):
    out = model({"video": clip}, gazing_ratio=0.75, task_loss_requirement=100.0, generate_only=True)
    assert out["num_gazing_each_frame"].tolist() == [10] * clip.shape[1]
    pattern = out["if_padded_gazing"][0].view(-1, 10)
    assert torch.equal(pattern, torch.tensor([[False] + [True] * 9] * clip.shape[1]))


def test_default_arguments_use_config(model, clip):
    out = model({"video": clip[:, :2]}, generate_only=True)
    ref = model({"video": clip[:, :2]}, gazing_ratio=0.75, task_loss_requirement=-2.0, generate_only=True)
    assert torch.equal(out["gazing_pos"], ref["gazing_pos"])
    assert out["has_task_loss_requirement"] and out["task_loss_requirement"].shape == (1, 2)


def test_output_keys(model, clip):
    out = model({"video": clip[:, :1]}, gazing_ratio=0.1)
    for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame", "gazing_mask", "scales",
              "frame_sampling_rate", "num_vision_tokens_each_frame", "has_task_loss_requirement",
              "task_loss_requirement", "log_action_probs", "task_loss_prediction", "past_key_values",
              "past_input_embeds", "past_attention_mask", "past_conv_values"):
        assert k in out
    assert out["scales"] == [32, 64, 112, 224] and out["frame_sampling_rate"] == 1
    assert out["log_action_probs"].shape == out["gazing_pos"].shape  # generate_only=False scores the gaze
    assert out["has_task_loss_requirement"] is False and out["task_loss_requirement"] is None


# ----- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("video,exc,match", [
    (torch.zeros(1, 2, 224, 224), ValueError, "5 dims"),
    (torch.zeros(1, 2, 4, 32, 32), ValueError, "3 channels"),
    (torch.zeros(1, 0, 3, 32, 32), ValueError, "zero frames"),
    (torch.zeros(0, 1, 3, 32, 32), ValueError, "zero batch"),
    (torch.zeros(1, 1, 3, 0, 32), ValueError, "zero-size"),
    (torch.zeros(1, 1, 3, 32, 32, dtype=torch.uint8), TypeError, "floating-point"),
    (torch.full((1, 1, 3, 32, 32), float("nan")), ValueError, "non-finite"),
    (torch.full((1, 1, 3, 32, 32), float("inf")), ValueError, "non-finite"),
    ([[1.0]], TypeError, "torch.Tensor"),
])
def test_bad_video(model, video, exc, match):
    with pytest.raises(exc, match=match):
        model({"video": video}, gazing_ratio=0.5, generate_only=True)
    if torch.is_tensor(video) and video.dim() == 4:
        return  # generate() reads a 4-D tensor as one clip [T, 3, H, W]
    with pytest.raises(exc, match=match):
        model.generate(video, gazing_ratio=0.5)


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5, float("nan"), [0.5], "0.5"])
def test_bad_ratio(model, clip, ratio):
    with pytest.raises((ValueError, TypeError), match="gazing_ratio"):
        model({"video": clip[:, :2]}, gazing_ratio=ratio, generate_only=True)


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), torch.zeros(3, 5)])
def test_bad_threshold(model, clip, tau):
    with pytest.raises(ValueError, match="task_loss_requirement"):
        model({"video": clip[:, :2]}, gazing_ratio=0.5, task_loss_requirement=tau, generate_only=True)


@pytest.mark.parametrize("scales,p,match", [
    ([64, 128, 448], 16, "4 entries"),
    ([64, 128, 224, 450], 16, "multiple of target_patch_size"),
    ([64, 128, 224, 448], 0, "positive"),
])
def test_bad_target_scales(model, clip, scales, p, match):
    with pytest.raises(ValueError, match=match):
        model({"video": clip[:, :1]}, gazing_ratio=0.5, target_scales=scales, target_patch_size=p, generate_only=True)


def test_target_scales_need_square_input(model, clip):
    with pytest.raises(ValueError, match="square"):
        model({"video": clip[:, :1]}, gazing_ratio=0.5, target_scales=[64, 128, 224, 448], target_patch_size=16,
              generate_only=True)


def test_target_scales_plain_is_plain_call(model, clip):
    a = model({"video": clip[:, :1]}, gazing_ratio=0.5, target_scales=[32, 64, 112, 224], target_patch_size=16,
              generate_only=True)
    b = model({"video": clip[:, :1]}, gazing_ratio=0.5, generate_only=True)
    assert torch.equal(a["gazing_pos"], b["gazing_pos"])


def test_streaming_argument_rules(model, clip):
    with pytest.raises(ValueError, match="requires generate_only=True"):
        model({"video": clip[:, :1]}, gazing_ratio=0.5, use_cache=True)
    with pytest.raises(ValueError, match="together"):
        model({"video": clip[:, :1]}, gazing_ratio=0.5, generate_only=True, past_conv_values=[])
    with pytest.raises(ValueError, match="batch_semantics"):
        model({"video": clip[:, :1]}, gazing_ratio=0.5, generate_only=True, batch_semantics="sometimes")


def test_bad_inputs_dict(model, clip):
    with pytest.raises(TypeError, match="'video'"):
        model({"frames": clip}, gazing_ratio=0.5)


# ----- property-based -----------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    B=st.integers(1, 2), T=st.integers(1, 2), H=st.integers(16, 80), W=st.integers(16, 80),
    ratio=st.floats(0.005, 0.2), tau=st.one_of(st.none(), st.floats(-3.0, 3.0)),
    semantics=st.sampled_from(["upstream", "independent"]), seed=st.integers(0, 2**16),
)
def test_random_inputs_give_well_formed_outputs(model, B, T, H, W, ratio, tau, semantics, seed):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(B, T, 3, H, W, generator=g)
    out = model({"video": video}, gazing_ratio=ratio, task_loss_requirement=tau, generate_only=True,
                batch_semantics=semantics)
    pos, pad, num = out["gazing_pos"], out["if_padded_gazing"], out["num_gazing_each_frame"]
    budget = max(int(torch.tensor(ratio, dtype=torch.float32) * 265), 1)
    assert pos.shape == pad.shape == (B, int(num.sum()))
    assert all(1 <= L <= budget for L in num.tolist())
    start = 0
    for t, L in enumerate(num.tolist()):
        ids = pos[:, start:start + L] - 265 * t
        p = pad[:, start:start + L]
        assert ((ids[~p] >= 0) & (ids[~p] < 265)).all()
        assert (ids[p] == 265).all()
        for b in range(B):
            real = ids[b][~p[b]].tolist()
            assert len(real) == len(set(real)), "no repeats within a frame"
            assert len(real) >= 1, "the first token of every frame is exempt from stopping"
            dense = torch.cat([m[b, t] for m in out["gazing_mask"]])
            assert sorted(real) == dense.nonzero().flatten().tolist(), "masks consistent with ids"
        start += L


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), -float("inf"), 1e40, [0.5, float("nan")],
                                 torch.tensor([[1e40]], dtype=torch.float64)])
def test_thresholds_must_be_finite_in_fp32(tau):
    """One value (filled on the device) and tensors (through the host) are held to the same rule: finite as fp32,
    so 1e40 (inf in fp32) is refused either way."""
    from triton_autogaze.model import thresholds

    with pytest.raises(ValueError, match="finite"):
        thresholds(tau, 1, 2, torch.device("cpu"))
    assert thresholds(0.7, 2, 3, torch.device("cpu")).equal(torch.full((2, 3), 0.7))
