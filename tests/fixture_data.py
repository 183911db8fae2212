"""Locating and rebuilding the parity fixtures (SPEC §12): the compact copy in tests/fixtures, and the full
shared set beside the repository when present."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "tests" / "fixtures"
SHARED = Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", REPO.parent / "shared" / "fixtures"))
# Pipeline tests run on the CPU with the torch backend; AUTOGAZE_TEST_DEVICE=cuda reruns them on the GPU path.
PIPELINE_DEVICE = os.environ.get("AUTOGAZE_TEST_DEVICE", "cpu")
PIPELINE_BACKEND = os.environ.get("AUTOGAZE_TEST_BACKEND", "torch" if PIPELINE_DEVICE == "cpu" else "auto")
MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32).view(1, 1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32).view(1, 1, 3, 1, 1)


def shared_available() -> bool:
    return (SHARED / "cases.json").is_file()


def model_dir() -> Path:
    return LOCAL / "model"


def cases(root: Path) -> list[dict]:
    return json.loads((root / "cases.json").read_text())["cases"]


def case_params() -> list:
    """(root, case) pairs: every local case, plus every shared case when ../shared exists."""
    import pytest

    out = [pytest.param(LOCAL, c, id=f"local-{c['name']}") for c in cases(LOCAL)]
    if shared_available():
        out += [pytest.param(SHARED, c, id=f"shared-{c['name']}") for c in cases(SHARED)]
    return out


def load_case(root: Path, case: dict) -> dict[str, torch.Tensor]:
    return load_file(str(root / f"{case['name']}.safetensors"))


def normalise(raw: torch.Tensor) -> torch.Tensor:
    """raw_rgb uint8 [B, T, H, W, 3] -> normalised fp32 [B, T, 3, H, W], as the fixtures were made."""
    x = raw.float().permute(0, 1, 4, 2, 3) / 127.5 - 1
    return (x - MEAN) / STD


def model_input(case: dict, data: dict[str, torch.Tensor]) -> torch.Tensor:
    if case.get("processor"):
        return data["video"]
    x = normalise(data["raw_rgb"])
    if case.get("chunks"):
        nh, nw = case["tile_grid"]
        B, T, C, H, W = x.shape
        x = x.reshape(B, T, C, nh, 224, nw, 224).permute(0, 3, 5, 1, 2, 4, 6).reshape(B * nh * nw, T, C, 224, 224)
    return x


def call_kwargs(case: dict) -> dict:
    kw = {"gazing_ratio": case["gazing_ratio"], "generate_only": True}
    if "task_loss_requirement" in case:
        kw["task_loss_requirement"] = case["task_loss_requirement"]
    if "target_scales" in case:
        kw["target_scales"] = case["target_scales"]
        kw["target_patch_size"] = 16
    return kw


def assert_record_equal(out: dict, pos: torch.Tensor, pad: torch.Tensor, num: torch.Tensor, padded_values: bool = True):
    assert tuple(out["gazing_pos"].shape) == tuple(pos.shape), (out["gazing_pos"].shape, pos.shape)
    assert torch.equal(out["num_gazing_each_frame"].cpu(), num)
    assert torch.equal(out["if_padded_gazing"].cpu().bool(), pad.bool())
    real = ~pad.bool()
    assert torch.equal(out["gazing_pos"].cpu()[real], pos[real])
    if padded_values:
        assert torch.equal(out["gazing_pos"].cpu(), pos)


def random_rgba(T: int, H: int, W: int, seed: int = 0):
    """Random uint8 frames [T, H, W, 4]."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 4), dtype=np.uint8)
