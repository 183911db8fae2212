"""Is a `triton-autogaze run` repeatable on this machine, stage by stage? (probe)

    python bench/repeatability_probe.py

Session 19 saw `tests/test_cli_run.py::test_clips_per_call_gives_the_same_run` fail on an H100 at its last line
(the two runs' mask.mp4 frames differ) while their metrics.json agree; on the CPU every stage repeats. Prints:
(a) the video sink encoding the same frames three times (bytes, decoded frames); (s) swscale conversions repeated; (b) the pipeline and renderer run
twice on the demo clip without the encoder (ids, side-by-side buffers); (c) the CLI twice, one clip a call
(metrics, decoded mask videos); (d) the CLI three times, comparing each stage (ids, rendered buffers, the encoder's
inputs and files) and re-encoding run 0's inputs; (e) libx264 option variants encoding the same frames repeatedly.

Session 20 (H100, PyAV 19.0.2): every stage repeats except libx264, which encoded identical inputs to different
files (frame 0 of the decoded mask video differed in 128 bytes in about half of the runs).
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


def cli_stages(d: Path, runs: int = 3) -> None:
    """(d) the CLI several times, recording what each render call saw and wrote: the trace's ids and confidences,
    and the side-by-side buffer handed to the encoder; which stage first differs from run 0."""
    seen, orig = [], Renderer.render

    def spy(self, frames, trace, side_by_side=None, b=0):
        out = orig(self, frames, trace, side_by_side, b)
        sbs = None if side_by_side is None else side_by_side.cpu()
        seen[-1].append((trace.gazing_pos.cpu(), trace.confidence.cpu(), sbs))
        return out

    sink_in, orig_write = [], _VideoSink.write

    def sink_spy(self, frames):
        if self.path.name == "mask.mp4":
            sink_in[-1].append(np.array(frames, copy=True))
        return orig_write(self, frames)

    Renderer.render = spy
    _VideoSink.write = sink_spy
    videos, files = [], []
    try:
        for i in range(runs):
            seen.append([])
            sink_in.append([])
            out = d / f"d{i}"
            cli_main(["run", "--demo", "-o", str(out), "--max-frames", "5", "--frames-per-clip", "2",
                      "--visualization", "interframe", "--keyframe-duration", "3", "--gazing-ratio", "0.04",
                      "--no-progress"])
            videos.append(decoded(out / "mask.mp4"))
            files.append((out / "mask.mp4").read_bytes())
    finally:
        Renderer.render = orig
        _VideoSink.write = orig_write
    for i in range(1, runs):
        for k, ((p0, c0, s0), (p1, c1, s1)) in enumerate(zip(seen[0], seen[i])):
            conf = (torch.equal(c0, c1), float((c0 - c1).abs().max()))
            print(f"(d) run {i} clip {k}: ids equal {torch.equal(p0, p1)}, conf equal/max diff {conf}, "
                  f"side-by-side equal {torch.equal(s0, s1)} (bytes differing {int((s0 != s1).sum())})", flush=True)
            if not torch.equal(p0, p1):
                print("     ids run 0", p0.tolist(), "\n     ids run", i, p1.tolist(), flush=True)
        same_in = all((a == b).all() for a, b in zip(np.concatenate(sink_in[0]), np.concatenate(sink_in[i])))
        print(f"(d) run {i}: mask sink inputs equal {same_in}, mask.mp4 bytes equal {files[0] == files[i]}, decoded "
              f"bytes differing per frame", [int((a != b).sum()) for a, b in zip(videos[0], videos[i])], flush=True)
    # the recorded inputs of run 0, encoded again by fresh sinks: is the encoder alone repeatable on them?
    again = []
    for j in range(3):
        sink = _VideoSink(d / f"again{j}.mp4", 25.0)
        for chunk in sink_in[0]:
            sink.write(chunk)
        sink.close()
        again.append((d / f"again{j}.mp4").read_bytes())
    print("(d) run 0's mask inputs re-encoded 3 times: bytes equal to run 0's file",
          [a == files[0] for a in again], "to each other", [a == again[0] for a in again], flush=True)


def encoder_options(d: Path, repeats: int = 4) -> None:
    """(e) flat-colour frames (as a mask video holds) encoded repeatedly by libx264 under option variants: how
    many distinct files each gives."""
    rng = np.random.default_rng(2)
    frames = np.full((5, 224, 224, 3), 32, np.uint8)
    for t in range(5):
        for _ in range(6):
            y, x, s = (int(v) for v in rng.integers(0, 200, 3))
            frames[t, y:y + s // 4 + 8, x:x + s // 4 + 8] = rng.integers(0, 255, 3)
    variants = {"default": {}, "threads=1": {"threads": "1"}, "sync-lookahead=0": {"x264-params": "sync-lookahead=0"},
                "lookahead-threads=1": {"x264-params": "lookahead-threads=1"},
                "sliced-threads": {"x264-params": "sliced-threads=1"}}
    for name, extra in variants.items():
        outs = set()
        for j in range(repeats):
            with av.open(str(d / "e.mp4"), mode="w") as c:
                st = c.add_stream("libx264", rate=25)
                st.width, st.height, st.pix_fmt = 224, 224, "yuv420p"
                st.options = {"crf": "20", "preset": "veryfast", **extra}
                for rgb in frames:
                    for pkt in st.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                        c.mux(pkt)
                for pkt in st.encode():
                    c.mux(pkt)
            outs.add((d / "e.mp4").read_bytes())
        print(f"(e) libx264 {name}: {len(outs)} distinct files of {repeats}", flush=True)


def main() -> None:
    print("av", av.__version__, "libx264" in av.codecs_available, flush=True)
    d = Path(tempfile.mkdtemp())
    encoder(d)
    swscale()
    pipeline_and_renderer("cuda" if torch.cuda.is_available() else "cpu")
    cli_twice(d)
    cli_stages(d)
    encoder_options(d)


if __name__ == "__main__":
    main()
