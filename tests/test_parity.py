"""Exact parity with upstream AutoGaze on every fixture case (SPEC §12): the torch backend (fused C++ CPU decoder),
the torch oracle (reference=True) and, with a GPU, CUDA torch and Triton; fp32."""

from __future__ import annotations

import pytest
import torch

from fixture_data import (assert_record_equal, call_kwargs, case_params, load_case, model_dir, model_input)
from triton_autogaze import AutoGaze


# cpu-torch runs the fused C++ CPU decoder (cpu_fast.py) where the machine has it; cpu-reference the torch oracle.
@pytest.fixture(scope="module", params=["cpu-torch", "cpu-reference", pytest.param("cuda-torch", marks=pytest.mark.gpu),
                                        pytest.param("cuda-triton", marks=pytest.mark.gpu)])
def model(request):
    device, backend = request.param.split("-")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if backend == "reference":
        return AutoGaze.from_pretrained(model_dir(), device=device, backend="torch", reference=True)
    return AutoGaze.from_pretrained(model_dir(), device=device, backend=backend)


@pytest.mark.parametrize("root,case", case_params())
def test_generation_matches_upstream(model, root, case):
    data = load_case(root, case)
    out = model({"video": model_input(case, data)}, **call_kwargs(case))
    assert_record_equal(out, data["gazing_pos"], data["if_padded_gazing"], data["num_gazing_each_frame"])
    for s in range(4):
        assert torch.equal(out["gazing_mask"][s].cpu(), data[f"gazing_mask_{s}"]), f"scale {s}"
    assert out["num_vision_tokens_each_frame"] == case["num_vision_tokens_each_frame"]
    assert int((~out["if_padded_gazing"]).sum()) == case["valid_tokens"]


@pytest.mark.parametrize("root,case", [p for p in case_params() if p.values[1].get("independent_sequences")])
def test_independent_semantics(model, root, case):
    data = load_case(root, case)
    out = model({"video": model_input(case, data)}, batch_semantics="independent", **call_kwargs(case))
    out = {k: (v.cpu() if torch.is_tensor(v) else v) for k, v in out.items()}
    assert (case["independent_equals_batched"]) == torch.equal(out["gazing_pos"], data["gazing_pos"])
    for b in range(case["independent_sequences"]):
        pos = data[f"independent_{b}_gazing_pos"][0]
        pad = data[f"independent_{b}_if_padded_gazing"][0].bool()
        num = data[f"independent_{b}_num_gazing_each_frame"]
        # frame by frame: row b's real ids in order, and its own frame length before the batch padding
        start_ours, start_ref = 0, 0
        for t, L in enumerate(num.tolist()):
            L_ours = int(out["num_gazing_each_frame"][t])
            ours = out["gazing_pos"][b, start_ours:start_ours + L_ours]
            ours_pad = out["if_padded_gazing"][b, start_ours:start_ours + L_ours]
            assert torch.equal(ours[:L], pos[start_ref:start_ref + L])  # padded values too
            assert torch.equal(ours_pad[:L], pad[start_ref:start_ref + L])
            assert bool(ours_pad[L:].all()), "batch padding after a row's own frame length must be pads"
            start_ours += L_ours
            start_ref += L


@pytest.mark.parametrize("root,case", [p for p in case_params() if p.values[1].get("streaming")])
def test_streaming_matches_clip(model, root, case):
    data = load_case(root, case)
    video = model_input(case, data)
    kw = call_kwargs(case)
    past = dict(past_key_values=None, past_inputs_embeds=None, past_attention_mask=None, past_conv_values=None)
    parts = []
    embeds_list = None
    for t in range(video.shape[1]):
        out = model({"video": video[:, t:t + 1]}, use_cache=True, **kw, **past)
        parts.append(out["gazing_pos"].cpu() + 265 * t)
        if embeds_list is None:
            embeds_list = out["past_input_embeds"]
        else:  # upstream extends the caller's list in place and returns the same object
            assert out["past_input_embeds"] is embeds_list
        past = dict(past_key_values=out["past_key_values"], past_inputs_embeds=out["past_input_embeds"],
                    past_attention_mask=out["past_attention_mask"], past_conv_values=out["past_conv_values"])
    stream = torch.cat(parts, 1)
    pad = data["if_padded_gazing"].bool()
    assert torch.equal(stream[~pad], data["streaming_gazing_pos"][~pad])
    assert torch.equal(stream[~pad], data["gazing_pos"][~pad])
    assert len(embeds_list) == 2 * video.shape[1]


@pytest.mark.parametrize("root,case", [p for p in case_params() if "vision_embeds" in load_case(*p.values)])
def test_vision_embeds(model, root, case):
    data = load_case(root, case)
    video = model_input(case, data)[:1, :2]
    emb, _ = model.encode(video)
    assert (emb.cpu() - data["vision_embeds"]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("root,case", [p for p in case_params() if "teacher_forced_gaze_probs" in load_case(*p.values)])
def test_teacher_forced(model, root, case):
    data = load_case(root, case)
    info = {k: data[k] for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame")}
    out = model({"video": model_input(case, data)}, gazing_info=info, **{k: v for k, v in call_kwargs(case).items() if k != "generate_only"})
    probs = torch.exp(out["log_action_probs"].cpu()) - 1e-8
    assert (probs - data["teacher_forced_gaze_probs"]).abs().max().item() <= 1e-5
    assert (out["task_loss_prediction"].cpu() - data["teacher_forced_task_loss_prediction"]).abs().max().item() <= 1e-4
