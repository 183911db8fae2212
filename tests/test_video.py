"""Video I/O through PyAV: write/read round trip, streaming clips, and clear errors for bad files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from triton_autogaze.demo import synthesize_clip  # noqa: E402
from triton_autogaze.video import (iter_clips, iter_frames, open_video, read_video, video_fps,  # noqa: E402
                                   write_video)

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDIA = Path(os.environ.get("AUTOGAZE_SHARED_MEDIA", REPO.parent / "shared" / "media"))


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> tuple[Path, np.ndarray]:
    frames = synthesize_clip(7, 64, 96)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=12), frames


def test_round_trip(clip_file):
    path, frames = clip_file
    out = read_video(path)
    assert out.shape == frames.shape and out.dtype == np.uint8
    # lossy codec, yuv420p chroma subsampling: close, not equal
    assert np.abs(out.astype(np.int16) - frames).mean() < 8
    assert video_fps(path) == pytest.approx(12.0)


@pytest.mark.parametrize("codec", ["mpeg4", None])
def test_odd_size_is_padded_to_even(tmp_path, codec):
    frames = synthesize_clip(3, 63, 65)
    out = read_video(write_video(tmp_path / "odd.mp4", frames, fps=25, codec=codec))
    assert out.shape == (3, 64, 66, 3)
    assert np.abs(out[:, :63, :65].astype(np.int16) - frames).mean() < 8


def test_start_and_max_frames(clip_file):
    path, _ = clip_file
    full = read_video(path)
    assert np.array_equal(read_video(path, max_frames=3), full[:3])
    assert np.array_equal(read_video(path, start=2, max_frames=2), full[2:4])
    assert np.array_equal(read_video(path, start=5), full[5:])
    with pytest.raises(ValueError, match="no frames"):
        read_video(path, start=100)


def test_iter_clips_chunks(clip_file):
    path, _ = clip_file
    full = read_video(path)
    clips = list(iter_clips(path, clip_len=3))
    assert [len(c) for c in clips] == [3, 3, 1]
    assert np.array_equal(np.concatenate(clips), full)
    assert [len(c) for c in iter_clips(path, clip_len=4, max_frames=5)] == [4, 1]
    assert [len(c) for c in iter_clips(path, clip_len=16)] == [7]
    with pytest.raises(ValueError, match="clip_len"):
        next(iter_clips(path, clip_len=0))


def test_container_input_stays_open(clip_file):
    path, _ = clip_file
    container = open_video(path)
    try:
        frames = list(iter_frames(container, max_frames=2))
        assert len(frames) == 2 and frames[0].shape == (64, 96, 3)
        assert video_fps(container) == pytest.approx(12.0)
        next(container.demux(video=0))  # still open: the readers do not close what they did not open
    finally:
        container.close()


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_video(missing)
    with pytest.raises(FileNotFoundError):
        next(iter_clips(missing))


def test_corrupt_file(tmp_path):
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(b"\x00\x01 not a video " * 200)
    with pytest.raises(ValueError, match="garbage.mp4") as err:
        read_video(bad)
    assert isinstance(err.value.__cause__, av.FFmpegError)
    with pytest.raises(ValueError, match="not a video file"):
        read_video(tmp_path)


def test_write_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "a.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=10)
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        write_video(tmp_path / "a.mp4", np.zeros((8, 8, 3), np.uint8), fps=10)
    with pytest.raises(ValueError, match="fps"):
        write_video(tmp_path / "a.mp4", np.zeros((1, 8, 8, 3), np.uint8), fps=0)


def test_missing_pyav_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(FileNotFoundError, match="x.mp4"):  # the path is checked first, PyAV or not
        read_video(tmp_path / "x.mp4")
    (tmp_path / "x.mp4").write_bytes(b"not read without PyAV")
    with pytest.raises(ImportError, match=r"triton_autogaze\[video\]"):
        read_video(tmp_path / "x.mp4")


@pytest.mark.skipif(not (SHARED_MEDIA / "example_input.mp4").is_file(), reason="shared media not present")
def test_shared_example_video():
    path = SHARED_MEDIA / "example_input.mp4"
    frames = read_video(path, max_frames=4)
    assert frames.shape == (4, 448, 448, 3) and frames.dtype == np.uint8
    assert frames.std() > 1  # real content, not a blank frame
    assert video_fps(path) > 0
