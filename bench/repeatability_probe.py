"""Is a `triton-autogaze run` repeatable on this machine, stage by stage? (probe)

    python bench/repeatability_probe.py

Session 19 saw `tests/test_cli_run.py::test_clips_per_call_gives_the_same_run` fail on an H100 at its last line
(the two runs' mask.mp4 frames differ) while their metrics.json agree; on the CPU every stage repeats. Prints:
(a) the video sink encoding the same frames three times (bytes, decoded frames); (s) swscale conversions repeated; (b) the pipeline and renderer run
twice on the demo clip without the encoder (ids, side-by-side buffers); (c) the CLI twice, one clip a call
(metrics, decoded mask videos).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

from triton_autogaze.cli import main as cli_main
from triton_autogaze.cli_run import _VideoSink
from triton_autogaze.demo import synthesize_clip
from triton_autogaze.pipeline import AutoGazePipeline
from triton_autogaze.render import Renderer, RenderSettings, side_by_side_buffer


def decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def encoder(d: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (5, 224, 224, 3), dtype=np.uint8)
    frames[2:, 50:150, 50:150] = 200
    paths = []
    for i in range(3):
        sink = _VideoSink(d / f"v{i}.mp4", 25.0)
        sink.write(frames[:2])
        sink.write(frames[2:])
        sink.close()
        paths.append(d / f"v{i}.mp4")
    ref = paths[0].read_bytes(), decoded(paths[0])
    print("(a) encoder: bytes equal", [p.read_bytes() == ref[0] for p in paths],
          "decoded equal", [bool((decoded(p) == ref[1]).all()) for p in paths], flush=True)


def swscale() -> None:
    """PyAV's reformat (swscale, threads=0: one a CPU) both ways the sink and the tests use, 20 times each."""
    img = np.random.default_rng(1).integers(0, 255, (224, 672, 3), dtype=np.uint8)
    for threads in (1, 0):
        to_yuv, to_rgb = set(), set()
        for _ in range(20):
            yuv = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p", threads=threads)
            to_yuv.add(b"".join(bytes(p) for p in yuv.planes))
            to_rgb.add(yuv.to_ndarray(format="rgb24", threads=threads).tobytes())
        print(f"(s) swscale threads={threads}: distinct rgb->yuv {len(to_yuv)}, yuv->rgb {len(to_rgb)} of 20", flush=True)


def pipeline_and_renderer(dev: str) -> None:
    clip = torch.from_numpy(np.ascontiguousarray(synthesize_clip(5, 224, 224))).to(dev)
    runs = []
    for _ in range(2):
        pipe = AutoGazePipeline.from_pretrained("demo", device=dev)
        renderer = Renderer(RenderSettings("interframe", keyframe_duration=3), backend="auto")
        parts = []
        for a in (0, 2, 4):
            part = clip[a:a + 2].contiguous()
            trace = pipe.trace_rgba_clip(part, gazing_ratio=0.04, task_loss_requirement=None)
            sbs = side_by_side_buffer(*part.shape[:3], dev)
            renderer.render(part, trace, sbs)
            parts.append((trace.gazing_pos.cpu(), sbs.cpu()))
        runs.append(parts)
    for k, ((p0, s0), (p1, s1)) in enumerate(zip(*runs)):
        print(f"(b) clip {k}: ids equal {torch.equal(p0, p1)}, side-by-side equal {torch.equal(s0, s1)}, "
              f"mask pane bytes differing {int((s0[:, :, 224:448] != s1[:, :, 224:448]).sum())}", flush=True)


def cli_twice(d: Path) -> None:
    videos, docs = [], []
    for i in range(2):
        out = d / f"o{i}"
        cli_main(["run", "--demo", "-o", str(out), "--max-frames", "5", "--frames-per-clip", "2", "--visualization",
                  "interframe", "--keyframe-duration", "3", "--gazing-ratio", "0.04", "--no-progress",
                  "--clips-per-call", "1"])
        videos.append(decoded(out / "mask.mp4"))
        doc = json.loads((out / "metrics.json").read_text())
        doc.pop("timing")
        docs.append(doc)
    print("(c) two CLI runs: metrics equal", docs[0] == docs[1], "mask videos equal",
          bool((videos[0] == videos[1]).all()), "bytes differing per frame",
          [int((a != b).sum()) for a, b in zip(*videos)], flush=True)


def main() -> None:
    print("av", av.__version__, "libx264" in av.codecs_available, flush=True)
    d = Path(tempfile.mkdtemp())
    encoder(d)
    swscale()
    pipeline_and_renderer("cuda" if torch.cuda.is_available() else "cpu")
    cli_twice(d)


if __name__ == "__main__":
    main()
