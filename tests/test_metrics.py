"""metrics.py: PSNR, per-frame metrics from rendered clips (mask/update ratios, fixations per scale), EMAs,
run summary and histogram, JSON safety."""

from __future__ import annotations

import json
import math

import pytest
import torch

from triton_autogaze.metrics import Ema, RunMetrics, frame_metrics, psnr_db, scale_names
from triton_autogaze.render import RenderedClip


def test_psnr():
    assert psnr_db(0, 10) == math.inf
    assert psnr_db(10 * 255 ** 2, 10) == pytest.approx(0.0)  # MSE = 255^2
    assert psnr_db(30, 3) == pytest.approx(10 * math.log10(255 ** 2 / 10))
    with pytest.raises(ValueError):
        psnr_db(1, 0)


def _clip(T=3, H=4, W=5, covered=(0, 10, 20), sse=(0, 60, 600), key=(True, False, False)):
    z = torch.zeros(T, H, W, 3, dtype=torch.uint8)
    return RenderedClip(z, z, torch.tensor(covered), torch.tensor(sse), torch.tensor(key))


def _masks(T=3):
    m = [torch.zeros(T, g, g, dtype=torch.bool) for g in (2, 4, 7, 14)]
    m[0][1, 0, 0] = True
    m[3][2, :2, :3] = True
    return m


def test_frame_metrics_interframe_and_full_blend():
    fm = frame_metrics(_clip(), _masks(), start_frame=32, visualization="interframe")
    assert [f.frame for f in fm] == [32, 33, 34]
    assert [f.keyframe for f in fm] == [True, False, False]
    assert [f.mask_ratio for f in fm] == [0.0, 0.5, 1.0]
    assert [f.update_ratio for f in fm] == [1.0, 0.5, 1.0]  # keyframe: 1; delta frames: the masked share
    assert fm[0].psnr_db == math.inf and fm[1].psnr_db == pytest.approx(psnr_db(60, 60))
    assert [f.fixations for f in fm] == [(0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 6)]
    blend = frame_metrics(_clip(key=(True,) * 3), _masks(), 0, "full-blend")
    assert all(f.update_ratio == 1.0 for f in blend)


def test_ema():
    e = Ema(0.5)
    assert e.update(math.inf) is None  # non-finite values never seed or move it
    assert e.update(4.0) == 4.0 and e.update(0.0) == 2.0 and e.update(math.inf) == 2.0
    with pytest.raises(ValueError):
        Ema(0.0)


def test_run_metrics_summary_histogram_and_json():
    run = RunMetrics((2, 4, 7, 14), ema_alpha=0.5)
    run.add(frame_metrics(_clip(), _masks(), 0, "interframe"))
    run.add(frame_metrics(_clip(), _masks(), 3, "interframe"))
    assert [f["frame"] for f in run.frames] == list(range(6))
    f1 = run.frames[1]
    assert f1["fixations"] == {"2x2": 1, "4x4": 0, "7x7": 0, "14x14": 0} and f1["num_fixations"] == 1
    assert run.frames[0]["psnr_db"] is None and run.frames[0]["ema"]["psnr_db"] is None  # identical frame
    assert f1["ema"]["mask_ratio"] == pytest.approx(0.25)  # 0 then 0.5 at alpha 0.5
    h = run.histogram()
    assert h["scales"] == scale_names((2, 4, 7, 14)) == ["2x2", "4x4", "7x7", "14x14"]
    assert h["fixations"] == [2, 0, 0, 12] and h["mean_per_frame"] == [2 / 6, 0, 0, 2]
    s = run.summary()
    assert s["num_frames"] == 6 and s["keyframes"] == 2
    assert s["mean"]["mask_ratio"] == pytest.approx(0.5) and s["mean"]["update_ratio"] == pytest.approx(2.5 / 3)
    assert s["mean"]["psnr_db"] == pytest.approx((psnr_db(60, 60) + psnr_db(600, 60)) / 2)
    json.dumps({"frames": run.frames, "summary": s, "histogram": h}, allow_nan=False)  # no inf / NaN leaks
