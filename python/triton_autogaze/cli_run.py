"""Command line ``triton-autogaze run VIDEO -o DIR``: decoded clips -> gaze (pipeline) -> rendered videos
(render), metrics.json (metrics) and report.html (report), with a timing split per stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .cli import (CLIError, DEMO_FRAMES, PROG, _checked, _device, _finite, _positive_int, _ratio, _resolve_device,
                  _Source, load_pretrained)

RUN_VIDEOS = {"input | mask | output": "side_by_side.mp4", "mask": "mask.mp4", "output": "output.mp4"}
GIF_NAMES = {"side_by_side.mp4": "side_by_side.gif", "mask.mp4": "mask.gif", "output.mp4": "output.gif"}
STAGES = ("decode", "preprocess", "model", "render", "encode")
WARMUP_CALLS = 2  # --perf-summary: untimed calls of each batch shape (the second captures the CUDA graphs)


_unit = _checked(float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]", "in [0, 1]")


def add_run_parser(sub: Any) -> None:
    from .render import BLEND_ALPHA, KEYFRAME_DURATION, VISUALIZATIONS
    from .tiling import DEFAULT_MODE, MODES

    run = sub.add_parser(
        "run", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="gaze a video and write rendered videos, metrics.json and report.html",
        description="Decode VIDEO clip by clip, gaze each clip, render the gazed cells (mask image plus a "
                    "full-blend or interframe output) and write side_by_side.mp4 (input | mask | output), "
                    "mask.mp4, output.mp4, optional GIFs, metrics.json and a self-contained report.html into DIR.",
        epilog=f"example: {PROG} run --demo -o out --gif")
    run.add_argument("video", nargs="?", metavar="VIDEO", help="video file (anything FFmpeg decodes); "
                     "required unless --demo is given")
    run.add_argument("--output", "-o", default=None, metavar="DIR",
                     help="output folder, created if missing (required unless --perf-summary)")
    run.add_argument("--model", "-m", default="demo", metavar="PATH_OR_HUB_ID",
                     help="checkpoint folder, Hugging Face hub id, or 'demo' for untrained demo weights")
    run.add_argument("--demo", action="store_true",
                     help=f"ignore VIDEO and use a synthetic {DEMO_FRAMES}-frame 224x224 moving-shapes clip")
    run.add_argument("--mode", choices=MODES, default=DEFAULT_MODE,
                     help="resize-224: one 224 input; anyres-tile-224: resize up to a grid of 224 tiles; "
                          "tiled-full-resolution: 224 tiles of the source pixels")
    run.add_argument("--visualization", choices=VISUALIZATIONS, default="full-blend",
                     help="full-blend: mask blended over each frame; interframe: refresh only gazed cells, "
                          "keep the previous output elsewhere")
    run.add_argument("--keyframe-duration", type=_positive_int, default=KEYFRAME_DURATION, metavar="N",
                     help="interframe: a full keyframe every N frames")
    run.add_argument("--blend-alpha", type=_unit, default=BLEND_ALPHA,
                     help="full-blend: weight of the mask colour, in [0, 1]")
    run.add_argument("--gazing-ratio", type=_ratio, default=0.75,
                     help="gaze budget per frame (and tile) as a share of its 265 patches, in (0, 1]")
    run.add_argument("--task-loss-requirement", type=_finite, default=None, metavar="TAU",
                     help="stop gazing at a frame once the predicted task loss is <= TAU (NVIDIA's checkpoint "
                          "uses 0.7); when omitted every frame uses its full budget (default: %(default)s)")
    run.add_argument("--max-gaze-tokens-each-frame", type=_positive_int, default=None, metavar="N",
                     help="hard cap on gazes per frame and tile (default: %(default)s, no cap)")
    run.add_argument("--tile-batch-size", type=_positive_int, default=None, metavar="N",
                     help="tiles gazed together (bounds memory; never changes the gaze; default: every tile of a "
                          "clip on a GPU, up to 64 and what its memory holds, 8 on the CPU)")
    run.add_argument("--frames-per-clip", type=_positive_int, default=16, metavar="N",
                     help="frames per clip (a fresh gaze context each clip); the model was trained on 16")
    run.add_argument("--clips-per-call", type=_positive_int, default=None, metavar="N",
                     help="consecutive clips gazed by one model call, as rows (the same result as one at a time; "
                          "faster on a GPU). Default: on a GPU as many clips as the automatic tile bound holds, "
                          "up to 8 (1080p: 1), on the CPU 1")
    run.add_argument("--max-frames", type=_positive_int, default=None, metavar="N",
                     help="process at most N frames (default: %(default)s, every frame)")
    run.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N "
                     "(auto: cuda when available); rendering runs on the same device")
    run.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto",
                     help="auto: triton on CUDA (model and rendering), torch otherwise")
    run.add_argument("--gif", action="store_true", help="also write side_by_side.gif, mask.gif and output.gif")
    run.add_argument("--gif-width", type=_positive_int, default=480, metavar="PX",
                     help="GIFs wider than this are scaled down to it")
    run.add_argument("--perf-summary", type=_positive_int, default=None, metavar="N",
                     help="time N frames of a static source (the first frame repeated; each batch shape first "
                          "runs twice untimed: compiles, then CUDA-graph capture), write nothing and print only a "
                          "JSON timing summary (default: %(default)s)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")


class _Timer:
    """Seconds per stage; on CUDA each stage ends with a synchronize so asynchronous work is charged to it.
    A stage entered inside another (preprocessing inside the pipeline call) is taken out of the outer one."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.seconds = {k: 0.0 for k in STAGES}
        self._inner: list[float] = []  # per open stage: seconds spent in stages nested in it

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def stage(self, name: str):
        import contextlib
        import time

        @contextlib.contextmanager
        def timed():
            t0 = time.perf_counter()
            self._inner.append(0.0)
            try:
                yield
            finally:
                self.sync()
                elapsed = time.perf_counter() - t0
                self.seconds[name] += elapsed - self._inner.pop()
                if self._inner:
                    self._inner[-1] += elapsed
        return timed()

    def summary(self, frames: int) -> dict:
        total = sum(self.seconds.values())
        return {**{f"{k}_s": v for k, v in self.seconds.items()}, "total_s": total, "frames": frames,
                "ms_per_frame": {k: 1e3 * v / max(frames, 1) for k, v in self.seconds.items()},
                "fps": frames / total if total > 0 else None,
                "render_over_model": self.seconds["render"] / self.seconds["model"] if self.seconds["model"] else None}


