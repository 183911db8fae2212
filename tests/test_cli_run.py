"""``triton-autogaze run`` end to end in-process (demo model, tiny clips, 10 gazes a frame): output files,
metrics.json contents, every --mode, --perf-summary, --help defaults and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from triton_autogaze.cli import main
from triton_autogaze.demo import synthesize_clip

FAST = ["--gazing-ratio", "0.04", "--no-progress"]  # one decoder step a frame keeps CPU runs short


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln and "untrained" not in ln]
    assert code == 2 and len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], lines[0]


def test_demo_run_interframe_writes_everything(tmp_path, capsys):
    av = pytest.importorskip("av")
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "run", "--demo", "-o", out, "--max-frames", "5", "--frames-per-clip", "3",
                            "--visualization", "interframe", "--keyframe-duration", "2", "--gif", *FAST)
    assert code == 0, err
    assert stdout == "" and "report.html" in err
    for name in ("side_by_side.mp4", "mask.mp4", "output.mp4", "side_by_side.gif", "mask.gif", "output.gif",
                 "metrics.json", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with av.open(str(out / "side_by_side.mp4")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (3 * 224, 224)
        assert sum(1 for _ in c.decode(s)) == 5
    doc = json.loads((out / "metrics.json").read_text())
    s = doc["settings"]
    assert (s["mode"], s["visualization"], s["keyframe_duration"], s["gazing_ratio"]) == \
        ("resize-224", "interframe", 2, 0.04)
    gpu = torch.cuda.is_available()  # the CLI's auto device: the GPU renders with the Triton kernel
    assert s["device"].startswith("cuda" if gpu else "cpu") and len(s["palette"]) == 4
    assert s["render_backend"] == ("triton" if gpu else "torch")
    frames = doc["frames"]
    assert [f["frame"] for f in frames] == list(range(5))
    assert [f["keyframe"] for f in frames] == [True, False, True, False, True]  # across the 3 + 2 clips
    for f in frames:
        assert 0 < f["mask_ratio"] <= 1 and f["num_fixations"] == sum(f["fixations"].values()) > 0
        if f["keyframe"]:
            assert f["update_ratio"] == 1.0 and f["psnr_db"] is None  # output = input
        else:
            assert f["update_ratio"] == f["mask_ratio"] and f["psnr_db"] > 0
        assert set(f["ema"]) == {"mask_ratio", "update_ratio", "psnr_db"}
    h = doc["histogram"]
    assert h["scales"] == ["2x2", "4x4", "7x7", "14x14"]
    assert sum(h["fixations"]) == sum(f["num_fixations"] for f in frames)
    t = doc["timing"]
    assert all(t[f"{k}_s"] >= 0 for k in ("decode", "preprocess", "model", "render", "encode"))
    assert t["frames"] == 5 and t["model_s"] > 0
    assert doc["outputs"]["gifs"] == ["side_by_side.gif", "mask.gif", "output.gif"]


@pytest.mark.parametrize("mode", ["resize-224", "anyres-tile-224", "tiled-full-resolution"])
def test_every_mode_on_a_video_file(tmp_path, capsys, mode):
    pytest.importorskip("av")
    from triton_autogaze.video import write_video

    video = write_video(tmp_path / "in.mp4", synthesize_clip(2, 48, 240), fps=10)  # 1 x 2 tiles when tiled
    out = tmp_path / "out"
    code, _, err = run(capsys, "run", video, "-o", out, "--mode", mode, "--tile-batch-size", "1",
                       "--max-gaze-tokens-each-frame", "3", *FAST)
    assert code == 0, err
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["settings"]["mode"] == mode and doc["tiling"]["mode"] == mode
    assert doc["num_frames"] == 2 and (doc["height"], doc["width"], doc["fps"]) == (48, 240, 10)
    tiles = 1 if mode == "resize-224" else 2
    assert doc["tiling"]["tiles"] == [1, tiles]
    assert all(1 <= f["num_fixations"] <= 3 * tiles for f in doc["frames"])  # capped per frame and tile


def test_clips_per_call_gives_the_same_run(tmp_path, capsys, monkeypatch):
    """--clips-per-call: consecutive clips share a model call (as rows); the frames' metrics, the rendered frames
    handed to the video encoder and everything but the setting itself equal the default's (one clip a call on the
    CPU, 8 on a GPU). The frames are compared where the encoder receives them, not decoded from the files:
    libx264 (PyAV 19 on a 16-core H100 host) encoded identical frames to different bytes from one encode to the
    next (bench/repeatability_probe.py, item (d)), so its bitstream is not ours to compare."""
    pytest.importorskip("av")
    from triton_autogaze.cli_run import _VideoSink

    sent, write = {}, _VideoSink.write

    def record(self, frames):
        sent.setdefault(self.path, []).append(np.array(frames, copy=True))
        return write(self, frames)

    monkeypatch.setattr(_VideoSink, "write", record)
    docs = []
    for n in (None, 2):
        out = tmp_path / f"o{n}"
        per_call = [] if n is None else ["--clips-per-call", n]
        code, _, err = run(capsys, "run", "--demo", "-o", out, "--max-frames", "5", "--frames-per-clip", "2",
                           "--visualization", "interframe", "--keyframe-duration", "3", *per_call, *FAST)
        assert code == 0, err
        docs.append(json.loads((out / "metrics.json").read_text()))
    one, two = docs
    auto = 8 if one["settings"]["device"].startswith("cuda") else 1  # the demo's 224 px clips: 1 tile each
    assert one["settings"].pop("clips_per_call") == auto and two["settings"].pop("clips_per_call") == 2
    for doc in docs:
        del doc["timing"]
    assert one == two
    for name in ("side_by_side.mp4", "mask.mp4", "output.mp4"):
        a, b = (np.concatenate(sent[tmp_path / f"o{n}" / name]) for n in (None, 2))
        assert a.shape == b.shape == (5, 224, 3 * 224 if name == "side_by_side.mp4" else 224, 3), name
        assert np.array_equal(a, b), name


def test_perf_summary_prints_only_json(tmp_path, capsys, monkeypatch):
    pytest.importorskip("av")
    from triton_autogaze.cli_run import WARMUP_CALLS
    from triton_autogaze.pipeline import AutoGazePipeline

    monkeypatch.chdir(tmp_path)
    calls = []
    gaze = AutoGazePipeline.trace_rgba_clips
    monkeypatch.setattr(AutoGazePipeline, "trace_rgba_clips",
                        lambda self, clips, **k: calls.append(tuple(len(c) for c in clips)) or gaze(self, clips, **k))
    code, out, err = run(capsys, "run", "--demo", "--perf-summary", "5", "--frames-per-clip", "2",
                         "--clips-per-call", "2", *FAST)
    assert code == 0, err
    # 5 frames in clips of 2: batches (2, 2) and (1,), each warmed up WARMUP_CALLS times (the engine captures its
    # graphs on a shape's second call), then timed once
    assert WARMUP_CALLS == 2
    assert calls == [(2, 2)] * WARMUP_CALLS + [(1,)] * WARMUP_CALLS + [(2, 2), (1,)]
    doc = json.loads(out)  # stdout holds exactly one JSON document
    assert doc["warmup"].startswith("2 untimed model calls per batch shape")
    assert doc["frames"] == 5 and doc["device"].startswith("cuda" if torch.cuda.is_available() else "cpu")
    t = doc["timing"]
    assert set(t["ms_per_frame"]) == {"decode", "preprocess", "model", "render", "encode"}
    assert t["total_s"] > 0 and t["fps"] > 0 and t["render_over_model"] >= 0
    assert not list(tmp_path.iterdir())  # nothing written where we are


def test_help_lists_every_flag_with_default(capsys):
    code, out, _ = run(capsys, "run", "--help")
    assert code == 0
    text = " ".join(out.split())
    for flag in ("--output", "--model", "--demo", "--mode", "--visualization", "--keyframe-duration",
                 "--blend-alpha", "--gazing-ratio", "--task-loss-requirement", "--max-gaze-tokens-each-frame",
                 "--tile-batch-size", "--frames-per-clip", "--clips-per-call", "--max-frames", "--device", "--backend", "--gif",
                 "--gif-width", "--perf-summary", "--no-progress"):
        assert flag in out, flag
    for default in ("(default: demo)", "(default: resize-224)", "(default: full-blend)", "(default: 12)",
                    "(default: 0.55)", "(default: 0.75)", "(default: 16)", "(default: auto)",
                    "(default: None)", "(default: 480)", "(default: False)"):
        assert default in text, default
    code, out, _ = run(capsys, "--help")
    assert "run" in out and "trace" in out


@pytest.mark.parametrize("argv,needle", [
    (["--mode", "crop"], "--mode"),
    (["--visualization", "xor"], "--visualization"),
    (["--keyframe-duration", "0"], "--keyframe-duration"),
    (["--blend-alpha", "2"], "--blend-alpha"),
    (["--tile-batch-size", "0"], "--tile-batch-size"),
    (["--max-gaze-tokens-each-frame", "-1"], "--max-gaze-tokens-each-frame"),
    (["--perf-summary", "0"], "--perf-summary"),
    (["--clips-per-call", "0"], "--clips-per-call"),
])
def test_bad_argument_values(tmp_path, capsys, argv, needle):
    code, _, err = run(capsys, "run", "--demo", "-o", tmp_path / "o", *argv)
    one_line_error(code, err, needle)


def test_usage_errors(tmp_path, capsys):
    code, _, err = run(capsys, "run", "--demo")
    one_line_error(code, err, "--output")
    code, _, err = run(capsys, "run", "-o", tmp_path / "o")
    one_line_error(code, err, "VIDEO", "--demo")
    code, _, err = run(capsys, "run", tmp_path / "missing.mp4", "-o", tmp_path / "o")
    one_line_error(code, err, "not found", "missing.mp4")
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "run", "--demo", "-o", tmp_path / "file")
    one_line_error(code, err, "--output", "folder")
    code, _, err = run(capsys, "run", "--demo", "-o", tmp_path / "o", "--model", tmp_path / "no_ckpt")
    one_line_error(code, err, "--model", "no_ckpt")
    assert not (tmp_path / "o").exists()
