"""AutoGazePipeline: modes against the upstream-compatible paths, tile-batch independence, streaming equals
whole clips, video clips, and bad inputs. Small clips and budgets keep the CPU time down."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fixture_data import (LOCAL, PIPELINE_BACKEND, PIPELINE_DEVICE, SHARED, cases, load_case, model_dir, normalise,
                          random_rgba, shared_available)
from triton_autogaze.pipeline import AutoGazePipeline, GazeOptions
from triton_autogaze.processing import AutoGazeImageProcessor
from triton_autogaze.record import split_record

SMALL = dict(gazing_ratio=0.05, task_loss_requirement=None)  # 13 tokens: a 10-step plus a 3-token cut

DEVICE, BACKEND = PIPELINE_DEVICE, PIPELINE_BACKEND
rgba = random_rgba


def assert_same_trace(a, b, confidence=True):
    assert torch.equal(a.gazing_pos, b.gazing_pos)
    assert torch.equal(a.if_padded_gazing, b.if_padded_gazing)
    assert torch.equal(a.num_gazing_each_frame, b.num_gazing_each_frame)
    for x, y in zip(a.gazing_mask, b.gazing_mask):
        assert torch.equal(x, y)
    if confidence:  # batched encoding may move the last float bits; the decisions above must not move
        torch.testing.assert_close(a.confidence, b.confidence, atol=1e-5, rtol=0)
    if a.scale_masks is not None and b.scale_masks is not None:
        for x, y in zip(a.scale_masks, b.scale_masks):
            assert torch.equal(x, y)


def test_resize_224_is_processor_then_generate(pipe):
    frames = rgba(2, 60, 90)
    trace = pipe.trace_rgba_clip(frames, gazing_ratio=0.1, task_loss_requirement=-2.0)
    video = AutoGazeImageProcessor(pipe.processor_config)(frames)
    want = pipe.model.generate(video, gazing_ratio=0.1, task_loss_requirement=-2.0)
    assert_same_trace(trace, want)
    assert trace.mode == "resize-224" and trace.tiling.canvas_size == (224, 336)
    for s, g in enumerate(trace.grid_sizes):
        assert torch.equal(trace.scale_masks[s], want.gazing_mask[s][0].reshape(2, g, g) > 0)
    # float input already normalised: the same trace
    assert_same_trace(pipe.trace_clip(video, gazing_ratio=0.1, task_loss_requirement=-2.0), trace)


def _fixture(root, name):
    case = [c for c in cases(root) if c["name"] == name][0]
    return case, load_case(root, case)


@pytest.mark.skipif(not shared_available(), reason="needs ../shared/fixtures (chunks448x448_t2)")
def test_448_tiles_equal_independent_fixture_rows(pipe):
    """anyres-tile-224 and tiled-full-resolution on a 448x448 frame are 4 plain 224 tiles, each run alone: the
    fixture's independent_{b}_* rows (frame 0; generation is causal, so frame 0 alone equals frame 0 of the clip)."""
    case, data = _fixture(SHARED, "chunks448x448_t2")
    raw = data["raw_rgb"][0, :1]  # [1, 448, 448, 3]
    kw = dict(gazing_ratio=case["gazing_ratio"], task_loss_requirement=case["task_loss_requirement"])
    anyres = pipe.trace_rgba_clip(raw.numpy(), mode="anyres-tile-224", tile_batch_size=3, **kw)
    full = pipe.trace_clip(normalise(raw[None]), mode="tiled-full-resolution", tile_batch_size=4, **kw)
    assert_same_trace(anyres, full)
    for b in range(4):
        pos, pad = data[f"independent_{b}_gazing_pos"], data[f"independent_{b}_if_padded_gazing"].bool()
        num = data[f"independent_{b}_num_gazing_each_frame"]
        want = split_record(pipe.model.config, pos, pad, num)[0][0]
        got = split_record(pipe.model.config, anyres.gazing_pos[b:b + 1], anyres.if_padded_gazing[b:b + 1],
                           anyres.num_gazing_each_frame)[0][0].cpu()
        eos = pipe.model.config.eos_id
        assert torch.equal(got[got != eos], want[want != eos])