def _load_pipeline(model: str, device: str, backend: str, timer: _Timer) -> Any:
    """AutoGazePipeline whose preprocessing (resize / tile cutting, in packed_tiles) is charged to "preprocess"
    rather than "model"."""
    from .pipeline import AutoGazePipeline

    class TimedPipeline(AutoGazePipeline):
        def packed_tiles(self, frames, grid):
            with timer.stage("preprocess"):
                inner = super().packed_tiles(frames, grid)

            def tiles_of(tiles):
                with timer.stage("preprocess"):
                    return inner(tiles)
            return tiles_of

    return load_pretrained(TimedPipeline, model, device, backend)


class _VideoSink:
    """Streams uint8 [T, H, W, 3] chunks into one H.264 (else MPEG-4) yuv420p file; odd sizes are padded by
    one replicated edge pixel, as video.write_video does."""

    def __init__(self, path: Path, fps: float, crf: int = 20):
        from fractions import Fraction

        from .video import _require_av

        self.av = _require_av()
        self.path, self.fps, self.crf = path, Fraction(fps).limit_denominator(1001), crf
        self.container = self.stream = None

    def write(self, frames: np.ndarray) -> None:
        av = self.av
        _, h, w, _ = frames.shape
        if h % 2 or w % 2:
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self.container is None:
            self.container = av.open(str(self.path), mode="w")
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=self.fps)
            self.stream.width, self.stream.height = frames.shape[2], frames.shape[1]
            self.stream.pix_fmt = "yuv420p"
            if codec == "libx264":  # veryfast: ~3x the speed of the default preset, files ~20% larger
                self.stream.options = {"crf": str(self.crf), "preset": "veryfast"}
            else:
                self.stream.bit_rate = max(int(frames.shape[1] * frames.shape[2] * float(self.fps) * 0.5), 200_000)
        for rgb in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None


