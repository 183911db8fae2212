"""Command line: ``triton-autogaze trace VIDEO --model PATH_OR_HUB_ID -o trace.json`` and
``triton-autogaze run VIDEO -o DIR``: a video file (or the synthetic demo clip) -> decoded clips -> gaze ->
one JSON trace (trace), or rendered videos, metrics.json and report.html (run).
"""
# The ``run`` subcommand lives in cli_run.py; both share the argument types, source/model loading and the
# one-line error handling here.

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

PROG = "triton-autogaze"
DEMO_FRAMES = 16


class CLIError(Exception):
    """An expected failure (bad input, bad model path, bad value): reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _checked(parse: Callable[[str], Any], ok: Callable[[Any], bool], expected: str, rule: str) -> Callable[[str], Any]:
    """An argparse type: ``parse(text)`` (int or float) that also satisfies ``ok``; its errors say what was
    expected (``expected`` when the text does not parse, ``rule`` when the value breaks it)."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):  # comparisons with NaN are False: NaN breaks every range rule
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value
    return convert


_ratio = _checked(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]", "in (0, 1]")
_finite = _checked(float, math.isfinite, "a number", "finite")
_positive_int = _checked(int, lambda v: v >= 1, "a positive integer", ">= 1")


def _device(text: str) -> str:
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Fast AutoGaze inference: which video patches to look at.",
                     epilog=f"example: {PROG} trace --demo --model demo -o trace.json",
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    trace = sub.add_parser(
        "trace", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="write the gaze trace of a video as JSON",
        description="Decode VIDEO, cut it into clips, run AutoGaze on each clip (a fresh context per clip) and "
                    "write every frame's fixations (multi-scale cells with rectangles normalised to the frame) "
                    "to one JSON file.",
    )
    trace.add_argument("video", nargs="?", metavar="VIDEO", help="video file (anything FFmpeg decodes); "
                       "required unless --demo is given")
    trace.add_argument("--model", "-m", required=True, default=argparse.SUPPRESS, metavar="PATH_OR_HUB_ID",
                       help="required: checkpoint folder (config.json, model.safetensors, "
                            "preprocessor_config.json), a Hugging Face hub id (needs the hub extra), or 'demo' "
                            "for untrained demo weights")
    trace.add_argument("--output", "-o", default="trace.json", metavar="PATH", help="output JSON ('-' for stdout)")
    trace.add_argument("--demo", action="store_true",
                       help=f"ignore VIDEO and trace a synthetic {DEMO_FRAMES}-frame 224x224 moving-shapes clip")
    trace.add_argument("--device", type=_device, default="auto", help="auto, cpu, cuda or cuda:N "
                       "(auto: cuda when available)")
    trace.add_argument("--backend", choices=("auto", "torch", "triton"), default="auto",
                       help="auto: triton on CUDA, the torch reference otherwise")
    trace.add_argument("--gazing-ratio", type=_ratio, default=0.75,
                       help="gaze budget per frame as a share of its 265 patches, in (0, 1]")
    trace.add_argument("--task-loss-requirement", type=_finite, default=None, metavar="TAU",
                       help="stop gazing at a frame once the model predicts a task loss <= TAU, so easy frames "
                            "get fewer patches (NVIDIA's checkpoint uses 0.7); when omitted every frame uses its "
                            "full --gazing-ratio budget (default: %(default)s)")
    trace.add_argument("--frames-per-clip", type=_positive_int, default=16,
                       help="frames per clip; the model was trained on 16; the last clip may be shorter")
    trace.add_argument("--clips-per-call", type=_positive_int, default=None,
                       help="consecutive clips of one length gazed by one model call, as rows (the same result as "
                            "one at a time; faster on a GPU, memory for that many clips) (default: 8 on a GPU, "
                            "1 on the CPU)")
    trace.add_argument("--max-frames", type=_positive_int, default=None,
                       help="trace at most this many frames (default: %(default)s, every frame)")
    trace.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from .cli_run import add_run_parser

    add_run_parser(sub)
    return parser


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: no CUDA device is available (use --device cpu)")
    return device


def load_pretrained(cls: Any, model: str, device: str, backend: str) -> Any:
    """``cls.from_pretrained`` for the CLI: warns about demo weights and turns loading errors into CLIError."""
    from .checkpoint import CheckpointError
    from .config import ConfigError

    if model == "demo" and not Path("demo").exists():
        print(f"{PROG}: --model demo: untrained demo weights (NVIDIA architecture, seeded random values); "
              "the fixations are not meaningful", file=sys.stderr)
    try:
        return cls.from_pretrained(model, device=device, backend=backend)
    except (FileNotFoundError, CheckpointError, ConfigError, ImportError, OSError) as e:
        raise CLIError(f"--model {model}: {e}") from e
    except RuntimeError as e:  # device / backend combinations the model refuses
        raise CLIError(str(e)) from e


def _load_model(model: str, device: str, backend: str) -> Any:
    from .model import AutoGaze

    return load_pretrained(AutoGaze, model, device, backend)


def _processor(model: Any) -> Any:
    from .config import ConfigError
    from .processing import AutoGazeImageProcessor

    folder = getattr(model, "checkpoint_dir", None)
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        try:
            return AutoGazeImageProcessor.from_pretrained(folder)
        except ConfigError as e:
            raise CLIError(str(e)) from e
    return AutoGazeImageProcessor()  # NVIDIA defaults (demo weights, or a folder without the file)