def test_448_stitched_masks_equal_resadapt_call(pipe):
    """The upstream-compatible res-adapt call (target_scales [64,128,224,448], p=16) on a 448 frame is 2x2 tiles
    of 224 stitched into 4/8/14/28 grids: with independent semantics it must equal both tiled modes."""
    case, data = _fixture(LOCAL, "tiled448_t2")
    video = normalise(data["raw_rgb"][:, :1])
    out = pipe.model({"video": video}, target_scales=case["target_scales"], target_patch_size=16,
                     batch_semantics="independent", generate_only=True, **SMALL)
    for mode in ("tiled-full-resolution", "anyres-tile-224"):
        trace = pipe.trace_clip(video, mode=mode, **SMALL)
        for s, m in enumerate(trace.scale_masks):
            assert torch.equal(m.reshape(1, 1, -1).float(), out["gazing_mask"][s])


@pytest.mark.parametrize("size, batches", [
    ((448, 672), (1, 4, 6)),  # 2 x 3 tiles: the CPU check
    pytest.param((1080, 1920), (1, 4, 45), marks=pytest.mark.gpu),  # 45 tiles, as the issue states it
])
def test_tile_batch_size_never_changes_a_tile(pipe, size, batches):
    from triton_autogaze.demo import synthesize_clip

    p = pipe
    if size == (1080, 1920) and DEVICE != "cuda":
        if not torch.cuda.is_available():
            pytest.skip("45 tiles run on CUDA only (CPU time)")
        p = AutoGazePipeline.from_pretrained(model_dir(), device="cuda")
    frame = synthesize_clip(1, *size, seed=3)
    kw = dict(mode="anyres-tile-224", gazing_ratio=0.05, task_loss_requirement=0.7)
    traces = [p.trace_rgba_clip(frame, tile_batch_size=n, **kw) for n in batches]
    assert traces[0].gazing_pos.shape[0] == batches[-1]
    for t in traces[1:]:
        assert_same_trace(traces[0], t)


def _model_call_rows(pipe, monkeypatch) -> list[int]:
    """Rows of every model call the pipeline makes from now on (appended as they happen)."""
    sizes = []
    real = pipe.model._generate

    def spy(video, *a, **kw):
        sizes.append(video.shape[0])
        return real(video, *a, **kw)

    monkeypatch.setattr(pipe.model, "_generate", spy)
    return sizes


def test_tile_batches_bound_model_calls(pipe, monkeypatch):
    sizes = _model_call_rows(pipe, monkeypatch)
    trace = pipe.trace_rgba_clip(rgba(1, 460, 900), mode="tiled-full-resolution", tile_batch_size=4,
                                 gazing_ratio=0.01, task_loss_requirement=None)
    assert trace.tiling.tiles == (3, 5) and trace.gazing_pos.shape[0] == 15
    assert sizes == [4, 4, 4, 3]


