"""kernels/trace_record.py against the torch functions it replaces (record.assemble_record, tiling.stitch_masks,
the confidence cat). Runs on CPU under TRITON_INTERPRET=1."""

import os

import pytest

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must be set before triton decorates the kernels

from triton_autogaze.kernels.trace_record import trace_record, trace_record_ref  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SCALES = (4, 16, 49, 196)
NV = sum(SCALES)


def _padded(T: int, B: int, M: int, seed: int, empty_frame: int | None = None):
    """Engine-like full-width outputs: per (frame, row) n <= M distinct ids with pads inside, EOS past n."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((T, B, M), NV, dtype=torch.int64)
    conf = torch.zeros(T, B, M)
    lens = torch.zeros(T, B, dtype=torch.int32)
    for t in range(T):
        for b in range(B):
            n = 0 if t == empty_frame else int(torch.randint(1, M + 1, (1,), generator=g))
            row = torch.randperm(NV, generator=g)[:n]
            row[torch.rand(n, generator=g) < 0.1] = NV
            ids[t, b, :n] = row
            conf[t, b, :n] = torch.where(row == NV, 0.0, torch.rand(n, generator=g))
            lens[t, b] = n
    widths = [int(x) for x in lens.max(dim=1).values]
    return ids.to(DEV), conf.to(DEV), lens.to(DEV), widths


def _same(out, ref):
    assert set(out) == set(ref)
    for k in ("gazing_pos", "if_padded_gazing", "num_gazing_each_frame", "confidence"):
        assert out[k].dtype == ref[k].dtype and out[k].is_contiguous(), k
        assert torch.equal(out[k], ref[k]), k
    for key in ("gazing_mask", "scale_masks"):
        for s, (o, r) in enumerate(zip(out.get(key, ()), ref.get(key, ()))):
            assert o.dtype == r.dtype and o.shape == r.shape and o.is_contiguous(), (key, s)
            assert torch.equal(o, r), (key, s)


@pytest.mark.parametrize("T,B,M,tiles,crop,empty", [
    (1, 1, 199, (1, 1), None, None),  # a streamed resize-224 frame
    (1, 1, 7, None, None, None),  # no tile grid: record and per-row masks only
    (3, 4, 37, (2, 2), [(3, 4), (5, 8), (14, 9), (28, 17)], None),  # full resolution: crop top-left
    (2, 6, 20, (3, 2), None, 1),  # a frame in which no row has ids
    (5, 3, 64, (1, 3), None, None),
    (2, 70, 9, (7, 10), None, None),  # more rows than one lens block (64)
])
def test_trace_record_matches_torch(T, B, M, tiles, crop, empty):
    ids, conf, lens, widths = _padded(T, B, M, seed=T * 100 + B, empty_frame=empty)
    _same(trace_record(ids, conf, lens, widths, SCALES, tiles, crop),
          trace_record_ref(ids, conf, lens, widths, SCALES, tiles, crop))


def test_trace_record_fewer_scales():
    ids, conf, lens, widths = _padded(2, 2, 11, seed=5)
    ids = torch.where(ids >= 20, torch.full_like(ids, 20), ids)  # NV of (4, 16) is 20
    scales = (4, 16)
    _same(trace_record(ids, conf, lens, widths, scales, (1, 2)),
          trace_record_ref(ids, conf, lens, widths, scales, (1, 2)))


def test_trace_record_clear_errors():
    ids, conf, lens, widths = _padded(2, 2, 8, seed=1)
    with pytest.raises(ValueError, match="ids: expected an int64"):
        trace_record(ids.int(), conf, lens, widths, SCALES)
    with pytest.raises(ValueError, match="confidence: expected"):
        trace_record(ids, conf[:, :, :4].contiguous(), lens, widths, SCALES)
    with pytest.raises(ValueError, match="lens: expected"):
        trace_record(ids, conf, lens.float(), widths, SCALES)
    with pytest.raises(ValueError, match="frame_lengths: expected None or 2 ints in 0..8"):
        trace_record(ids, conf, lens, [3, 9], SCALES)
    with pytest.raises(ValueError, match="tiles: expected an nh x nw grid of the 2 rows"):
        trace_record(ids, conf, lens, widths, SCALES, (2, 2))
    with pytest.raises(ValueError, match=r"crop\[1\]: expected rows <= 4"):
        trace_record(ids, conf, lens, widths, SCALES, (1, 2), [(2, 4), (5, 8), (7, 14), (14, 28)])
    with pytest.raises(ValueError, match="tokens_per_scale"):
        trace_record(ids, conf, lens, widths, (4, 15))
    with pytest.raises(ValueError, match="lens: must be contiguous"):
        trace_record(ids, conf, lens.t().contiguous().t(), widths, SCALES)


def _trace_fields(tr):
    return [tr.gazing_pos, tr.if_padded_gazing, tr.num_gazing_each_frame, tr.confidence, *tr.gazing_mask,
            *tr.scale_masks]


@pytest.mark.parametrize("mode,H,W,batch", [("resize-224", 224, 224, 8), ("anyres-tile-224", 300, 500, 2),
                                            ("tiled-full-resolution", 250, 470, 3)])
def test_pipeline_assemble_full_width_outputs(mode, H, W, batch):
    """AutoGazePipeline.assemble of the engine's full-width outputs (the kernel), merged over tile batches, equals
    its torch assembly of the same frames."""
    from fixture_data import model_dir

    from triton_autogaze.pipeline import AutoGazePipeline, GazeOptions, merge_outputs
    from triton_autogaze.reference.generate import GenerationOutput, PaddedFrames

    pipe = AutoGazePipeline.from_pretrained(model_dir(), device=DEV, backend="torch")
    grid = pipe.plan(H, W, mode)
    n, T, M = grid.num_tiles, 3, 50
    outs = []
    for k, start in enumerate(range(0, n, batch)):
        ids, conf, lens, widths = _padded(T, min(n, start + batch) - start, M, seed=k)
        pf = PaddedFrames(ids, conf, lens, widths)
        outs.append(GenerationOutput(frames=pf.frame_results(), padded=pf))
    merged = merge_outputs(NV, outs)
    assert merged.padded is not None
    opts = GazeOptions(mode, 0.75, 0.7, None, batch)
    fast = pipe.assemble(grid, merged, opts, start_frame=4)
    torch_path = pipe.assemble(grid, merge_outputs(NV, [GenerationOutput(frames=o.frames) for o in outs]), opts,
                               start_frame=4)
    assert fast.start_frame == torch_path.start_frame == 4
    assert torch.equal(fast.task_loss_requirement, torch_path.task_loss_requirement)
    for a, b in zip(_trace_fields(fast), _trace_fields(torch_path), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous()
        assert torch.equal(a, b)


@pytest.mark.parametrize("T,B,M,tiles", [(1, 1, 199, (1, 1)), (3, 4, 37, (2, 2)), (2, 3, 12, None)])
def test_trace_record_before_the_widths_are_known(T, B, M, tiles):
    """frame_lengths=None (launched before the engine's sync) then cut_record equals the sized launch."""
    from triton_autogaze.kernels.trace_record import cut_record

    ids, conf, lens, widths = _padded(T, B, M, seed=11 * T + B)
    early = trace_record(ids, conf, lens, None, SCALES, tiles)
    assert early["gazing_pos"].shape == (B, T * M)
    _same(cut_record(early, widths), trace_record_ref(ids, conf, lens, widths, SCALES, tiles))


def test_engine_prepare_hook_gives_the_same_trace(monkeypatch):
    """AutoGaze.generate on the Triton backend (interpreter on CPU) builds its record in the engine's ``prepare``
    hook, before the call's sync; the trace equals the torch assembly of the same output."""
    from fixture_data import model_dir

    from triton_autogaze import AutoGaze
    from triton_autogaze.record import record_preparer
    from triton_autogaze.reference.generate import GenerationOutput

    model = AutoGaze.from_pretrained(model_dir(), device=DEV, backend="triton")
    video = torch.rand(2, 2, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(DEV) * 4 - 2
    budgets, tau = model.budgets(0.02, 2), None
    g = model._generate(video, budgets, tau, "independent", prepare=record_preparer(model.config))
    assert g.out.padded is not None and g.out.padded.prepared is not None
    import triton_autogaze.kernels.trace_record as kernel_module

    def no_second_launch(*a, **k):
        raise AssertionError("record_of launched the kernel again instead of cutting the prepared record")

    with monkeypatch.context() as m:
        m.setattr(kernel_module, "trace_record", no_second_launch)
        fast = model._trace(g.out, tau)
    slow = model._trace(GenerationOutput(frames=g.out.frames), tau)
    for a, b in zip([fast.gazing_pos, fast.if_padded_gazing, fast.num_gazing_each_frame, fast.confidence,
                     *fast.gazing_mask],
                    [slow.gazing_pos, slow.if_padded_gazing, slow.num_gazing_each_frame, slow.confidence,
                     *slow.gazing_mask], strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous()
        assert torch.equal(a, b)
