"""Strict checkpoint loading: config parsing, derived values, and clear errors for broken checkpoints."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from fixture_data import model_dir
from triton_autogaze import AutoGaze, AutoGazeConfig, CheckpointError, ConfigError, load_checkpoint


def test_config_derived_values():
    cfg = AutoGazeConfig.from_file(model_dir() / "config.json")
    assert cfg.scales == (32, 64, 112, 224)
    assert cfg.tokens_per_scale == (4, 16, 49, 196)
    assert cfg.grid_sizes == (2, 4, 7, 14)
    assert cfg.scale_offsets == (0, 4, 20, 69)
    assert cfg.eos_id == 265 and cfg.decoder.vocab_size == 266
    assert cfg.decoder.num_multi_token_pred == 10
    assert cfg.default_task_loss_requirement == -2.0  # the fixture checkpoint stores -2 (NVIDIA: 0.7)
    assert cfg.default_gazing_ratio == 0.75
    assert cfg.decoder.rope.rope_type == "llama3" and cfg.decoder.rope.factor == 8.0


def test_load_checkpoint_counts():
    cfg, w, _ = load_checkpoint(model_dir())
    assert len(w) == 49
    assert sum(t.numel() for t in w.values()) == 3_258_240


@pytest.fixture
def ckpt(tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(model_dir(), dst)
    return dst


def _rewrite(ckpt, fn):
    raw = load_file(str(ckpt / "model.safetensors"))
    fn(raw)
    save_file(raw, str(ckpt / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_named(ckpt):
    _rewrite(ckpt, lambda w: w.pop("gazing_model.gaze_decoder.lm_head.weight"))
    with pytest.raises(CheckpointError, match="missing tensor.*gazing_model.gaze_decoder.lm_head.weight"):
        AutoGaze.from_pretrained(ckpt)


def test_unexpected_tensor_is_named(ckpt):
    _rewrite(ckpt, lambda w: w.__setitem__("gazing_model.extra.weight", torch.zeros(3)))
    with pytest.raises(CheckpointError, match="unexpected tensor.*gazing_model.extra.weight"):
        AutoGaze.from_pretrained(ckpt)


def test_shape_mismatch_is_named(ckpt):
    _rewrite(ckpt, lambda w: w.__setitem__("gazing_model.connector.pos_embed", torch.zeros(195, 192)))
    with pytest.raises(CheckpointError, match=r"gazing_model.connector.pos_embed has shape \(195, 192\)"):
        AutoGaze.from_pretrained(ckpt)


def test_non_finite_weight_is_named(ckpt):
    def poison(w):
        w["gazing_model.gaze_decoder.model.norm.weight"][3] = float("nan")
    _rewrite(ckpt, poison)
    with pytest.raises(CheckpointError, match="gaze_decoder.model.norm.weight holds non-finite"):
        AutoGaze.from_pretrained(ckpt)


def test_truncated_file(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        AutoGaze.from_pretrained(ckpt)


def test_garbage_file(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError):
        AutoGaze.from_pretrained(ckpt)


def test_missing_weights_file(ckpt):
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        AutoGaze.from_pretrained(ckpt)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        AutoGaze.from_pretrained(tmp_path / "nope")


def test_config_contradicting_weights(ckpt):
    d = json.loads((ckpt / "config.json").read_text())
    d["gaze_model_config"]["gaze_decoder_config"]["intermediate_size"] = 512
    (ckpt / "config.json").write_text(json.dumps(d))
    with pytest.raises(CheckpointError, match="mlp.gate_proj.weight has shape"):
        AutoGaze.from_pretrained(ckpt)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d.__setitem__("scales", "32+64+112+225"), "perfect square|sum to"),
    (lambda d: d["gaze_model_config"]["gaze_decoder_config"].__setitem__("vocab_size", 300), "vocab_size"),
    (lambda d: d["gaze_model_config"]["gaze_decoder_config"].__setitem__("eos_token_id", 1), "eos_token_id"),
    (lambda d: d["gaze_model_config"]["vision_model_config"].__setitem__("temporal_patch_size", 2), "temporal_patch_size"),
    (lambda d: d["gaze_model_config"].pop("gaze_decoder_config"), "gaze_decoder_config"),
])
def test_bad_config(ckpt, mutate, match):
    d = json.loads((ckpt / "config.json").read_text())
    mutate(d)
    (ckpt / "config.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=match):
        AutoGaze.from_pretrained(ckpt)


def test_corrupt_config_json(ckpt):
    (ckpt / "config.json").write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        AutoGaze.from_pretrained(ckpt)


def test_hub_id_without_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "huggingface_hub":
            raise ImportError("no hub")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"triton_autogaze\[hub\]"):
        AutoGaze.from_pretrained("nvidia/AutoGaze-does-not-exist")


def test_backend_triton_without_gpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="needs a CUDA device"):
        AutoGaze.from_pretrained(model_dir(), backend="triton")