def test_default_tile_batch_is_automatic(pipe, monkeypatch):
    """tile_batch_size=None (the default) takes AutoGazePipeline.auto_tile_batch: 8 tiles a call on the CPU; on a
    GPU every tile up to AUTO_TILE_BATCH, fewer where a quarter of the memory holds fewer rows' caches."""
    from triton_autogaze.pipeline import AUTO_TILE_BATCH

    sizes = _model_call_rows(pipe, monkeypatch)
    pipe.trace_rgba_clip(rgba(1, 460, 900), mode="tiled-full-resolution", gazing_ratio=0.01,
                         task_loss_requirement=None)
    expected = pipe.auto_tile_batch(15)
    assert sizes == [expected] * (15 // expected) + ([15 % expected] if 15 % expected else [])
    if pipe.device.type == "cpu":
        assert expected == 8 and pipe.auto_tile_batch(3) == 3
    else:
        if torch.cuda.get_device_properties(pipe.device).total_memory >= 40 << 30:  # 64 rows' caches fit
            assert pipe.auto_tile_batch(45) == 45 and pipe.auto_tile_batch(500) == AUTO_TILE_BATCH
        import triton_autogaze.pipeline as pipeline_module

        monkeypatch.setattr(pipeline_module, "_device_memory", lambda device: 2 << 30)
        assert 1 <= pipe.auto_tile_batch(45) < 45  # 2 GB: 512 MB of caches, ~46 MB a row at 16 frames


def test_automatic_tile_batches_are_even(pipe, monkeypatch):
    """Over the automatic bound, tiles go in as few batches as it allows, of even size: 15 tiles at a bound of 6
    run as 5 + 5 + 5, not 6 + 6 + 3 (an explicit tile_batch_size is taken as given)."""
    sizes = _model_call_rows(pipe, monkeypatch)
    monkeypatch.setattr(pipe, "auto_tile_batch", lambda n: 6)
    frames = rgba(1, 460, 900)
    pipe.trace_rgba_clip(frames, mode="tiled-full-resolution", gazing_ratio=0.01, task_loss_requirement=None)
    assert sizes == [5, 5, 5]
    sizes.clear()
    pipe.trace_rgba_clip(frames, mode="tiled-full-resolution", gazing_ratio=0.01, task_loss_requirement=None,
                         tile_batch_size=6)
    assert sizes == [6, 6, 3]


def test_full_resolution_fixations_stay_in_the_frame(pipe):
    trace = pipe.trace_rgba_clip(rgba(1, 230, 250, seed=4), mode="tiled-full-resolution", **SMALL)
    fixations = trace.source_fixations()[0]
    grid = trace.tiling
    assert 0 < len(fixations) <= (~trace.if_padded_gazing).sum()
    for f in fixations:
        x0, y0, x1, y1 = f.rect
        assert 0 <= x0 < x1 <= 250 and 0 <= y0 < y1 <= 230
        assert trace.scale_masks[f.scale_index][0, f.row, f.col]
        assert grid.cell_rect(f.scale_index, f.row, f.col) == f.rect
    # every stitched cell comes from some kept fixation
    for s, m in enumerate(trace.scale_masks):
        assert int(m.sum()) == len({(f.row, f.col) for f in fixations if f.scale_index == s})


@pytest.mark.parametrize("mode", ["resize-224", "anyres-tile-224", "tiled-full-resolution"])
def test_stream_equals_whole_clips(pipe, mode):
    frames = rgba(3, 100, 250, seed=5)  # 2 tiles in the tiled modes
    kw = dict(mode=mode, gazing_ratio=0.05, task_loss_requirement=-2.0, tile_batch_size=1)
    session = pipe.stream(clip_len=2, **kw)
    pushed = [session.push(f) for f in frames]
    whole = [pipe.trace_rgba_clip(frames[:2], **kw), pipe.trace_rgba_clip(frames[2:], **kw)]
    for i, one in enumerate(pushed):
        clip, t = whole[i // 2], i % 2
        sl = clip.frame_slices()[t]
        assert one.start_frame == i and one.num_frames == 1
        assert torch.equal(one.if_padded_gazing, clip.if_padded_gazing[:, sl])
        real = ~one.if_padded_gazing
        assert torch.equal(one.gazing_pos[real], (clip.gazing_pos[:, sl] - 265 * t)[real])
        for a, b in zip(one.scale_masks, clip.scale_masks):
            assert torch.equal(a[0], b[t])


def test_stream_of_normalised_frames_with_token_cap(pipe):
    clip = torch.from_numpy(np.random.default_rng(6).standard_normal((2, 3, 64, 64)).astype(np.float32))
    kw = dict(gazing_ratio=0.5, task_loss_requirement=None, max_gaze_tokens_each_frame=7)
    session = pipe.stream(clip_len=16, **kw)
    pushed = [session.push(f) for f in clip]
    whole = pipe.trace_clip(clip, **kw)
    assert whole.num_gazing_each_frame.tolist() == [7, 7]
    for t, one in enumerate(pushed):
        assert torch.equal(one.gazing_pos[0], whole.gazing_pos[0, 7 * t:7 * t + 7] - 265 * t)


def test_stream_rejects_changing_frames(pipe):
    session = pipe.stream(**SMALL)
    session.push(rgba(1, 20, 30)[0])
    with pytest.raises(ValueError, match="started with"):
        session.push(rgba(1, 30, 20)[0])
    with pytest.raises(ValueError, match="one frame"):
        session.push(rgba(2, 20, 30))
    with pytest.raises(ValueError, match="clip_len"):
        pipe.stream(clip_len=0)


def test_trace_video_clips(pipe, tmp_path):
    pytest.importorskip("av")
    from triton_autogaze.video import read_video, write_video

    path = write_video(tmp_path / "clip.mp4", rgba(5, 48, 64, seed=7)[..., :3])
    decoded = read_video(path)
    traces = list(pipe.trace_video(path, clip_len=2, progress=False, **SMALL))
    assert [t.start_frame for t in traces] == [0, 2, 4] and [t.num_frames for t in traces] == [2, 2, 1]
    for i, t in enumerate(traces):
        assert_same_trace(t, pipe.trace_rgba_clip(decoded[2 * i:2 * i + 2], **SMALL))
    assert traces[2].source_fixations()[0][0].frame == 4


@pytest.mark.parametrize("mode", ["resize-224", "anyres-tile-224", "tiled-full-resolution"])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (225, 7)])
def test_odd_and_tiny_frames(pipe, mode, size):
    H, W = size
    trace = pipe.trace_rgba_clip(rgba(1, H, W), mode=mode, gazing_ratio=0.01, task_loss_requirement=None)
    assert trace.tiling.source_size == (H, W)
    for f in trace.source_fixations()[0]:
        x0, y0, x1, y1 = f.rect
        assert 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H