class _Source:
    """Where frames come from: a video file (opened once, decoded clip by clip) or the synthetic clip."""

    def __init__(self, video: str | None, demo: bool, max_frames: int | None):
        self.container = None
        if demo:
            from .demo import synthesize_clip

            n = DEMO_FRAMES if max_frames is None else min(DEMO_FRAMES, max_frames)
            self.frames: np.ndarray | None = synthesize_clip(n)
            self.name, self.fps, self.total = "demo:moving-shapes", 25.0, n
            self.height, self.width = self.frames.shape[1:3]
            return
        from .video import open_video, video_fps

        try:
            self.container = open_video(video)
        except (FileNotFoundError, ValueError, ImportError) as e:
            raise CLIError(str(e)) from e
        stream = self.container.streams.video[0]
        self.frames, self.name, self.fps = None, str(video), video_fps(self.container)
        self.height, self.width = stream.codec_context.height, stream.codec_context.width
        declared = int(stream.frames or 0)  # 0 when the container does not say
        self.total = min(declared, max_frames) if declared and max_frames else (declared or max_frames)
        self.max_frames = max_frames

    def clips(self, clip_len: int) -> Iterator[np.ndarray]:
        """uint8 [t <= clip_len, H, W, 3] clips in order."""
        if self.frames is not None:
            for s in range(0, len(self.frames), clip_len):
                yield self.frames[s:s + clip_len]
            return
        from .video import iter_clips

        it = iter_clips(self.container, clip_len=clip_len, max_frames=self.max_frames)
        while True:
            try:
                clip = next(it)
            except StopIteration:
                return
            except ValueError as e:  # a stream that breaks mid-way
                raise CLIError(str(e)) from e
            yield clip

    def close(self) -> None:
        if self.container is not None:
            self.container.close()


def _frame_entries(trace: Any, offset: int, clip_index: int) -> list[dict]:
    """The clip's per-frame fixations (its one batch row), renumbered to global frame indices."""
    out = []
    for local_t, fixations in enumerate(trace.fixations(0)):
        t = offset + local_t
        dicts = [{**f.to_dict(), "frame": t} for f in fixations]
        out.append({"frame": t, "clip": clip_index, "num_fixations": len(dicts), "fixations": dicts})
    return out


def run_trace(args: argparse.Namespace) -> dict:
    """Run the ``trace`` command; returns the JSON document it writes."""
    import torch
    from tqdm import tqdm

    from .pipeline import batches_of, clips_per_call_cap

    if not args.demo and args.video is None:
        raise CLIError("VIDEO is required (or pass --demo to trace a synthetic clip)")
    if args.demo and args.video is not None:
        print(f"{PROG}: --demo given, ignoring VIDEO {args.video}", file=sys.stderr)
    if args.output != "-" and Path(args.output).is_dir():
        raise CLIError(f"--output {args.output} is a directory; give a file path")
    device = _resolve_device(args.device)
    source = _Source(None if args.demo else args.video, args.demo, args.max_frames)
    try:
        model = _load_model(args.model, device, args.backend)
        processor = _processor(model)
        per_call = args.clips_per_call or clips_per_call_cap(model.device)  # 224 px clips: the cap is the rule
        clips, frames, offset = [], [], 0
        gaze = dict(gazing_ratio=args.gazing_ratio, task_loss_requirement=args.task_loss_requirement)
        pixels = (processor(clip) for clip in source.clips(args.frames_per_clip))  # [t, 3, H', W'] float32
        with tqdm(total=source.total, unit="frame", desc="gaze", file=sys.stderr, disable=args.no_progress,
                  dynamic_ncols=True) as bar:
            for held in batches_of(pixels, per_call, len):  # clips of one length: one model call
                if len(held) == 1:
                    traces = [model.generate(held[0], **gaze)]
                else:
                    traces = model.generate_each(torch.stack(held), **gaze)
                for trace in traces:
                    frames.extend(_frame_entries(trace, offset, len(clips)))
                    clips.append({"clip": len(clips), "frame_offset": offset, **trace.to_dict()})
                    offset += trace.num_frames
                    bar.update(trace.num_frames)
    finally:
        source.close()
    if offset == 0:
        raise CLIError(f"{source.name}: no frames decoded")
    return {
        "model": args.model,
        "video": source.name,
        "settings": {
            "gazing_ratio": args.gazing_ratio,
            "task_loss_requirement": args.task_loss_requirement,
            "frames_per_clip": args.frames_per_clip,
            "clips_per_call": per_call,
            "max_frames": args.max_frames,
            "device": str(model.device),
            "backend": model.backend,
        },
        "num_frames": offset,
        "height": int(source.height),
        "width": int(source.width),
        "fps": source.fps,
        "clips": clips,
        "frames": frames,
    }


def _write(doc: dict, output: str) -> None:
    text = json.dumps(doc)
    if output == "-":
        sys.stdout.write(text + "\n")
        return
    try:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    except OSError as e:
        raise CLIError(f"cannot write {output}: {e}") from e


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``triton-autogaze`` / ``python -m triton_autogaze``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a bad argument (2, message already printed)
        return int(e.code or 0)
    try:
        if args.command == "run":
            from .cli_run import main_run

            return main_run(args)
        doc = run_trace(args)
        _write(doc, args.output)
    except CLIError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    n = [f["num_fixations"] for f in doc["frames"]]
    where = "stdout" if args.output == "-" else args.output
    print(f"{PROG}: wrote {where}: {doc['num_frames']} frames in {len(doc['clips'])} clip(s), "
          f"{sum(n) / len(n):.1f} fixations a frame on average", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
