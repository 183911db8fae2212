"""Demo weights and synthetic clip: shapes, determinism, checkpoint round trip, non-degenerate generation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from fixture_data import model_dir
from triton_autogaze import AutoGaze, AutoGazeConfig, PreprocessorConfig
from triton_autogaze.checkpoint import expected_shapes, validate_weights
from triton_autogaze.demo import (demo_checkpoint, demo_config_dict, demo_preprocessor_dict, synthesize_clip,
                                  write_demo_checkpoint)
from triton_autogaze.processing import AutoGazeImageProcessor


@pytest.fixture(scope="module")
def demo_model() -> AutoGaze:
    return AutoGaze.from_pretrained("demo", device="cpu", backend="torch")


def test_weights_have_expected_shapes():
    cfg, weights = demo_checkpoint()
    shapes = expected_shapes(cfg)
    assert set(weights) == set(shapes)
    for name, t in weights.items():
        assert tuple(t.shape) == shapes[name], name
        assert t.dtype == torch.float32 and t.device.type == "cpu", name
    validate_weights(cfg, weights)
    assert sum(t.numel() for t in weights.values()) == 3_258_240  # SPEC §1


def test_config_is_nvidia_architecture():
    cfg = AutoGazeConfig.from_dict(demo_config_dict())
    assert cfg.grid_sizes == (2, 4, 7, 14) and cfg.scale_offsets == (0, 4, 20, 69)
    assert cfg.default_gazing_ratio == 0.75 and cfg.default_task_loss_requirement == 0.7
    assert cfg.has_task_loss_requirement_during_inference
    # The fixture checkpoint is the NVIDIA config except for its stored threshold (SPEC §12).
    fixture = AutoGazeConfig.from_file(model_dir() / "config.json")
    assert dataclasses.replace(fixture, default_task_loss_requirement=0.7) == cfg


def test_preprocessor_is_nvidia_values():
    fixture = json.loads((model_dir() / "preprocessor_config.json").read_text())
    assert demo_preprocessor_dict() == fixture
    assert PreprocessorConfig.from_dict(demo_preprocessor_dict()) == PreprocessorConfig()


def test_weights_are_deterministic():
    cfg_a, a = demo_checkpoint()
    cfg_b, b = demo_checkpoint()
    assert cfg_a == cfg_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, c = demo_checkpoint(seed=1)
    assert not torch.equal(a["gaze_decoder.lm_head.weight"], c["gaze_decoder.lm_head.weight"])


def test_checkpoint_round_trip(tmp_path):
    folder = write_demo_checkpoint(tmp_path / "ckpt")
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "preprocessor_config.json"}
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        assert all(k.startswith("gazing_model.") for k in f.keys())
    cfg, weights = demo_checkpoint()
    model = AutoGaze.from_pretrained(folder, device="cpu", backend="torch")
    assert model.config == cfg
    assert set(model.weights) == set(weights)
    assert all(torch.equal(model.weights[k], weights[k]) for k in weights)
    assert AutoGazeImageProcessor.from_pretrained(folder).config == PreprocessorConfig()


def test_synthesize_clip():
    clip = synthesize_clip(4, 64, 96)
    assert clip.shape == (4, 64, 96, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, synthesize_clip(4, 64, 96))
    assert not np.array_equal(clip, synthesize_clip(4, 64, 96, seed=1))
    assert all(not np.array_equal(clip[t], clip[t + 1]) for t in range(3))  # shapes move
    assert synthesize_clip(1, 33, 17).shape == (1, 33, 17, 3)
    with pytest.raises(ValueError):
        synthesize_clip(0)


def test_generation_is_well_formed(demo_model):
    pixels = AutoGazeImageProcessor()(synthesize_clip(4))  # [4, 3, 224, 224]
    trace = demo_model.generate(pixels, gazing_ratio=0.1)  # budget 26 a frame
    assert trace.num_gazing_each_frame.tolist() == [26] * 4
    frames = trace.fixations()
    ids = [[f.token_id for f in fr] for fr in frames]
    for fr in ids:
        assert len(fr) == 26 and len(set(fr)) == 26 and all(0 <= i < 265 for i in fr)
    assert len({tuple(fr) for fr in ids}) == 4  # every frame gazes differently
    conf = [f.confidence for fr in frames for f in fr]
    assert all(0.0 < c <= 1.0 for c in conf)
    d = trace.to_dict()
    assert d["num_frames"] == 4 and len(d["sequences"][0]["frames"]) == 4


def test_task_loss_stops_frames_at_varied_lengths(demo_model):
    pixels = AutoGazeImageProcessor()(synthesize_clip(6))
    trace = demo_model.generate(pixels, gazing_ratio=0.75, task_loss_requirement=0.7)
    lengths = trace.num_gazing_each_frame.tolist()
    assert all(L < 198 for L in lengths), lengths  # the threshold, not the budget, ends frames
    assert len(set(lengths)) >= 3, lengths
    real = (~trace.if_padded_gazing).sum().item()
    assert 0 < real < sum(lengths)  # some slots are task-loss pads