@pytest.mark.parametrize("call, arg, exc, match", [
    ("trace_rgba_clip", np.zeros((1, 8, 8, 4), np.float32), TypeError, "uint8"),
    ("trace_rgba_clip", np.zeros((1, 8, 8, 2), np.uint8), ValueError, "3\\|4"),
    ("trace_rgba_clip", np.zeros((0, 8, 8, 4), np.uint8), ValueError, "empty"),
    ("trace_rgba_clip", np.zeros((1, 1, 8, 8, 4), np.uint8), ValueError, "T, H, W"),
    ("trace_rgba_clip", [[1, 2]], TypeError, "uint8"),
    ("trace_clip", torch.zeros(1, 3, 8, 8, dtype=torch.uint8), TypeError, "trace_rgba_clip"),
    ("trace_clip", torch.zeros(2, 1, 3, 8, 8), ValueError, "2 clips"),
    ("trace_clip", torch.full((1, 3, 8, 8), float("nan")), ValueError, "non-finite"),
])
def test_bad_inputs(pipe, call, arg, exc, match):
    with pytest.raises(exc, match=match):
        getattr(pipe, call)(arg)


@pytest.mark.parametrize("kw, match", [(dict(mode="full"), "mode"), (dict(tile_batch_size=0), "tile_batch_size"),
                                       (dict(max_gaze_tokens_each_frame=0), "max_gaze_tokens"),
                                       (dict(gazing_ratio=1.5), "gazing_ratio")])
def test_bad_options(pipe, kw, match):
    with pytest.raises(ValueError, match=match):
        pipe.trace_rgba_clip(rgba(1, 8, 8), **kw)


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_chunked_resize_equals_one_call(pipe, chunk):
    """resize-224 gazed a few frames a call (KV and conv caches carried) is the one-call trace; ``ready`` is told
    each chunk's end before its frames are read."""
    frames = pipe.packed(rgba(5, 60, 90, seed=8))
    opts = GazeOptions(gazing_ratio=[0.05, 0.1, 0.05, 0.08, 0.05], task_loss_requirement=-2.0)
    seen = []
    got = pipe.run_packed_chunks(frames, opts, chunk, seen.append)
    assert_same_trace(got, pipe.run_packed(frames, opts))
    assert seen == list(range(chunk, 5, chunk)) + [5]
    assert got.num_frames == 5 and got.tiling.mode == "resize-224"


def test_chunked_run_refuses_tiled_modes_and_bad_chunks(pipe):
    frames = pipe.packed(rgba(2, 60, 90))
    with pytest.raises(ValueError, match="resize-224 only"):
        pipe.run_packed_chunks(frames, GazeOptions(mode="anyres-tile-224"), 1)
    with pytest.raises(ValueError, match="chunk"):
        pipe.run_packed_chunks(frames, GazeOptions(), 0)


