"""Command line: ``trace`` end to end in-process (demo model, tiny clips), error exits and --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from triton_autogaze.cli import main
from triton_autogaze.demo import synthesize_clip, write_demo_checkpoint

FAST = ["--gazing-ratio", "0.04", "--no-progress"]  # 10 gazes (one decoder step) a frame keeps CPU runs short


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_demo_trace_json(tmp_path, capsys):
    out = tmp_path / "sub" / "trace.json"
    code, _, err = run(capsys, "trace", "--demo", "--model", "demo", "-o", out, "--max-frames", "4",
                       "--frames-per-clip", "3", *FAST)
    assert code == 0, err
    assert "untrained" in err
    doc = json.loads(out.read_text())
    assert doc["model"] == "demo" and doc["video"] == "demo:moving-shapes"
    assert doc["num_frames"] == 4 and (doc["height"], doc["width"]) == (224, 224)
    s = doc["settings"]
    assert s["gazing_ratio"] == 0.04 and s["task_loss_requirement"] is None and s["frames_per_clip"] == 3
    gpu = torch.cuda.is_available()  # the CLI's auto device and backend
    assert s["device"].startswith("cuda" if gpu else "cpu") and s["backend"] == ("triton" if gpu else "torch")
    assert [c["frame_offset"] for c in doc["clips"]] == [0, 3]
    assert [c["num_frames"] for c in doc["clips"]] == [3, 1]
    assert [c["num_gazing_each_frame"] for c in doc["clips"]] == [[10] * 3, [10]]
    assert [f["frame"] for f in doc["frames"]] == [0, 1, 2, 3]
    for entry in doc["frames"]:
        fx = entry["fixations"]
        assert entry["num_fixations"] == len(fx) == 10
        assert all(f["frame"] == entry["frame"] for f in fx)  # global frame index
        assert len({f["token_id"] for f in fx}) == 10
        for f in fx:
            x0, y0, x1, y1 = f["rect"]
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
            assert f["grid_size"] in (2, 4, 7, 14)
    # the last clip's only frame is global frame 3, local frame 0
    last = doc["clips"][1]["sequences"][0]["frames"][0]["fixations"]
    assert [f["token_id"] for f in last] == [f["token_id"] for f in doc["frames"][3]["fixations"]]


def test_clips_per_call_gives_the_same_document(tmp_path, capsys):
    """--clips-per-call: clips of one length share a model call (as rows); the document is the same as one clip a
    call (confidences within float rounding) but for the setting itself, a shorter last clip running alone."""
    docs = []
    for n in (1, 3, None):
        out = tmp_path / f"t{n}.json"
        per_call = [] if n is None else ["--clips-per-call", n]
        code, _, err = run(capsys, "trace", "--demo", "--model", "demo", "-o", out, "--max-frames", "7",
                           "--frames-per-clip", "2", "--task-loss-requirement", "-2.5", *per_call, *FAST)
        assert code == 0, err
        docs.append(json.loads(out.read_text()))
    a, b, auto = docs
    assert a["settings"].pop("clips_per_call") == 1 and b["settings"].pop("clips_per_call") == 3
    # the default: 8 clips a call on a GPU, 1 on the CPU (the setting records what ran)
    assert auto["settings"].pop("clips_per_call") == (8 if auto["settings"]["device"].startswith("cuda") else 1)
    assert [c["frame_offset"] for c in b["clips"]] == [0, 2, 4, 6]

    def same(x, y, key=""):  # confidences within float rounding (batched encoding moves the last bits)
        if isinstance(x, dict):
            assert x.keys() == y.keys(), key
            for k in x:
                same(x[k], y[k], k)
        elif isinstance(x, list):
            assert len(x) == len(y), key
            for u, v in zip(x, y):
                same(u, v, key)
        elif key == "confidence":
            assert x == pytest.approx(y, abs=1e-6)
        else:
            assert x == y, key

    same(a, b)
    same(a, auto)


def test_video_file_with_checkpoint_folder(tmp_path, capsys):
    pytest.importorskip("av")
    from triton_autogaze.video import write_video

    video = write_video(tmp_path / "in.mp4", synthesize_clip(5, 64, 80), fps=10)
    ckpt = write_demo_checkpoint(tmp_path / "ckpt")
    code, out, err = run(capsys, "trace", video, "--model", ckpt, "-o", "-", "--frames-per-clip", "2",
                         "--task-loss-requirement", "0.7", *FAST)
    assert code == 0, err
    assert "untrained" not in err
    doc = json.loads(out)
    assert doc["video"] == str(video) and doc["num_frames"] == 5 and doc["fps"] == pytest.approx(10)
    assert (doc["height"], doc["width"]) == (64, 80)
    assert [c["frame_offset"] for c in doc["clips"]] == [0, 2, 4]
    assert doc["settings"]["task_loss_requirement"] == 0.7
    assert all(1 <= f["num_fixations"] <= 10 for f in doc["frames"])


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_video(tmp_path, capsys):
    missing = tmp_path / "missing.mp4"
    code, _, err = run(capsys, "trace", missing, "--model", "demo", "-o", tmp_path / "t.json")
    assert_one_line_error(code, err, "not found", "missing.mp4")
    assert not (tmp_path / "t.json").exists()


def test_without_pyav(tmp_path, capsys, monkeypatch):
    """PyAV is an extra: without it a missing video is still reported as missing, and an existing one gets a one-line
    error that says what to install (the lent GPU host had no PyAV; these paths failed there in session 20)."""
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ModuleNotFoundError
    code, _, err = run(capsys, "trace", tmp_path / "missing.mp4", "--model", "demo", "-o", tmp_path / "t.json")
    assert_one_line_error(code, err, "not found", "missing.mp4")
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not checked before PyAV")
    code, _, err = run(capsys, "trace", video, "--model", "demo", "-o", tmp_path / "t.json")
    assert_one_line_error(code, err, "PyAV", "triton_autogaze[video]")
    code, _, err = run(capsys, "run", "--demo", "-o", tmp_path / "out", *FAST)  # run writes videos
    assert_one_line_error(code, "\n".join(ln for ln in err.splitlines() if "untrained" not in ln), "PyAV")
    assert not (tmp_path / "out").exists()  # it stopped before the output folder was made


def test_unreadable_video(tmp_path, capsys):
    pytest.importorskip("av")
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00 definitely not a video " * 100)
    code, _, err = run(capsys, "trace", bad, "--model", "demo", "-o", tmp_path / "t.json")
    assert_one_line_error(code, err, "garbage.mp4")


def test_bad_model_path(tmp_path, capsys):
    code, _, err = run(capsys, "trace", "--demo", "--model", tmp_path / "no_such_ckpt", "-o", tmp_path / "t.json")
    assert_one_line_error(code, err, "--model", "no_such_ckpt")
    code, _, err = run(capsys, "trace", "--demo", "--model", tmp_path, "-o", tmp_path / "t.json")
    assert_one_line_error(code, err, "config.json")


@pytest.mark.parametrize("argv,needle", [
    (["--gazing-ratio", "1.5"], "--gazing-ratio"),
    (["--gazing-ratio", "0"], "--gazing-ratio"),
    (["--frames-per-clip", "0"], "--frames-per-clip"),
    (["--max-frames", "-3"], "--max-frames"),
    (["--task-loss-requirement", "nan"], "--task-loss-requirement"),
    (["--device", "tpu"], "--device"),
    (["--backend", "jax"], "--backend"),
])
def test_bad_argument_values(tmp_path, capsys, argv, needle):
    code, _, err = run(capsys, "trace", "--demo", "--model", "demo", "-o", tmp_path / "t.json", *argv)
    assert_one_line_error(code, err, needle)


def test_video_required_without_demo(capsys):
    code, _, err = run(capsys, "trace", "--model", "demo")
    assert_one_line_error(code, err, "VIDEO", "--demo")


def test_help_lists_every_flag_with_default(capsys):
    code, out, _ = run(capsys, "trace", "--help")
    assert code == 0
    for flag in ("--model", "--output", "--demo", "--device", "--backend", "--gazing-ratio",
                 "--task-loss-requirement", "--frames-per-clip", "--clips-per-call", "--max-frames", "--no-progress"):
        assert flag in out
    for default in ("(default: 0.75)", "(default: 16)", "(default: auto)", "(default: trace.json)"):
        assert default in " ".join(out.split()), default


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "triton_autogaze", "--help"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and "trace" in res.stdout