class _GifSink:
    """Collects frames scaled to at most ``max_width`` px wide and writes a looping GIF on close."""

    def __init__(self, path: Path, fps: float, max_width: int):
        try:
            import PIL  # noqa: F401
        except ImportError:
            raise CLIError("--gif needs Pillow: pip install 'triton_autogaze[video]'") from None
        self.path, self.fps, self.max_width, self.frames = path, fps, max_width, []

    def write(self, frames: np.ndarray) -> None:
        from PIL import Image

        for rgb in frames:
            im = Image.fromarray(np.ascontiguousarray(rgb))
            if im.width > self.max_width:  # NEAREST keeps the mask cells crisp and the palette small
                im = im.resize((self.max_width, max(1, round(im.height * self.max_width / im.width))),
                               Image.Resampling.NEAREST)
            self.frames.append(im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))

    def close(self) -> None:
        if self.frames:
            self.frames[0].save(self.path, save_all=True, append_images=self.frames[1:], loop=0, optimize=True,
                                duration=max(20, round(1000 / self.fps)), disposal=1)
            self.frames = []


def _static_lengths(n: int, clip_len: int) -> list[int]:
    """--perf-summary: the lengths of the clips n frames are cut into."""
    return [min(clip_len, n - s) for s in range(0, n, clip_len)]


def _static_clips(first: np.ndarray, n: int, clip_len: int) -> Iterator[np.ndarray]:
    """--perf-summary: ``first`` (uint8 [1, H, W, 3]) repeated n times, in clips of clip_len."""
    for k in _static_lengths(n, clip_len):
        yield np.repeat(first, k, axis=0)


def _settings(args: argparse.Namespace, device: str, pipeline: Any, render_backend: str,
              clips_per_call: int | None) -> dict:
    from .metrics import EMA_ALPHA
    from .render import RenderSettings

    r = RenderSettings(args.visualization, args.blend_alpha, args.keyframe_duration)
    return {"mode": args.mode, "visualization": args.visualization, "keyframe_duration": args.keyframe_duration,
            "blend_alpha": args.blend_alpha, "gazing_ratio": args.gazing_ratio,
            "task_loss_requirement": args.task_loss_requirement,
            "max_gaze_tokens_each_frame": args.max_gaze_tokens_each_frame, "tile_batch_size": args.tile_batch_size,
            "frames_per_clip": args.frames_per_clip, "clips_per_call": clips_per_call, "max_frames": args.max_frames,
            "device": device,
            "backend": pipeline.model.backend, "render_backend": render_backend, "ema_alpha": EMA_ALPHA,
            "palette": [list(c) for c in r.palette]}