@pytest.fixture
def staged_calls(pipe, monkeypatch):
    """Every host clip goes through a spying uploader's staged path (MIN_STAGED_BYTES 1); yields the shapes it
    was given."""
    import triton_autogaze.upload as U
    from triton_autogaze.upload import HostUploader

    monkeypatch.setattr(U, "MIN_STAGED_BYTES", 1)
    calls = []

    class Spy(HostUploader):
        def staged(self, src):
            calls.append(tuple(src.shape))
            return super().staged(src)

    old, old_chunk = pipe.uploader, pipe.overlap_frames
    assert old_chunk == 2  # the default (RESULTS section 4)
    pipe.uploader = Spy(pipe.device, threads=2, pin=pipe.device.type == "cuda")
    try:
        yield calls
    finally:
        pipe.uploader.close()
        pipe.uploader, pipe.overlap_frames = old, old_chunk


def test_staged_upload_overlaps_chunks_with_the_same_trace(pipe, staged_calls):
    """A large host clip in resize-224 goes through the uploader's staged path, the model starting on the first
    frames while the rest are still copied: the trace is the plain path's."""
    frames = rgba(5, 60, 90, seed=9)
    kw = dict(gazing_ratio=0.05, task_loss_requirement=-2.0)
    up, pipe.uploader = pipe.uploader, None
    want = pipe.run_packed(pipe.packed(frames), GazeOptions(**kw))
    pipe.uploader = up
    got = pipe.trace_rgba_clip(frames, **kw)
    assert staged_calls == [(5, 60, 90, 4)]
    assert_same_trace(got, want)


@pytest.mark.parametrize("mode,size,tile_batch", [("resize-224", (48, 64), None), ("anyres-tile-224", (240, 480), 3)])
def test_trace_video_clips_per_call(pipe, tmp_path, mode, size, tile_batch):
    """clips_per_call: consecutive clips of one length share one model call (their tiles as rows; in anyres over
    several tile batches) and give the same traces as one clip at a time; a shorter last clip runs alone."""
    pytest.importorskip("av")
    from triton_autogaze.video import read_video, write_video

    path = write_video(tmp_path / "clip.mp4", rgba(5, *size, seed=11)[..., :3])
    decoded = read_video(path)
    kw = dict(mode=mode, gazing_ratio=0.1, task_loss_requirement=0.3, tile_batch_size=tile_batch)
    calls = []
    gaze = pipe._gaze_tiles
    pipe._gaze_tiles = lambda *a, **k: calls.append(k.get("rows")) or gaze(*a, **k)
    try:
        traces = list(pipe.trace_video(path, clip_len=2, clips_per_call=2, progress=False, **kw))
    finally:
        del pipe._gaze_tiles
    n = pipe.plan(*size, mode).num_tiles
    assert calls[0] == 2 * n  # the first two clips in one call
    assert [t.start_frame for t in traces] == [0, 2, 4] and [t.num_frames for t in traces] == [2, 2, 1]
    for i, t in enumerate(traces):
        assert_same_trace(t, pipe.trace_rgba_clip(decoded[2 * i:2 * i + 2], **kw))
    with pytest.raises(ValueError, match="clips_per_call"):
        next(pipe.trace_video(path, clip_len=2, clips_per_call=0, progress=False))


def test_batches_of_consecutive_equal_keys():
    """batches_of: consecutive items of one key, at most ``limit`` a batch (an int, or a function of the batch's
    first item), lazily; a bad limit is a clear error."""
    from triton_autogaze.pipeline import batches_of

    items = [1, 1, 1, 2, 2, 1]
    assert list(batches_of(items, 2, lambda x: x)) == [[1, 1], [1], [2, 2], [1]]
    assert list(batches_of(items, lambda x: 3 if x == 1 else 1, lambda x: x)) == [[1, 1, 1], [2], [2], [1]]
    assert list(batches_of([], 2, lambda x: x)) == []
    taken = []
    lazy = batches_of((taken.append(x) or x for x in items), 2, lambda x: x)
    assert next(lazy) == [1, 1] and taken == [1, 1, 1]  # the third item ended the first batch
    for bad in (0, 1.5, True, None):
        with pytest.raises(ValueError, match="clips_per_call"):
            list(batches_of(items, bad, lambda x: x))
    with pytest.raises(ValueError, match="clips_per_call must be an int >= 1, got 0"):
        list(batches_of(items, lambda x: 0, lambda x: x))


