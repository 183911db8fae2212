"""AutoGazePipeline: packed RGB(A) uint8 clips, normalised clips, video files and live frames -> GazeTrace per
clip (or per frame when streaming), in one of the tiling modes; tiles are gazed independently in bounded batches.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from .config import PreprocessorConfig
from .model import AutoGaze, check_video, thresholds
from .record import record_of, record_preparer
from .reference.generate import FrameResult, GenerationOutput, PaddedFrames, row_lens, split_rows
from .tiling import DEFAULT_MODE, TileGrid, affine_lut, check_mode, cut_tiles, plan_tiles, resize_canvas_float, \
    resize_packed
from .trace import GazeTrace
from .upload import HostUploader


AUTO_TILE_BATCH = 64  # the largest tile batch tile_batch_size=None picks on a GPU (see auto_tile_batch)
AUTO_CLIPS_PER_CALL = 8  # the most clips clips_per_call=None puts in one model call (see auto_clips_per_call)
AUTO_CLIPS_BYTES = 512 << 20  # and the most bytes of packed source frames it holds for one call


@dataclass(frozen=True)
class GazeOptions:
    """How a clip is gazed. gazing_ratio: per-frame budget share of the 265 ids, a float or one per frame, in
    (0, 1]; task_loss_requirement: stop threshold (None: budget only); max_gaze_tokens_each_frame: hard cap per
    tile and frame; tile_batch_size: tiles generated together (bounds memory, never changes a tile's gaze; None:
    :meth:`AutoGazePipeline.auto_tile_batch`)."""

    mode: str = DEFAULT_MODE
    gazing_ratio: float | tuple[float, ...] = 0.75
    task_loss_requirement: float | tuple[float, ...] | None = 0.7
    max_gaze_tokens_each_frame: int | None = None
    tile_batch_size: int | None = None

    def __post_init__(self):
        check_mode(self.mode)
        for name in ("gazing_ratio", "task_loss_requirement"):
            v = getattr(self, name)
            if isinstance(v, (list, np.ndarray)) or torch.is_tensor(v):
                object.__setattr__(self, name, tuple(float(x) for x in (v.tolist() if hasattr(v, "tolist") else v)))
        tbs = self.tile_batch_size
        if tbs is not None and (isinstance(tbs, bool) or not isinstance(tbs, (int, np.integer)) or tbs < 1):
            raise ValueError(f"tile_batch_size must be None or an int >= 1, got {tbs!r}")
        cap = self.max_gaze_tokens_each_frame
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 1):
            raise ValueError(f"max_gaze_tokens_each_frame must be None or an int >= 1, got {cap!r}")

    def for_frames(self, start: int, stop: int) -> "GazeOptions":
        """Per-frame settings sliced to frames [start, stop) of a clip_len-periodic schedule."""
        if not isinstance(self.gazing_ratio, tuple) and not isinstance(self.task_loss_requirement, tuple):
            return self  # nothing per frame (a stream pushes this every frame: no re-validation)

        def cut(v):
            return v[start:stop] if isinstance(v, tuple) else v
        return replace(self, gazing_ratio=cut(self.gazing_ratio),
                       task_loss_requirement=cut(self.task_loss_requirement))


def packed_frames(frames: Any, device: torch.device, name: str = "frames",
                  uploader: HostUploader | None = None) -> torch.Tensor:
    """uint8 [T, H, W, 3|4] (or one [H, W, 3|4] frame) numpy array or tensor -> tensor on ``device``
    (large host clips bound for a GPU go through ``uploader``'s pinned stage when one is given)."""
    frames = checked_packed(frames, name)
    if uploader is not None and uploader.device == torch.device(device) and uploader.wanted(frames):
        return uploader(frames)
    return frames.to(device)


def checked_packed(frames: Any, name: str = "frames") -> torch.Tensor:
    """Validate packed frames: uint8 [T, H, W, 3|4] (or one [H, W, 3|4] frame), numpy or tensor -> a uint8
    tensor [T, H, W, C] where it lies (numpy arrays shared, not copied, when contiguous)."""
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise TypeError(f"{name} must be uint8 packed RGB(A), got numpy {frames.dtype}; normalised float clips "
                            "go to trace_clip")
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    elif not torch.is_tensor(frames):
        raise TypeError(f"{name} must be a uint8 numpy array or tensor [T, H, W, 3|4], got {type(frames).__name__}")
    if frames.dtype != torch.uint8:
        raise TypeError(f"{name} must be uint8 packed RGB(A), got {frames.dtype}; normalised float clips go to "
                        "trace_clip")
    if frames.dim() == 3:
        frames = frames[None]
    if frames.dim() != 4 or frames.shape[-1] not in (3, 4):
        raise ValueError(f"{name} must be [T, H, W, 3|4] (or one [H, W, 3|4] frame), got shape {tuple(frames.shape)}")
    if min(frames.shape[:3]) < 1:
        raise ValueError(f"{name} has an empty dimension: shape {tuple(frames.shape)}")
    return frames


def normalised_clip(video: Any, device: torch.device, name: str = "video") -> torch.Tensor:
    """A normalised fp32 clip [T, 3, H, W] or [1, T, 3, H, W] -> [T, 3, H, W] fp32 on ``device``."""
    if torch.is_tensor(video) and video.dtype == torch.uint8:
        raise TypeError(f"{name} is uint8: packed RGB(A) frames go to trace_rgba_clip")
    if torch.is_tensor(video) and video.dim() == 4:
        video = video[None]
    video = check_video(video, name)
    if video.shape[0] != 1:
        raise ValueError(f"{name} holds {video.shape[0]} clips; pass one clip [T, 3, H, W] (nodes.TensorClipInput "
                         "feeds a batch clip by clip)")
    return video[0].to(device, torch.float32)


class AutoGazePipeline:
    """Model + processor settings -> gaze of clips, videos and frame streams in any tiling mode."""

    def __init__(self, model: AutoGaze, processor_config: PreprocessorConfig | None = None):
        self.model = model
        self.processor_config = processor_config or PreprocessorConfig()
        self.lut = affine_lut(self.processor_config).to(model.device)  # [3, 256] fp32: the processor affine
        # host clips bound for a GPU: a pinned stage kept for the pipeline's life (upload.py)
        self.uploader = HostUploader(model.device) if model.device.type == "cuda" else None
        # resize-224: frames fed to one model call this many at a time while a large host clip is still uploading
        # (None: the model starts after the whole upload). 2 since the ordered C++ stage copy (session 10): 1080p
        # RGBA 16 frames end to end 19.51 -> 18.87 ms on an H100, 22.41 -> 20.40 on an H200 (bench/RESULTS.md
        # section 4)
        self.overlap_frames: int | None = 2

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike, device: str | torch.device = "cpu",
                        backend: str = "auto", dtype: torch.dtype = torch.float32,
                        revision: str | None = None) -> "AutoGazePipeline":
        """Load the model (a checkpoint folder, hub id or ``"demo"``) and its ``preprocessor_config.json``."""
        model = AutoGaze.from_pretrained(path_or_hub_id, device=device, backend=backend, dtype=dtype,
                                         revision=revision)
        pre = None
        folder: Path | None = model.checkpoint_dir
        if folder is not None and (folder / "preprocessor_config.json").is_file():
            pre = PreprocessorConfig.from_file(folder / "preprocessor_config.json")
        return cls(model, pre)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def packed(self, frames: Any, name: str = "frames") -> torch.Tensor:
        """Packed uint8 frames (numpy or tensor) on the model device, through the pinned stage when it pays."""
        return packed_frames(frames, self.device, name, self.uploader)

    def plan(self, height: int, width: int, mode: str = DEFAULT_MODE) -> TileGrid:
        """Tile layout of a height x width source frame in ``mode``."""
        pre = self.processor_config
        return plan_tiles(height, width, mode, self.model.config.grid_sizes,
                          shortest_edge=pre.shortest_edge if pre.do_resize else None,
                          tile_size=self.model.config.input_img_size)

    def auto_clips_per_call(self, clip_shape: Sequence[int], mode: str = DEFAULT_MODE) -> int:
        """The clips of packed shape ``clip_shape`` ([T, H, W, C]) one model call takes when ``clips_per_call`` is
        None. On a GPU as many whole clips as the automatic tile bound holds (:meth:`auto_tile_batch`), at most
        AUTO_CLIPS_PER_CALL and AUTO_CLIPS_BYTES of source frames (the call holds every clip's frames): 8 clips of
        a 224 px mode (1080p sources: 5), 2 of 720p's 24 tiles, 1 of 1080p's 45 (H100: the example video's 4 clips
        in one call 74 ms against 94 ms one a call; bench/RESULTS.md). On the CPU 1: batching clips there did not
        pay (2 cores, the same video: 4 clips a call 5% faster at the default stopping, 17% slower at ratio 0.1)."""
        cap = clips_per_call_cap(self.device)
        if cap == 1:
            return 1
        tiles = self.plan(clip_shape[1], clip_shape[2], mode).num_tiles
        by_rows = self.auto_tile_batch(tiles * cap) // tiles
        return max(1, min(cap, by_rows, AUTO_CLIPS_BYTES // max(1, math.prod(clip_shape))))

    def auto_tile_batch(self, num_tiles: int) -> int:
        """The most tiles a model call takes when ``tile_batch_size`` is None (the tiles then go in as few calls as
        that allows, of even size). On a GPU every tile of a clip in one call, up
        to AUTO_TILE_BATCH, and no more rows than a quarter of the device's memory holds KV caches for at the
        longest clip (max_num_frames frames at the full budget): 1080p's 45 tiles run as one batch (2 frames on an
        H100: 23 ms against 45 ms in batches of 8; bench/RESULTS.md). On the CPU 8, the former default (not
        measured there). Depends only on the tile count, device and dtype, so a stream keeps its batches."""
        if self.device.type != "cuda":
            return min(num_tiles, 8)
        cfg = self.model.config
        d = cfg.decoder
        elem = 2 if self.model.dtype == torch.bfloat16 else 4
        keys = cfg.max_num_frames * (cfg.num_tokens + cfg.num_vision_tokens_each_frame + d.num_multi_token_pred)
        per_row = d.num_hidden_layers * 2 * d.hidden_size * elem * keys
        fits = _device_memory(self.device) // 4 // per_row
        return max(1, min(num_tiles, AUTO_TILE_BATCH, fits))

    # ----- one clip ------------------------------------------------------------------------------------------------
    def trace_rgba_clip(self, frames: Any, mode: str = DEFAULT_MODE, gazing_ratio: float | Sequence[float] = 0.75,
                        task_loss_requirement: float | None = 0.7, max_gaze_tokens_each_frame: int | None = None,
                        tile_batch_size: int | None = None) -> GazeTrace:
        """Gaze of one packed clip: uint8 [T, H, W, 4] RGBA (or 3-channel RGB; alpha is ignored), numpy or tensor
        on any device. Returns a GazeTrace with one row per tile (row-major) plus stitched ``scale_masks``."""
        opts = GazeOptions(mode, gazing_ratio, task_loss_requirement, max_gaze_tokens_each_frame, tile_batch_size)
        return self._trace_packed(checked_packed(frames), opts)

    def trace_rgba_clips(self, clips: Sequence[Any], mode: str = DEFAULT_MODE,
                         gazing_ratio: float | Sequence[float] = 0.75, task_loss_requirement: float | None = 0.7,
                         max_gaze_tokens_each_frame: int | None = None, tile_batch_size: int | None = None,
                         clips_per_call: int | None = None) -> list[GazeTrace]:
        """:meth:`trace_rgba_clip` of many packed clips, in order. Consecutive clips of one length and frame size
        share a model call, up to ``clips_per_call`` of them (None: :meth:`auto_clips_per_call` of each batch's
        first clip), their tiles as independent rows: the same traces as one clip at a time, in fewer calls (on
        a GPU several rows a call cost far less than one call each)."""
        opts = GazeOptions(mode, gazing_ratio, task_loss_requirement, max_gaze_tokens_each_frame, tile_batch_size)
        checked = [checked_packed(c, f"clips[{i}]") for i, c in enumerate(clips)]
        limit = (lambda c: self.auto_clips_per_call(c.shape, mode)) if clips_per_call is None else clips_per_call
        return [trace for held in batches_of(checked, limit, lambda c: c.shape[:3])
                for trace in self._trace_packed_clips(held, opts)]

    def _trace_packed(self, frames: torch.Tensor, opts: GazeOptions) -> GazeTrace:
        """A checked packed clip [T, H, W, C] anywhere -> its trace. A large host clip in resize-224 is fed to the
        model ``overlap_frames`` at a time while the rest of it is still uploading."""
        up = self.uploader
        if (self.overlap_frames is not None and opts.mode == "resize-224" and up is not None and up.wanted(frames)
                and frames.shape[0] > self.overlap_frames):
            prep = self._chunk_plan(frames.shape, opts)  # the call's host-side plan before the upload starts
            with up.staged(frames) as staged:
                return self._run_chunks(staged.out, opts, prep, self.overlap_frames, staged.wait)
        return self.run_packed(self.packed(frames), opts)

    def trace_clip(self, video: torch.Tensor, mode: str = DEFAULT_MODE, gazing_ratio: float | Sequence[float] = 0.75,
                   task_loss_requirement: float | None = 0.7, max_gaze_tokens_each_frame: int | None = None,
                   tile_batch_size: int | None = None) -> GazeTrace:
        """Gaze of one normalised clip: fp32 [T, 3, H, W] or [1, T, 3, H, W], as the processor returns it
        (at the processor's resolution, or any other for the tiled modes)."""
        opts = GazeOptions(mode, gazing_ratio, task_loss_requirement, max_gaze_tokens_each_frame, tile_batch_size)
        return self.run_normalised(normalised_clip(video, self.device), opts)

    def run_packed(self, frames: torch.Tensor, opts: GazeOptions) -> GazeTrace:
        """frames: uint8 [T, H, W, C] already on the model device (see :func:`packed_frames`)."""
        grid = self.plan(frames.shape[1], frames.shape[2], opts.mode)
        return self._run(self.packed_tiles(frames, grid), grid, frames.shape[0], opts)

    def run_normalised(self, video: torch.Tensor, opts: GazeOptions) -> GazeTrace:
        """video: fp32 [T, 3, H, W] already on the model device (see :func:`normalised_clip`)."""
        grid = self.plan(video.shape[-2], video.shape[-1], opts.mode)
        return self._run(self.normalised_tiles(video, grid), grid, video.shape[0], opts)

    def packed_tiles(self, frames: torch.Tensor, grid: TileGrid):
        """uint8 [T, H, W, C] -> a function: tile indices -> model inputs [n, T, 3, h, w] fp32 on the device."""
        if grid.mode == "resize-224":
            H_c, W_c = grid.canvas_size
            if frames.is_cuda:  # one fused kernel: resize, then the affine from the table
                from triton_autogaze.kernels.rgba import rgba_resize

                video = rgba_resize(frames, H_c, W_c, self.lut)
            else:  # exactly the processor: the C++ core
                from .processing import AutoGazeImageProcessor

                video = AutoGazeImageProcessor(self.processor_config)(frames)
            return lambda tiles: video[None]
        canvas = resize_packed(frames, *grid.canvas_size) if grid.mode == "anyres-tile-224" else frames
        return lambda tiles: cut_tiles(canvas, grid, tiles, self.lut)

    def normalised_tiles(self, video: torch.Tensor, grid: TileGrid):
        """fp32 [T, 3, H, W] -> a function: tile indices -> model inputs [n, T, 3, h, w] fp32."""
        canvas = resize_canvas_float(video, grid)
        return lambda tiles: cut_tiles(canvas, grid, tiles)

    def run_packed_chunks(self, frames: torch.Tensor, opts: GazeOptions, chunk: int,
                          ready: Callable[[int], None] | None = None) -> GazeTrace:
        """A resize-224 clip in one model call whose frames are resized, encoded and fed to the generation
        ``chunk`` at a time (:meth:`AutoGaze._generate_fed`; the same gaze as :meth:`run_packed`). ``ready(stop)``
        is called before frames [.., stop) are read, so an upload still in flight (:meth:`HostUploader.staged`)
        overlaps the earlier frames' work. frames: uint8 [T, H, W, C] on the model device."""
        return self._run_chunks(frames, opts, self._chunk_plan(frames.shape, opts), chunk, ready)

    def _chunk_plan(self, shape, opts: GazeOptions):
        """(tile grid, budgets, thresholds) of a resize-224 clip of packed ``shape`` [T, H, W, C]."""
        if opts.mode != "resize-224":
            raise ValueError(f"run_packed_chunks: resize-224 only (one tile a frame), got mode {opts.mode!r}")
        T = shape[0]
        tau = _tau(opts)
        return (self.plan(shape[1], shape[2], opts.mode),
                self.model.budgets(_ratio(opts), T, opts.max_gaze_tokens_each_frame),
                None if tau is None else thresholds(tau, 1, T, self.device))

    def _run_chunks(self, frames: torch.Tensor, opts: GazeOptions, prep, chunk: int,
                    ready: Callable[[int], None] | None) -> GazeTrace:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
        grid, budgets, tau = prep

        def video_of(a: int, b: int) -> torch.Tensor:
            if ready is not None:
                ready(b)
            return self.packed_tiles(frames[a:b], grid)(range(1))

        g = self.model._generate_fed(video_of, 1, budgets, tau, "independent", chunk)
        return self.assemble(grid, g.out, opts, tau=tau)

    def _gaze_tiles(self, tiles_of, grid: TileGrid, T: int, opts: GazeOptions, past: list[tuple] | None = None,
                    rows: int | None = None):
        """Every tile batch of T frames through the model, each batch carrying on from its (engine state, conv
        cache) in ``past`` (None: a fresh clip). Returns the per-frame output laid out as one independent-semantics
        call over all tiles would give it (a GenerationOutput), each batch's caches, and the thresholds tensor
        [num_tiles, T] (or None) the calls used. rows: how many rows ``tiles_of`` serves (None: the grid's tiles;
        more: several clips' tiles, clip-major, see :meth:`_trace_packed_clips`).

        The engine's per-frame ids go straight to one assembly: no per-batch trace is built and split again."""
        n = grid.num_tiles if rows is None else rows
        step = opts.tile_batch_size
        if step is None:  # as few batches as the automatic bound allows, of even size (90 rows at 64: 45 + 45)
            bound = self.auto_tile_batch(n)
            step = -(-n // -(-n // bound))
        budgets = self.model.budgets(_ratio(opts), T, opts.max_gaze_tokens_each_frame)
        tau = _tau(opts)
        tau = None if tau is None else thresholds(tau, n, T, self.device)
        # one batch: its record's kernel is launched before the call's sync (overlapping the call's kernels)
        prepare = record_preparer(self.model.config, grid) if step >= n and n == grid.num_tiles else None
        outs, caches = [], []
        for k, start in enumerate(range(0, n, step)):
            stop = min(n, start + step)
            state, conv = past[k] if past else (None, None)
            g = self.model._generate(tiles_of(range(start, stop)), budgets, None if tau is None else tau[start:stop],
                                     "independent", state, conv, prepare)
            caches.append((g.state, g.conv_cache))
            outs.append(g.out)
        return merge_outputs(self.model.config.eos_id, outs), caches, tau

    def _run(self, tiles_of, grid: TileGrid, T: int, opts: GazeOptions) -> GazeTrace:
        out, _, tau = self._gaze_tiles(tiles_of, grid, T, opts)
        return self.assemble(grid, out, opts, tau=tau)

    def assemble(self, grid: TileGrid, out: GenerationOutput, opts: GazeOptions, start_frame: int = 0,
                 tau: torch.Tensor | None = None) -> GazeTrace:
        """A generation output over the grid's tiles (rows = tiles) -> the pipeline's GazeTrace.
        tau: the thresholds tensor [num_tiles, T] the generation used (None: built from ``opts``).

        The record, confidences and stitched masks come from ``record.record_of`` (one kernel for the Triton
        engine's outputs)."""
        cfg = self.model.config
        if tau is None and _tau(opts) is not None:
            tau = thresholds(_tau(opts), grid.num_tiles, len(out.frames), self.device)
        rec = record_of(cfg, out, grid)
        return GazeTrace(
            gazing_pos=rec["gazing_pos"], if_padded_gazing=rec["if_padded_gazing"],
            num_gazing_each_frame=rec["num_gazing_each_frame"], gazing_mask=rec["gazing_mask"],
            confidence=rec["confidence"], grid_sizes=cfg.grid_sizes, scale_offsets=cfg.scale_offsets,
            num_vision_tokens=cfg.num_vision_tokens_each_frame, task_loss_requirement=tau,
            scale_masks=rec["scale_masks"], tiling=grid, start_frame=start_frame)

    # ----- videos and streams --------------------------------------------------------------------------------------
    def trace_video(self, path_or_container: Any, mode: str = DEFAULT_MODE, gazing_ratio: float = 0.75,
                    task_loss_requirement: float | None = 0.7, max_gaze_tokens_each_frame: int | None = None,
                    tile_batch_size: int | None = None, clip_len: int | None = None, max_frames: int | None = None,
                    progress: bool = True, clips_per_call: int | None = None) -> Iterator[GazeTrace]:
        """Decode a video (path or open PyAV container) clip by clip and yield each clip's GazeTrace
        (``start_frame`` set). Memory stays at ``clips_per_call`` clips whatever the length. clip_len defaults to
        the model's max_num_frames (16); a per-frame gazing_ratio list must have clip_len values.

        clips_per_call: consecutive clips of one length gazed by one model call, their tiles as independent rows
        (the same traces as one clip at a time). Each clip restarts the context, so the clips of a video are
        independent, and on a GPU a call of several rows costs far less than as many calls of one (H100, fp32, full
        budget: 8 clips of 16 frames in 77-80 ms against 44 ms for one; bench/RESULTS.md). None (default):
        :meth:`auto_clips_per_call` of the video's clips (8 a call for small 224 px clips on a GPU, 1 on the CPU); 1
        yields each clip as soon as it is gazed."""
        from tqdm.auto import tqdm

        from .video import iter_clips

        clip_len = self.model.config.max_num_frames if clip_len is None else clip_len
        if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {clip_len}")
        opts = GazeOptions(mode, gazing_ratio, task_loss_requirement, max_gaze_tokens_each_frame, tile_batch_size)
        _check_schedule(opts, clip_len)
        start = 0
        clips = (checked_packed(c) for c in iter_clips(path_or_container, clip_len=clip_len, max_frames=max_frames))
        limit = (lambda c: self.auto_clips_per_call(c.shape, mode)) if clips_per_call is None else clips_per_call
        with tqdm(unit="frame", desc=f"gaze {mode}", disable=not progress) as bar:
            for held in batches_of(clips, limit, len):
                for trace in self._trace_packed_clips(held, opts.for_frames(0, len(held[0]))):
                    yield replace(trace, start_frame=start)
                    start += trace.num_frames
                    bar.update(trace.num_frames)

    def _trace_packed_clips(self, clips: list[torch.Tensor], opts: GazeOptions) -> list[GazeTrace]:
        """Checked packed clips of one length and size -> their traces, from one model call over all their tiles
        (clip-major rows, independent semantics: each row as if run alone). One clip takes :meth:`_trace_packed`."""
        if len(clips) == 1:
            return [self._trace_packed(clips[0], opts)]
        T, H, W = clips[0].shape[:3]
        if any(c.shape[:3] != (T, H, W) for c in clips):
            raise ValueError(f"clips: expected one length and frame size, got {[tuple(c.shape[:3]) for c in clips]}")
        grid = self.plan(H, W, opts.mode)
        n = grid.num_tiles
        per_clip = [self.packed_tiles(self.packed(c), grid) for c in clips]

        def tiles_of(rows: range) -> torch.Tensor:
            parts = []
            for k, of in enumerate(per_clip):
                lo, hi = max(rows.start, k * n), min(rows.stop, (k + 1) * n)
                if lo < hi:
                    parts.append(of(range(lo - k * n, hi - k * n)))
            return torch.cat(parts) if len(parts) > 1 else parts[0]

        out, _, tau = self._gaze_tiles(tiles_of, grid, T, opts, rows=len(clips) * n)
        bounds = [(k * n, (k + 1) * n) for k in range(len(clips))]
        return [self.assemble(grid, part, opts, tau=None if tau is None else tau[a:b])
                for (a, b), part in zip(bounds, split_rows(out, bounds))]

    def stream(self, mode: str = DEFAULT_MODE, clip_len: int | None = None, gazing_ratio: float = 0.75,
               task_loss_requirement: float | None = 0.7, max_gaze_tokens_each_frame: int | None = None,
               tile_batch_size: int | None = None) -> "GazeStream":
        """A frame-by-frame session (:class:`GazeStream`): ``push(frame)`` -> that frame's GazeTrace."""
        opts = GazeOptions(mode, gazing_ratio, task_loss_requirement, max_gaze_tokens_each_frame, tile_batch_size)
        return GazeStream(self, opts, self.model.config.max_num_frames if clip_len is None else clip_len)


class GazeStream:
    """Frame-by-frame gaze with the model's KV and conv caches carried from push to push (one cache per tile
    batch, tiles in independent semantics). The context restarts every ``clip_len`` frames, as upstream's
    16-frame clips do, so each push equals the whole-clip trace of its clip at that frame. (The caches are the
    ones upstream's ``use_cache`` call carries; a push calls the model directly, without building that call's
    upstream-layout outputs.)
    """

    def __init__(self, pipeline: AutoGazePipeline, options: GazeOptions, clip_len: int):
        if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
            raise ValueError(f"clip_len must be an int >= 1, got {clip_len!r}")
        _check_schedule(options, clip_len)
        self.pipeline, self.options, self.clip_len = pipeline, options, clip_len
        self.frames_seen = 0  # frames pushed so far: the next trace's start_frame
        self._t = 0  # position inside the current context
        self._source: tuple | None = None  # (kind, H, W) fixed by the first frame
        self._grid: TileGrid | None = None  # its tile layout
        self._past: list[tuple] = []  # per tile batch: (engine state, conv cache) for the next call

    def reset(self) -> None:
        """Drop the context: the next frame starts a new clip."""
        self._t, self._past = 0, []

    def push(self, frame: Any) -> GazeTrace:
        """frame: uint8 [H, W, 3|4] packed (numpy or tensor), or a normalised fp32 tensor [3, H, W].
        Returns a one-frame GazeTrace (rows = tiles; ``start_frame`` = this frame's index in the stream)."""
        p = self.pipeline
        if isinstance(frame, np.ndarray) or (torch.is_tensor(frame) and frame.dtype == torch.uint8):
            pixels = p.packed(frame, "frame")
            kind, (H, W) = "packed", pixels.shape[1:3]
        elif torch.is_tensor(frame) and frame.dim() == 3:
            pixels = normalised_clip(frame[None], p.device, "frame")
            kind, (H, W) = "normalised", pixels.shape[-2:]
        else:
            raise TypeError("frame must be uint8 [H, W, 3|4] (numpy or tensor) or a normalised float tensor "
                            f"[3, H, W], got {type(frame).__name__} {tuple(getattr(frame, 'shape', ()))}")
        if pixels.shape[0] != 1:
            raise ValueError(f"push takes one frame, got {pixels.shape[0]}")
        if self._source is None:
            self._source = (kind, int(H), int(W))
            self._grid = p.plan(int(H), int(W), self.options.mode)  # fixed by the first frame, like the source
        elif self._source != (kind, int(H), int(W)):
            raise ValueError(f"frame is {kind} {H}x{W}, but this stream started with {self._source[0]} "
                             f"{self._source[1]}x{self._source[2]}; start a new stream")
        grid = self._grid
        tiles_of = p.packed_tiles(pixels, grid) if kind == "packed" else p.normalised_tiles(pixels, grid)
        opts = self.options.for_frames(self._t, self._t + 1)
        out, past, tau = p._gaze_tiles(tiles_of, grid, 1, opts, self._past)
        trace = p.assemble(grid, out, opts, start_frame=self.frames_seen, tau=tau)
        self.frames_seen += 1
        self._t += 1
        self._past = past
        if self._t == self.clip_len:
            self.reset()
        return trace


def clips_per_call_cap(device: torch.device) -> int:
    """The most clips an automatic clips_per_call puts in one model call on ``device``: AUTO_CLIPS_PER_CALL on a
    GPU, 1 on the CPU (see AutoGazePipeline.auto_clips_per_call)."""
    return AUTO_CLIPS_PER_CALL if device.type == "cuda" else 1


def batches_of(items: Iterable[Any], limit: int | Callable[[Any], int],
               key: Callable[[Any], Any]) -> Iterator[list[Any]]:
    """Consecutive items of equal ``key``, at most ``limit`` at a time, in order; lazy (an item is taken only once
    the batch before it is full or ends). limit: clips_per_call, an int >= 1, or a function of a batch's first item
    that gives the batch's limit (the automatic clips_per_call of that clip's shape)."""
    if not callable(limit):
        _check_limit(limit)
    held: list[Any] = []
    cap = 0
    for x in items:
        if held and (len(held) == cap or key(x) != key(held[0])):
            yield held
            held = []
        if not held:
            cap = _check_limit(limit(x)) if callable(limit) else limit
        held.append(x)
    if held:
        yield held


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"clips_per_call must be an int >= 1, got {limit!r}")
    return limit


def merge_tiles(fill: float | int, parts: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Batches of tiles -> one batch: per frame, pad every part's [b, L_t] to the longest and stack the rows, as
    one independent-semantics call over all tiles would lay them out."""
    if len(parts) == 1:
        return list(parts[0])
    out = []
    for t in range(len(parts[0])):
        L = max(p[t].shape[1] for p in parts)
        out.append(torch.cat([torch.nn.functional.pad(p[t], (0, L - p[t].shape[1]), value=fill) for p in parts]))
    return out


def merge_outputs(eos: int, outs: list[GenerationOutput]) -> GenerationOutput:
    """The outputs of consecutive tile batches -> one output over all their rows. Full-width outputs of one
    width stack along the rows (their frames are views); otherwise the frames are padded and stacked."""
    if len(outs) == 1:
        return outs[0]
    pads = [o.padded for o in outs]
    if all(p is not None and p.ids.shape[::2] == pads[0].ids.shape[::2] for p in pads):
        merged = PaddedFrames(torch.cat([p.ids for p in pads], dim=1), torch.cat([p.confidence for p in pads], dim=1),
                              torch.cat([p.lens for p in pads], dim=1),
                              [max(w) for w in zip(*(p.widths for p in pads))])
        return GenerationOutput(frames=merged.frame_results(), padded=merged)
    ids = merge_tiles(eos, [[f.ids for f in o.frames] for o in outs])
    conf = merge_tiles(0.0, [[f.confidence for f in o.frames] for o in outs])
    lens = [row_lens(o) for o in outs]
    return GenerationOutput(frames=[FrameResult(ids=i, confidence=c) for i, c in zip(ids, conf)],
                            row_lens=None if any(x is None for x in lens) else torch.cat(lens, dim=1))


@functools.lru_cache(maxsize=None)
def _device_memory(device: torch.device) -> int:
    """Total memory of a CUDA device in bytes (asked once: a stream asks every push)."""
    return torch.cuda.get_device_properties(device).total_memory


def _check_schedule(opts: GazeOptions, clip_len: int) -> None:
    for name in ("gazing_ratio", "task_loss_requirement"):
        v = getattr(opts, name)
        if isinstance(v, tuple) and len(v) != clip_len:
            raise ValueError(f"{name} has {len(v)} per-frame values; expected clip_len = {clip_len}")


def _ratio(opts: GazeOptions):
    return list(opts.gazing_ratio) if isinstance(opts.gazing_ratio, tuple) else opts.gazing_ratio


def _tau(opts: GazeOptions):
    v = opts.task_loss_requirement
    return list(v) if isinstance(v, tuple) else v