def run_run(args: argparse.Namespace) -> dict:
    """Run the ``run`` command: writes the outputs into args.output (a temporary folder for --perf-summary)
    and returns the metrics.json document."""
    import tempfile

    import torch
    from tqdm import tqdm

    from .metrics import RunMetrics, frame_metrics
    from .pipeline import batches_of
    from .render import RenderSettings, Renderer, scale_grids, side_by_side_buffer
    from .report import write_report
    from .video import _require_av

    perf = args.perf_summary is not None
    if not args.demo and args.video is None:
        raise CLIError("VIDEO is required (or pass --demo to use a synthetic clip)")
    if args.demo and args.video is not None:
        print(f"{PROG}: --demo given, ignoring VIDEO {args.video}", file=sys.stderr)
    if args.output is None and not perf:
        raise CLIError("--output DIR is required (the folder the videos, metrics.json and report.html go to)")
    if args.output is not None and Path(args.output).exists() and not Path(args.output).is_dir():
        raise CLIError(f"--output {args.output} is a file; give a folder")
    device = _resolve_device(args.device)
    timer = _Timer(device)
    source = _Source(None if args.demo else args.video, args.demo, None if perf else args.max_frames)
    tmp = tempfile.TemporaryDirectory(prefix="autogaze-perf-") if perf else None
    out_dir = Path(tmp.name if perf else args.output)
    render_backend = "torch" if args.backend == "torch" or not device.startswith("cuda") else "triton"
    settings = RenderSettings(args.visualization, args.blend_alpha, args.keyframe_duration)
    sinks = []
    try:
        pipeline = _load_pipeline(args.model, device, args.backend, timer)
        try:  # every run writes videos (--perf-summary too, into a temporary folder): say so before any work
            _require_av()
        except ImportError as e:
            raise CLIError(str(e)) from None
        try:  # only once the model loaded: a bad --model leaves no empty folder behind
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CLIError(f"cannot create {out_dir}: {e}") from e
        renderer = Renderer(settings, backend=render_backend)
        run_metrics = RunMetrics(tuple(pipeline.model.config.grid_sizes))
        fps = source.fps or 25.0
        for name in RUN_VIDEOS.values():
            sinks.append(_VideoSink(out_dir / name, fps))
            if args.gif and not perf:
                sinks.append(_GifSink(out_dir / GIF_NAMES[name], fps, args.gif_width))
        opts = dict(mode=args.mode, gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement,
                    max_gaze_tokens_each_frame=args.max_gaze_tokens_each_frame,
                    tile_batch_size=args.tile_batch_size)
        per_call = args.clips_per_call

        def clips_per_call(shape: tuple) -> int:  # the first clip's [T, H, W, 3] sets the default
            nonlocal per_call
            if per_call is None:
                try:
                    per_call = pipeline.auto_clips_per_call(shape, args.mode)
                except ValueError as e:
                    raise CLIError(str(e)) from e
            return per_call

        def gaze(held: list[torch.Tensor]) -> list:
            try:
                return pipeline.trace_rgba_clips(held, clips_per_call=len(held), **opts)
            except ValueError as e:
                raise CLIError(str(e)) from e

        def render_clip(with_renderer: Renderer, frames: torch.Tensor, trace: Any, first_frame: int):
            """One clip's side-by-side buffer [T, H, 3W, 3] and its per-frame metrics (the timed path and the
            perf summary's warm-up alike)."""
            T, H, W = frames.shape[:3]
            sbs = side_by_side_buffer(T, H, W, frames.device)
            rendered = with_renderer.render(frames, trace, sbs)
            return sbs, frame_metrics(rendered, scale_grids(trace), first_frame, args.visualization)

        if perf:
            with timer.stage("decode"):
                first = next(source.clips(1), None)
            if first is None:
                raise CLIError(f"{source.name}: no frames decoded")
            # warm-up, then the clock starts afresh: every batch of clip lengths the run will take goes through the
            # timed path's model call, rendering and metrics WARMUP_CALLS times (Triton compiles on the first call;
            # the engine and the encoder capture their CUDA graphs on a shape's second call and replay from the
            # third, which is what a long run's clips see)
            n, t = args.perf_summary, args.frames_per_clip
            per = clips_per_call((t, *first.shape[1:]))
            for batch in dict.fromkeys(tuple(b) for b in batches_of(_static_lengths(n, t), per, lambda k: k)):
                held = [torch.from_numpy(np.repeat(first[:1], k, axis=0)).to(device) for k in batch]
                warm_renderer = Renderer(settings, backend=render_backend)
                for _ in range(WARMUP_CALLS):
                    for frames, trace in zip(held, gaze(held)):
                        render_clip(warm_renderer, frames, trace, 0)
            timer.seconds = {k: 0.0 for k in STAGES}
            clips = _static_clips(first[:1], n, t)
        else:
            clips = source.clips(args.frames_per_clip)
        batches = batches_of(clips, lambda c: clips_per_call(c.shape), lambda c: c.shape)  # decoded lazily
        tiling, n_frames, W = None, 0, source.width
        with tqdm(total=args.perf_summary if perf else source.total, unit="frame", desc="run", file=sys.stderr,
                  disable=args.no_progress or perf, dynamic_ncols=True) as bar:
            while True:
                with timer.stage("decode"):
                    held = next(batches, None)
                if held is None:
                    break
                with timer.stage("preprocess"):
                    held = [torch.from_numpy(clip).to(device) for clip in held]  # uint8 [T, H, W, 3] each
                with timer.stage("model"):
                    traces = gaze(held)
                for frames, trace in zip(held, traces):
                    T, W = frames.shape[0], frames.shape[2]
                    with timer.stage("render"):
                        sbs, metrics = render_clip(renderer, frames, trace, n_frames)
                        run_metrics.add(metrics)
                    with timer.stage("encode"):
                        host = sbs.cpu().numpy()  # [T, H, 3W, 3]
                        for sink in sinks:
                            name = sink.path.name.rsplit(".", 1)[0]
                            sink.write(host if name == "side_by_side" else
                                       host[:, :, W:2 * W] if name == "mask" else host[:, :, 2 * W:])
                    tiling = tiling or (trace.tiling.to_dict() if trace.tiling is not None else None)
                    n_frames += T
                    bar.update(T)
        with timer.stage("encode"):
            for sink in sinks:
                sink.close()
    finally:
        source.close()
    if n_frames == 0:
        raise CLIError(f"{source.name}: no frames decoded")
    run_settings = _settings(args, device, pipeline, render_backend, per_call)
    doc = {"model": args.model, "video": source.name, "settings": run_settings,
           "num_frames": n_frames, "height": int(source.height), "width": int(source.width), "fps": source.fps,
           "tiling": tiling, "frames": run_metrics.frames, "histogram": run_metrics.histogram(),
           "summary": run_metrics.summary(), "timing": timer.summary(n_frames)}
    if perf:
        tmp.cleanup()
        return doc
    doc["outputs"] = {"videos": list(RUN_VIDEOS.values()),
                      "gifs": list(GIF_NAMES.values()) if args.gif else [], "metrics": "metrics.json",
                      "report": "report.html"}
    try:
        (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1) + "\n")
        write_report(out_dir / "report.html", doc, RUN_VIDEOS)
    except OSError as e:
        raise CLIError(f"cannot write into {out_dir}: {e}") from e
    return doc


def _perf_json(doc: dict) -> dict:
    s = doc["settings"]
    return {"frames": doc["num_frames"], "height": doc["height"], "width": doc["width"], "mode": s["mode"],
            "visualization": s["visualization"], "device": s["device"], "backend": s["backend"],
            "render_backend": s["render_backend"], "clips_per_call": s["clips_per_call"], "tiling": doc["tiling"],
            "warmup": f"{WARMUP_CALLS} untimed model calls per batch shape (compiles, then CUDA-graph capture)",
            "timing": doc["timing"]}


def main_run(args: argparse.Namespace) -> int:
    doc = run_run(args)
    if args.perf_summary is not None:
        sys.stdout.write(json.dumps(_perf_json(doc)) + "\n")
        return 0
    m = doc["summary"]["mean"]
    psnr = "identical" if m["psnr_db"] is None else f"{m['psnr_db']:.1f} dB"
    print(f"{PROG}: wrote {args.output}: {doc['num_frames']} frames, mask ratio {100 * m['mask_ratio']:.1f}%, "
          f"update ratio {100 * m['update_ratio']:.1f}%, PSNR {psnr} (means); open "
          f"{Path(args.output) / 'report.html'}", file=sys.stderr)
    return 0