def test_default_clips_per_call_is_automatic(pipe, tmp_path, monkeypatch):
    """clips_per_call=None (trace_video's, trace_rgba_clips' default) takes auto_clips_per_call of each batch's first
    clip's shape: 1 on the CPU; on a GPU as many whole clips as the automatic tile bound holds, at most
    AUTO_CLIPS_PER_CALL and AUTO_CLIPS_BYTES of source frames."""
    pytest.importorskip("av")
    import triton_autogaze.pipeline as pipeline_module
    from triton_autogaze.video import write_video

    if pipe.device.type == "cpu":
        assert pipe.auto_clips_per_call((16, 224, 224, 3)) == 1
    path = write_video(tmp_path / "clip.mp4", rgba(5, 48, 64, seed=11)[..., :3])
    asked, calls = [], []
    monkeypatch.setattr(pipe, "auto_clips_per_call", lambda shape, mode: asked.append((tuple(shape), mode)) or 2)
    gaze = pipe._gaze_tiles
    monkeypatch.setattr(pipe, "_gaze_tiles", lambda *a, **k: calls.append(k.get("rows")) or gaze(*a, **k))
    traces = list(pipe.trace_video(path, clip_len=2, progress=False, **SMALL))
    assert [t.num_frames for t in traces] == [2, 2, 1] and calls[0] == 2  # the first two clips in one call
    assert asked == [((2, 48, 64, 3), "resize-224"), ((1, 48, 64, 3), "resize-224")]  # once a batch
    asked.clear()
    calls.clear()
    clips = [rgba(2, 48, 64, seed=s) for s in range(3)] + [rgba(2, 40, 72, seed=5)]  # a new frame size: a new batch
    pipe.trace_rgba_clips(clips, mode="anyres-tile-224", **SMALL)
    assert asked == [((2, 48, 64, 4), "anyres-tile-224")] * 2 + [((2, 40, 72, 4), "anyres-tile-224")]
    assert len(calls) == 3
    assert pipe.trace_rgba_clips([]) == []
    monkeypatch.undo()
    # the GPU rule, whatever this machine has: an 80 GB device, then a tile bound of 6 rows
    monkeypatch.setattr(pipeline_module, "_device_memory", lambda device: 80 << 30)
    monkeypatch.setattr(type(pipe), "device", property(lambda self: torch.device("cuda")))
    auto = pipe.auto_clips_per_call
    assert pipe.plan(720, 1280, "anyres-tile-224").num_tiles == 24
    assert auto((16, 448, 448, 3)) == auto((16, 448, 448, 3), "anyres-tile-224") == 8  # 1 and 4 tiles
    assert auto((16, 720, 1280, 3), "anyres-tile-224") == 2 and auto((16, 1080, 1920, 3), "anyres-tile-224") == 1
    assert auto((16, 1080, 1920, 3)) == 5 and auto((16, 2160, 3840, 3)) == 1  # 512 MB of source frames
    monkeypatch.setattr(pipe, "auto_tile_batch", lambda n: min(n, 6))
    assert auto((16, 448, 448, 3)) == 6 and auto((16, 448, 448, 3), "anyres-tile-224") == 1


def test_trace_rgba_clips_equal_one_at_a_time(pipe):
    """trace_rgba_clips: clips of one shape share a call (up to clips_per_call), a different shape starts the next;
    every trace equals trace_rgba_clip of its clip."""
    clips = [rgba(2, 60, 90, seed=s) for s in (1, 2, 3)] + [rgba(3, 60, 90, seed=4), rgba(3, 60, 90, seed=5)]
    kw = dict(gazing_ratio=0.1, task_loss_requirement=-2.0)
    calls = []
    gaze = pipe._gaze_tiles
    pipe._gaze_tiles = lambda *a, **k: calls.append(k.get("rows")) or gaze(*a, **k)
    try:
        traces = pipe.trace_rgba_clips(clips, clips_per_call=2, **kw)
    finally:
        del pipe._gaze_tiles
    assert calls == [2, None, 2]  # clips 0-1 together, clip 2 alone (the limit), clips 3-4 (another length)
    assert len(traces) == 5
    for c, t in zip(clips, traces):
        assert_same_trace(t, pipe.trace_rgba_clip(c, **kw))
    with pytest.raises(TypeError, match=r"clips\[1\]"):
        pipe.trace_rgba_clips([clips[0], clips[0].astype(np.float32)])


def test_split_rows_cuts_rows_to_their_own_lengths(pipe):
    """split_rows: a row range of an independent output is laid out as if generated alone (each frame as wide as its
    longest row there), from the merged per-row lengths or the engine's full-width frames."""
    from triton_autogaze.reference.generate import FrameResult, GenerationOutput, PaddedFrames, merge_rows, split_rows

    def rows_of(out, start, stop):
        return split_rows(out, [(start, stop)])[0]

    cfg = pipe.model.config
    eos = cfg.eos_id

    def row(*lens):  # one row's frames: ids 1..L, the last one a pad that still counts
        frames = []
        for L in lens:
            ids = torch.arange(1, L + 1)[None]
            ids[0, -1] = eos
            frames.append(FrameResult(ids=ids, confidence=torch.rand(1, L)))
        return GenerationOutput(frames=frames)

    rows = [row(10, 20), row(20, 10), row(10, 10)]
    merged = merge_rows(cfg, rows)
    assert merged.row_lens.tolist() == [[10, 20, 10], [20, 10, 10]]
    cut = rows_of(merged, 1, 3)
    want = merge_rows(cfg, rows[1:])
    for a, b in zip(cut.frames, want.frames):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.confidence, b.confidence)
    assert [f.ids.shape[1] for f in rows_of(merged, 2, 3).frames] == [10, 10]
    ids = torch.full((2, 3, 20), eos)
    conf = torch.zeros(2, 3, 20)
    for t in range(2):
        for b in range(3):
            L = int(merged.row_lens[t, b])
            ids[t, b, :L], conf[t, b, :L] = rows[b].frames[t].ids[0], rows[b].frames[t].confidence[0]
    pf = PaddedFrames(ids, conf, merged.row_lens.to(torch.int32), [20, 20])
    cut = rows_of(GenerationOutput(frames=pf.frame_results(), padded=pf), 1, 3)
    assert cut.padded.widths == [20, 10]
    for a, b in zip(cut.frames, want.frames):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.confidence, b.confidence)
    assert [len(p.frames[0].ids) for p in split_rows(merged, [(0, 1), (1, 3)])] == [1, 2]
    with pytest.raises(ValueError, match="own lengths"):
        rows_of(GenerationOutput(frames=merged.frames), 0, 1)


def test_trace_video_overlaps_large_clips(pipe, staged_calls, tmp_path, monkeypatch):
    """trace_video's clips take the same overlapped path as trace_rgba_clip (those longer than overlap_frames)."""
    pytest.importorskip("av")
    from triton_autogaze.video import read_video, write_video

    path = write_video(tmp_path / "clip.mp4", rgba(5, 48, 64, seed=3)[..., :3])
    decoded = read_video(path)
    fed = []
    run_chunks = pipe._run_chunks
    monkeypatch.setattr(pipe, "_run_chunks", lambda frames, *a: fed.append(frames.shape[0]) or run_chunks(frames, *a))
    traces = list(pipe.trace_video(path, clip_len=3, progress=False, **SMALL))
    assert staged_calls == [(3, 48, 64, 3), (2, 48, 64, 3)]  # both clips through the stage,
    assert fed == [3]  # and the model overlapped with the upload where the clip is longer than overlap_frames
    up, pipe.uploader = pipe.uploader, None
    for t, (a, b) in zip(traces, [(0, 3), (3, 5)]):
        assert_same_trace(t, pipe.run_packed(pipe.packed(decoded[a:b]), GazeOptions(**SMALL)))
    pipe.uploader = up


def test_options_for_frames():
    """Scalars apply to every frame (the same options back); per-frame tuples are cut to the frames asked for."""
    o = GazeOptions(gazing_ratio=0.5, task_loss_requirement=None)
    assert o.for_frames(3, 4) is o
    o = GazeOptions(gazing_ratio=[0.1, 0.2, 0.3], task_loss_requirement=0.7)
    cut = o.for_frames(1, 3)
    assert cut.gazing_ratio == (0.2, 0.3) and cut.task_loss_requirement == 0.7
    o = GazeOptions(gazing_ratio=0.5, task_loss_requirement=[0.1, 0.2, 0.3])
    assert o.for_frames(0, 1).task_loss_requirement == (0.1,)
