"""TritonGenerator vs the pure-torch reference (token equality, confidences within 1e-5).

On a CPU-only machine the Triton kernels run under the interpreter, so inputs are trimmed: the fixtures' stored
vision embeddings (2 frames), budget 13 (ratio 0.05). GPU-only tests cover CUDA graphs, full clips and bf16.
"""

from __future__ import annotations

import dataclasses
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from fixture_data import SHARED  # noqa: E402
from triton_autogaze.checkpoint import load_checkpoint  # noqa: E402
from triton_autogaze.engine import TritonGenerator  # noqa: E402
from triton_autogaze.engine.generator import row_group_defaults  # noqa: E402
from triton_autogaze.reference.decoder import Decoder  # noqa: E402
from triton_autogaze.reference.generate import generate_upstream, merge_rows, new_state  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
DEV = torch.device("cuda" if CUDA else "cpu")


def fixture_dir() -> Path:
    """tests/fixtures if it holds the model, else $AUTOGAZE_SHARED_FIXTURES, else <repo>/../shared/fixtures."""
    local = REPO / "tests" / "fixtures"
    if (local / "model" / "config.json").is_file():
        return local
    return Path(os.environ.get("AUTOGAZE_SHARED_FIXTURES", str(REPO.parent / "shared" / "fixtures")))


@pytest.fixture(scope="module")
def model():
    fx = fixture_dir()
    if not (fx / "model" / "config.json").is_file():
        pytest.skip(f"fixture model not found under {fx}")
    cfg, w, _ = load_checkpoint(fx / "model")
    return cfg, w, Decoder({k: t.to(DEV) for k, t in w.items()}, cfg)


@pytest.fixture(scope="module")
def vision():
    """[2, 2, 196, 192]: the stored connector output of two different fixture videos (frames 0-1)."""
    from safetensors.torch import load_file

    fx = fixture_dir()
    rows = []
    for name in ("clip224_t4", "batch2_t4", "clip224_t16", "ratio_only_t3"):
        p = fx / f"{name}.safetensors"
        if p.is_file():
            rows.append(load_file(str(p))["vision_embeds"])
        if len(rows) == 2:
            return torch.cat(rows, 0).to(DEV).contiguous()
    pytest.skip("need two fixture cases with vision_embeds")


@pytest.fixture(scope="module")
def gen(model):
    cfg, w, _ = model
    return TritonGenerator(w, cfg, use_cuda_graph=False)


def reference(model, v, budgets, tau, semantics):
    cfg, _, dec = model
    if semantics == "upstream":
        return generate_upstream(dec, cfg, v, budgets, tau, new_state(dec, v.shape[0], 16))
    return merge_rows(cfg, [generate_upstream(dec, cfg, v[b:b + 1], budgets, None if tau is None else tau[b:b + 1],
                                              new_state(dec, 1, 16)) for b in range(v.shape[0])])


def assert_same(out, ref):
    assert len(out.frames) == len(ref.frames)
    for t, (fo, fr) in enumerate(zip(out.frames, ref.frames)):
        assert fo.ids.shape == fr.ids.shape, f"frame {t}: length {fo.ids.shape} vs {fr.ids.shape}"
        assert torch.equal(fo.ids.cpu(), fr.ids.cpu()), f"frame {t}: ids differ\n{fo.ids}\n{fr.ids}"
        torch.testing.assert_close(fo.confidence.cpu(), fr.confidence.cpu(), rtol=0, atol=1e-5)


# tau rows: -2.0 keeps going; -1.5 stops row 0 of these inputs after its first step of frame 0, so the rows
# finish at different steps and upstream and independent semantics give different tokens in frame 1.
TAUS = {"none": None, "-2": [[-2.0, -2.0], [-2.0, -2.0]], "mixed": [[-1.5, -2.0], [-2.0, -1.5]]}


@pytest.mark.parametrize("semantics,rows,tau", [
    ("upstream", 1, "none"), ("upstream", 2, "-2"), ("upstream", 2, "mixed"),
    ("independent", 1, "-2"), ("independent", 2, "none"), ("independent", 2, "mixed"),
])
def test_matches_reference(model, vision, gen, semantics, rows, tau):
    v = vision[:rows].contiguous()
    taut = None if TAUS[tau] is None else torch.tensor(TAUS[tau], device=DEV)[:rows].contiguous()
    out, _ = gen.run(v, [13, 13], taut, semantics)
    assert_same(out, reference(model, v, [13, 13], taut, semantics))


def test_streaming_continuation(model, vision, gen):
    """run(frame 0) then run(frame 1, state) == run(frames 0-1), in independent semantics with ragged pending."""
    v = vision.contiguous()
    tau = torch.tensor(TAUS["mixed"], device=DEV)
    whole, _ = gen.run(v, [13, 13], tau, "independent")
    first, st = gen.run(v[:, :1].contiguous(), [13], tau[:, :1].contiguous(), "independent")
    second, st = gen.run(v[:, 1:].contiguous(), [13], tau[:, 1:].contiguous(), "independent", st)
    assert st.frames == 2
    for fa, fb in zip(first.frames + second.frames, whole.frames):
        assert torch.equal(fa.ids, fb.ids)
        torch.testing.assert_close(fa.confidence, fb.confidence, rtol=0, atol=1e-6)


def test_state_is_consumed(gen, vision):
    _, st = gen.run(vision[:1, :1].contiguous(), [3], None, "upstream")
    gen.run(vision[:1, 1:].contiguous(), [3], None, "upstream", st)
    with pytest.raises(ValueError, match="consumed"):
        gen.run(vision[:1, 1:].contiguous(), [3], None, "upstream", st)


def test_input_errors(gen, vision):
    v = vision[:1, :1].contiguous()
    with pytest.raises(ValueError, match="budgets"):
        gen.run(v, [0], None, "upstream")
    with pytest.raises(ValueError, match="budgets"):
        gen.run(v, [13, 13], None, "upstream")
    with pytest.raises(ValueError, match="semantics"):
        gen.run(v, [13], None, "batched")
    with pytest.raises(ValueError, match="tau"):
        gen.run(v, [13], torch.zeros(2, 1, device=DEV), "upstream")
    with pytest.raises(ValueError, match="vision"):
        gen.run(v.double(), [13], None, "upstream")
    _, st = gen.run(v, [3], None, "upstream")
    with pytest.raises(ValueError, match="state"):
        gen.run(vision[:, :1].contiguous(), [3], None, "upstream", st)


def test_torch_backend_matches_reference(model, vision):
    """The torch-op fallback (CPU without the interpreter) follows the same state machine."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, backend="torch", device=DEV)
    tau = torch.tensor(TAUS["mixed"], device=DEV)
    for sem in ("upstream", "independent"):
        out, _ = g.run(vision, [26, 13], tau, sem)
        assert_same(out, reference(model, vision, [26, 13], tau, sem))


# ----- GPU only ---------------------------------------------------------------------------------------------
def _clip(model, name, frames=None):
    from safetensors.torch import load_file

    from triton_autogaze.reference.vision import encode_video

    cfg, w, _ = model
    # the compact tests/fixtures hold the short cases; the 16-frame clip is only in the shared set (the same
    # checkpoint, so the model fixture stays the local one)
    places = [fixture_dir() / f"{name}.safetensors", SHARED / f"{name}.safetensors"]
    p = next((q for q in places if q.is_file()), None)
    if p is None:
        pytest.skip(f"{name}.safetensors missing under {places[0].parent} and {places[1].parent}")
    x = load_file(str(p))["raw_rgb"].float().permute(0, 1, 4, 2, 3) / 127.5 - 1
    if frames:
        x = x[:, :frames]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 1, 3, 1, 1)
    emb, _ = encode_video({k: t.to(DEV) for k, t in w.items()}, cfg, ((x - mean) / std).to(DEV))
    return emb.contiguous()


@needs_gpu
@pytest.mark.parametrize("semantics", ["upstream", "independent"])
@pytest.mark.parametrize("tau", [None, -2.0])
def test_gpu_graph_full_budget(model, semantics, tau):
    """Full clips (ratio 0.75), CUDA graphs: eager first call, captured second, replayed third."""
    cfg, w, _ = model
    v = _clip(model, "batch2_t4")
    B, T = v.shape[:2]
    taut = None if tau is None else torch.full((B, T), tau, device=DEV)
    ref = reference(model, v, [198] * T, taut, semantics)
    g = TritonGenerator(w, cfg, use_cuda_graph=True)
    for _ in range(3):
        out, _ = g.run(v, [198] * T, taut, semantics)
        assert_same(out, ref)


@needs_gpu
def test_gpu_long_clip_streaming(model):
    cfg, w, _ = model
    v = _clip(model, "clip224_t16")
    T = v.shape[1]
    tau = torch.full((1, T), -2.0, device=DEV)
    ref = reference(model, v, [198] * T, tau, "upstream")
    g = TritonGenerator(w, cfg)
    st, frames = None, []
    for t in range(T):
        out, st = g.run(v[:, t:t + 1].contiguous(), [198], tau[:, t:t + 1].contiguous(), "upstream", st)
        frames += out.frames
    out.frames = frames
    assert_same(out, ref)


@needs_gpu
@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_gpu_repeated_batched_calls_are_bit_identical(model, semantics):
    """8 rows stopping at different steps (tau -2), fresh generators each call: ids and confidences equal bit for
    bit. A race between the warps of frame_setup made 2-4 calls in 11 differ here (RESULTS.md, fifth pass)."""
    cfg, w, _ = model
    B, T = 8, 4
    v = (torch.randn(B, T, cfg.num_tokens, cfg.decoder.hidden_size, generator=torch.Generator().manual_seed(0))
         * 0.5).to(DEV)
    tau = torch.full((B, T), -2.0, device=DEV)
    first = None
    for _ in range(6):
        out, _ = TritonGenerator(w, cfg, use_cuda_graph=False).run(v, [198] * T, tau, semantics)
        if first is None:
            first = out
            continue
        for a, b in zip(first.frames, out.frames):
            assert torch.equal(a.ids, b.ids) and torch.equal(a.confidence, b.confidence)


@needs_gpu
@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_gpu_programmatic_dependent_launch_changes_nothing(model, semantics, monkeypatch):
    """The chained kernels launched with PDL (kernels/_pdl.py, on by default on an H100) give the same ids and
    confidences, bit for bit, as the plain launches: eager, captured and replayed, rows stopping at different
    steps."""
    cfg, w, _ = model
    B, T = 8, 3
    v = (torch.randn(B, T, cfg.num_tokens, cfg.decoder.hidden_size, generator=torch.Generator().manual_seed(1))
         * 0.5).to(DEV)
    tau = torch.full((B, T), -2.0, device=DEV)
    outs = {}
    for pdl in ("2", "1", "0"):  # the default, early launch, off
        monkeypatch.setenv("AUTOGAZE_PDL", pdl)
        g = TritonGenerator(w, cfg, use_cuda_graph=True)
        outs[pdl] = [g.run(v, [198] * T, tau, semantics)[0] for _ in range(3)]
    for a_out in outs["2"][1:] + outs["1"] + outs["0"]:
        for a, b in zip(outs["2"][0].frames, a_out.frames):
            assert torch.equal(a.ids, b.ids) and torch.equal(a.confidence, b.confidence)


@pytest.mark.parametrize("chunk,key_block,down_k,split_k,prefill_split_k,vocab_parts,merge_group,oproj", [
    (64, 64, 64, 0, 0, 3, 2, 64), (128, 32, 256, 16, 0, 1, 8, None), (256, 64, 128, 64, 64, 9, 16, 32)])
def test_other_split_sizes_match_reference(model, vision, chunk, key_block, down_k, split_k, prefill_split_k,
                                           vocab_parts, merge_group, oproj):
    """Other attention splits (more partials to merge, in other group sizes; o_proj in column blocks), MLP inner
    blocks, product slicings (decode and prefill) and selection programs a head give the same tokens."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False, chunk=chunk)
    g.key_block, g.mlp_block_k = key_block, down_k
    g.decode_split_k, g.prefill_split_k = split_k, prefill_split_k
    g.select_vocab_parts, g.merge_group, g.oproj_block = vocab_parts, merge_group, oproj
    v = vision[:2].contiguous()
    out, _ = g.run(v, [13, 13], None, "independent")
    assert_same(out, reference(model, v, [13, 13], None, "independent"))


@pytest.mark.parametrize("split_k,prefill_split_k", [(32, 0), (0, 64)])
def test_f64_products_match_reference(model, vision, split_k, prefill_split_k):
    """fp32 mode with the decoder's products on fp64 tensor cores (exact products, fp64 sums): same tokens."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    g.f64_dots, g.decode_split_k, g.prefill_split_k = True, split_k, prefill_split_k
    v = vision[:2].contiguous()
    for sem in ("upstream", "independent"):
        out, _ = g.run(v, [13, 13], None, sem)
        assert_same(out, reference(model, v, [13, 13], None, sem))


def test_decode_chunk_grows_with_keys_and_rows(model):
    """The GPU rule (bench/attention_micro.py): the smallest chunk that keeps rows x heads x splits <= 128."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    g.decode_chunks, g.key_block, g.chunk, g.decode_programs = (64, 128), 64, 256, 128
    g.max_programs = 0  # past the decode chunks, the chunk itself (the large-launch rule is tested below)
    assert [g.decode_chunk(1, k) for k in (100, 1000, 1344, 1345, 2000, 3600)] == [64, 64, 64, 128, 128, 256]
    assert [g.decode_chunk(8, k) for k in (100, 1000, 3600)] == [64, 256, 256]
    g.decode_chunks = ()
    assert g.decode_chunk(1, 100) == 256


def test_oproj_blocks_for_launches_of_more_programs_than_sms(model):
    """The GPU rule: attention launches of more programs (rows x heads x query blocks x splits) than the GPU has
    SMs take 64-column o_proj products with fp64 or bf16 tensor-core products, and so do fp64 launches of more
    than 16 queries a program; small decode launches, IEEE fp32 products and an explicit ``oproj_block`` are left
    as they are."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    g.sms, g.oproj_block_many = 132, 64
    assert g.oproj_block_for(1, 10, 16, 3600, 256, "f64") is None  # 6 heads x 15 splits = 90 programs
    assert g.oproj_block_for(8, 10, 16, 3600, 256, "f64") == 64  # 720 programs
    assert g.oproj_block_for(1, 206, 32, 3600, 256, "f64") == 64  # 6 x 7 query blocks x 15 splits
    assert g.oproj_block_for(1, 206, 32, 200, 256, "f64") == 64  # 42 programs, but 32 queries each (prefill)
    assert g.oproj_block_for(8, 10, 16, 3600, 256, "bf16") == 64  # bf16 tensor cores: by the program count only
    assert g.oproj_block_for(1, 206, 64, 200, 256, "bf16") is None
    assert g.oproj_block_for(8, 10, 16, 3600, 256, "fp32") is None  # IEEE fp32 FMA products: not measured
    g.oproj_block = 32
    assert g.oproj_block_for(1, 10, 16, 3600, 256, "f64") == 32
    g.oproj_block, g.oproj_block_many = None, None
    assert g.oproj_block_for(8, 10, 16, 3600, 256, "f64") is None


def test_adaptive_decode_chunks_match_reference(model, vision):
    """Decode feeds taking 32-, 64- and 128-key chunks as the cache grows (each step its own split count and
    scratch use) give the reference's tokens; every ticket is back to zero after the call."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False, chunk=256)
    g.key_block, g.decode_chunks, g.decode_programs = 32, (32, 64, 128), 2 * 6 * 8
    v = vision[:2].contiguous()
    ends = {g.decode_chunk(2, e) for e in range(200, 700, 10)}
    assert ends == {32, 64, 128}
    out, st = g.run(v, [30, 30], None, "independent")
    assert_same(out, reference(model, v, [30, 30], None, "independent"))
    assert not st._ws.att_decode.cnt.any()


def test_large_launches_take_larger_chunks(model):
    """The GPU rule for many rows (bench/attention_micro.py at 45 rows): the chunk doubles, up to max_chunk, while
    a decode or prefill launch would exceed max_programs programs; 0 turns it off."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    g.decode_chunks, g.key_block, g.chunk, g.max_chunk, g.max_programs = (64, 128), 64, 256, 1024, 1600
    g.decode_programs, g.prefill_max_programs = 128, None  # the GPU's fp64 mode sets its own prefill limit
    assert [g.decode_chunk(45, k) for k in (1000, 1500, 3600)] == [256, 512, 1024]
    assert g.decode_chunk(8, 3600) == 256  # 8 x 6 x 15 = 720 programs
    assert g.prefill_chunk(1, 206, 64, 3600) == 256  # 24 query blocks x 15 splits
    assert g.prefill_chunk(45, 206, 64, 1000) == 1024  # 1080 query blocks: capped at max_chunk
    g.prefill_max_programs = 200  # prefill launches' own limit (fp64 products on the GPU)
    assert [g.prefill_chunk(1, 206, 32, k) for k in (600, 1000, 1800, 3600)] == [256, 256, 512, 1024]
    assert g.decode_chunk(1, 3600) == 256  # decode launches keep max_programs
    g.prefill_max_programs = None
    g.max_programs = 0
    assert g.decode_chunk(45, 3600) == g.prefill_chunk(45, 206, 64, 3600) == 256


def test_large_chunks_and_prefill_attention_blocks_match_reference(model, vision):
    """Chunks growing with the cache (64 -> 128 -> 256 keys, decode and prefill), larger key blocks (prefill, and
    decode at the largest chunk), and prefill attention programs of their own query count (64, while the other prefill kernels take 256)
    give the reference's tokens."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False, chunk=64)
    g.key_block, g.decode_chunks, g.max_chunk, g.max_programs = 32, (), 256, 2 * 6 * 3
    g.prefill_max_programs = None  # prefill launches take max_programs too (the GPU's fp64 mode sets 200)
    g.prefill_attention_block = 64
    g.prefill_key_block = g.large_decode_key_block = 64  # prefill, and decode launches at large_chunk: 64 keys
    g.large_chunk = 256
    assert {g.decode_chunk(2, e) for e in range(200, 700, 10)} == {128, 256}
    assert {g.prefill_chunk(2, 206, 64, e) for e in (206, 400)} == {256}
    assert [g.key_block_for(c, p) for c in (128, 256) for p in (False, True)] == [32, 64, 64, 64]
    v = vision[:2].contiguous()
    out, st = g.run(v, [30, 30], None, "independent")
    assert st._ws.att_prefill.bq == 64
    assert_same(out, reference(model, v, [30, 30], None, "independent"))
    assert not st._ws.att_decode.cnt.any() and not st._ws.att_prefill.cnt.any()


@pytest.mark.parametrize("semantics,flat,flat_qkv", [("upstream", True, True), ("independent", True, True),
                                                    ("independent", True, False), ("upstream", False, False)])
def test_flat_and_per_row_decode_programs_match_reference(model, vision, semantics, flat, flat_qkv):
    """Decode feeds' row-wise programs of 16 consecutive tokens across rows (flat_decode, the default; with or
    without rmsnorm_qkv_rope) and one padded block a row, with three rows stopping at different steps (task-loss
    thresholds), give the reference's tokens."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    assert g.flat_decode and g.flat_qkv
    g.flat_decode, g.flat_qkv = flat, flat_qkv
    v = torch.cat([vision[:2], vision[:1] * 0.9]).contiguous()
    tau = torch.tensor([[-5.0], [0.5], [-5.0]], device=DEV).expand(3, v.shape[1]).contiguous()
    out, _ = g.run(v, [30] * v.shape[1], tau, semantics)
    assert_same(out, reference(model, v, [30] * v.shape[1], tau, semantics))


@pytest.mark.parametrize("semantics", ["upstream", "independent"])
def test_tickets_are_back_to_zero_after_a_call(model, vision, semantics):
    """The attention merge and the selection hand work to the last program of a group through integer tickets;
    a counter left non-zero would make the next launch merge before every partial is written (a race on the
    GPU). With two splits of keys and rows stopping at different steps, every counter is zero after the call.
    (The same passed under the interpreter with the GPU's block sizes: 16-wide MLP/head slices, 32-token prefill
    blocks, 64-key blocks; ten minutes there, so CI runs the interpreter's own sizes.)"""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    if semantics == "independent":  # and with the selection shared out over 9 programs a head (90 tickets a row)
        g.select_vocab_parts = 9
    v = vision[:2].contiguous()
    tau = torch.tensor([[-5.0, -5.0], [0.5, 0.5]], device=DEV)
    out, st = g.run(v, [60, 40], tau, semantics)
    ws = st._ws
    assert int(ws.clen.max()) > ws.chunk, "the call should need more than one key split"
    for name, cnt in (("prefill attention", ws.att_prefill.cnt), ("decode attention", ws.att_decode.cnt),
                      ("selection", ws.select.cnt)):
        assert not cnt.any(), f"{name} tickets left at {cnt[cnt != 0].tolist()[:8]}"
    assert_same(out, reference(model, v, [60, 40], tau, semantics))


def test_too_large_for_32bit_offsets_is_a_clear_error(model):
    """The kernels address buffers with 32-bit offsets: a workspace past 2^31 elements is refused by name
    before anything is allocated (1800 rows x 6400 cached tokens: 2.2e9 K/V elements per layer)."""
    from triton_autogaze.engine.workspace import CallBuffers, Workspace

    cfg, w, _ = model
    gen = TritonGenerator(w, cfg, use_cuda_graph=False)
    with pytest.raises(ValueError, match="KV cache"):
        Workspace(cfg, 1800, 6400, DEV, torch.float32, gen.w.inv_freq, 32, 16, 256)
    with pytest.raises(ValueError, match="vision"):
        CallBuffers(600000, 100, 198, cfg, DEV)



@pytest.mark.parametrize("dots,groups", [(True, False), (False, False), (True, True)])
def test_bf16_engine_matches_torch_ops(model, vision, dots, groups):
    """bf16 mode, with tensor-core products (``bf16_dots``, the default) or fp32 products of bf16 weights: the
    Triton kernels against the same engine on their torch references (which round the products' operands the
    same way, except the attention's per-block probabilities), on the trimmed fixture inputs. bf16 may differ
    from fp32 (its agreement is reported by bench/bf16_agreement.py, not asserted: the random-weight logits are
    nearly flat), and the two runs here may differ where two candidates nearly tie.

    So, per row in time order: every decision and confidence agrees up to the row's first differing decision;
    that one must be a near-tie (the two runs' confidences in their different picks agree within the same
    tolerance); after it the runs choose from different sets (ids chosen earlier in the step are excluded) and
    feed different tokens, so nothing later in that row is compared. At least half of all slots must come before
    a flip. (The interpreter's runs do not flip; an H100 flipped one slot of 52, an H200 two.) ``groups``: the
    Triton run's two rows as two row groups (bf16 groups from 32 rows by default; on a GPU on two streams)."""
    cfg, w, _ = model
    v = vision[:2].contiguous()
    outs = []
    for backend in ("triton", "torch"):
        g = TritonGenerator(w, cfg, dtype=torch.bfloat16, use_cuda_graph=False, backend=backend)
        g.bf16_dots = dots
        if groups and backend == "triton":
            g.row_group_rows, g.max_row_groups = 1, 2  # full budget (tau None): stopping_row_groups does not apply
            assert len(g.row_groups(2, "independent", no_stopping=True)) == 2
        out, _ = g.run(v, [13, 13], None, "independent")
        outs.append(out)
    total = compared = 0
    flipped = [False] * v.shape[0]
    for a, b in zip(*(o.frames for o in outs)):
        assert a.ids.shape == b.ids.shape
        total += a.ids.numel()
        for r in range(a.ids.shape[0]):
            if flipped[r]:
                continue
            eq = a.ids[r] == b.ids[r]
            first = int((~eq).nonzero()[0]) if not bool(eq.all()) else eq.numel()
            end = min(first + 1, eq.numel())  # the flip's own confidences too: a near-tie
            torch.testing.assert_close(a.confidence[r, :end], b.confidence[r, :end], rtol=0, atol=2e-3)
            compared += first
            flipped[r] = first < eq.numel()
    assert compared >= total // 2, f"only {compared} of {total} decisions came before a row's first flip"


@pytest.mark.parametrize("segment,groups", [(1, False), (2, False), (1, True)])
def test_fed_segments_equal_one_call(model, vision, segment, groups):
    """run_fed: the clip's vision fed a few frames at a time into one call (rows stopping at different steps)
    gives the reference's tokens; feed(a, b) is asked for each segment in order, and a wrongly shaped piece is
    a clear error. ``groups``: the two rows as two row groups, each fed its rows of every segment."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    if groups:
        g.row_group_rows, g.max_row_groups = 1, 2
    v = torch.cat([vision, vision[:, :1] * 0.9], 1).contiguous()  # [2, 3, N, C]
    tau = torch.tensor([[-5.0], [0.5]], device=DEV).expand(2, 3).contiguous()
    asked = []

    def feed(a, b):
        asked.append((a, b))
        return v[:, a:b]

    out, _ = g.run_fed(feed, 2, [20, 30, 20], tau, "independent", segment=segment)
    assert asked == [(a, min(3, a + segment)) for a in range(0, 3, segment)]
    assert_same(out, reference(model, v, [20, 30, 20], tau, "independent"))
    with pytest.raises(ValueError, match=r"feed\(0, 1\): expected \[2, 1,"):
        g.run_fed(lambda a, b: v[:1, a:b], 2, [20, 30, 20], None, "independent", segment=1)
    with pytest.raises(ValueError, match="segment"):
        g.run_fed(feed, 2, [20, 30, 20], None, "independent", segment=0)


def test_row_group_rule(model):
    """row_groups: balanced, in order, at least row_group_rows rows a group and at most max_row_groups groups;
    upstream semantics (rows wait for each other) and the default off CUDA stay one group."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    assert g.row_group_rows is (4 if CUDA else None)
    assert g.row_groups(45, "independent") == ([(0, 11), (11, 22), (22, 34), (34, 45)] if CUDA else [(0, 45)])
    g.row_group_rows, g.max_row_groups = 4, 4
    assert g.row_groups(45, "independent") == [(0, 11), (11, 22), (22, 34), (34, 45)]
    assert g.row_groups(8, "independent") == [(0, 4), (4, 8)]
    assert g.row_groups(7, "independent") == [(0, 7)]
    assert g.row_groups(45, "upstream") == [(0, 45)]
    assert g.row_groups(8, "upstream", no_stopping=True) == [(0, 4), (4, 8)]
    g.row_group_rows = None
    assert g.row_groups(45, "independent") == [(0, 45)]
    assert row_group_defaults(False, False) == (4, 4, None) and row_group_defaults(True, False)[0] is None
    assert g.row_groups(45, "independent", no_stopping=True) == [(0, 45)]
    # bf16 on a GPU: 2 groups from 32 rows; with task-loss stopping 3 from 45 rows
    g.row_group_rows, g.max_row_groups, g.stopping_row_groups = row_group_defaults(False, True)
    assert g.row_groups(45, "independent", no_stopping=True) == [(0, 22), (22, 45)]
    assert g.row_groups(32, "independent", no_stopping=True) == [(0, 16), (16, 32)]
    assert g.row_groups(31, "independent", no_stopping=True) == [(0, 31)]
    assert g.row_groups(45, "independent") == [(0, 15), (15, 30), (30, 45)]
    assert g.row_groups(44, "independent") == [(0, 22), (22, 44)]
    assert g.row_groups(29, "independent") == [(0, 29)]
    assert g.row_groups(45, "upstream") == [(0, 45)]  # stopping couples upstream rows
    assert g.row_groups(45, "upstream", no_stopping=True) == [(0, 22), (22, 45)]
    g.row_group_rows = None  # off for every call
    assert g.row_groups(45, "independent") == [(0, 45)]


def test_row_groups_match_reference(model, vision):
    """A call run as row groups (each its own workspace and call; on a GPU each on its own stream) gives the
    reference's tokens at full width, hands the prepare hook all rows, returns one state that continues the same
    groups, and that state is consumed as a whole."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    g.row_group_rows, g.max_row_groups = 1, 2
    v = torch.cat([vision, vision[:1] * 0.9], 0).contiguous()  # [3, 2, N, C]: groups of rows [0, 2) and [2, 3)
    tau = torch.tensor([[-1.5, -2.0], [-2.0, -1.5], [0.5, 0.5]], device=DEV)
    seen = []
    whole, _ = g.run(v, [13, 13], tau, "independent", prepare=lambda i, c, n: seen.append(i.shape) or "made")
    assert seen == [(2, 3, 13)] and whole.padded.prepared == "made"
    assert_same(whole, reference(model, v, [13, 13], tau, "independent"))
    first, st = g.run(v[:, :1].contiguous(), [13], tau[:, :1].contiguous(), "independent")
    assert st.rows == 3 and [(a, b) for a, b, _ in st._parts] == [(0, 2), (2, 3)]
    g.max_row_groups = 3  # a continuation keeps its state's groups
    second, st2 = g.run(v[:, 1:].contiguous(), [13], tau[:, 1:].contiguous(), "independent", st)
    assert st2.frames == 2 and [(a, b) for a, b, _ in st2._parts] == [(0, 2), (2, 3)]
    for fa, fb in zip(first.frames + second.frames, whole.frames):
        assert torch.equal(fa.ids, fb.ids)
        torch.testing.assert_close(fa.confidence, fb.confidence, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="consumed"):
        g.run(v[:, 1:].contiguous(), [13], tau[:, 1:].contiguous(), "independent", st)


def test_upstream_row_groups_without_stopping(model, vision):
    """Upstream semantics without task-loss stopping runs as row groups (every row ends each frame on the budget,
    so the rows never wait for each other) and gives the batched reference's tokens; when a continuation brings
    stopping, the groups merge back into one workspace and the stream goes on exactly as if never grouped."""
    cfg, w, _ = model
    v = torch.cat([vision, vision[:1] * 0.9], 0).contiguous()  # [3, 2, N, C]
    tau1 = torch.tensor([[-1.5], [-2.0], [0.5]], device=DEV)
    outs = {}
    for grouped in (False, True):
        g = TritonGenerator(w, cfg, use_cuda_graph=False)
        g.row_group_rows, g.max_row_groups = (1, 2) if grouped else (None, 1)
        first, st = g.run(v[:, :1].contiguous(), [13], None, "upstream")
        assert (st._parts is not None) == grouped
        if grouped:
            assert_same(first, reference(model, v[:, :1].contiguous(), [13], None, "upstream"))
        second, st = g.run(v[:, 1:].contiguous(), [13], tau1, "upstream", st)
        assert st._parts is None and st.rows == 3
        outs[grouped] = first.frames + second.frames
    for fa, fb in zip(outs[True], outs[False]):
        assert torch.equal(fa.ids, fb.ids)
        torch.testing.assert_close(fa.confidence, fb.confidence, rtol=0, atol=1e-6)


def test_carry_rows_refuses_what_does_not_fit(model):
    """Workspace.carry_rows_from copies a group's rows into a larger workspace and names what does not fit."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    big, small = g._new_workspace(3, 256), g._new_workspace(2, 256)
    small.clen.copy_(torch.tensor([5, 7], dtype=torch.int32))
    small.k[0][1, 0, :4].fill_(2.0)
    big.carry_rows_from(small, 1)
    assert big.clen.tolist() == [0, 5, 7] and bool((big.k[0][2, 0, :4] == 2.0).all())
    for first in (-1, 2):
        with pytest.raises(ValueError, match="do not fit rows from"):
            big.carry_rows_from(small, first)
    with pytest.raises(ValueError, match="512 tokens"):
        big.carry_rows_from(g._new_workspace(2, 512), 0)


@needs_gpu
def test_gpu_row_groups_on_streams_match_reference(model):
    """Eight full-budget rows in the GPU's default groups (two of four, each a captured call on its own stream):
    eager, captured and replayed calls all give the reference's tokens."""
    cfg, w, _ = model
    v2 = _clip(model, "batch2_t4")
    v = torch.cat([v2 * s for s in (1.0, 0.95, 0.9, 1.05)], 0).contiguous()
    B, T = v.shape[:2]
    tau = torch.full((B, T), -2.0, device=DEV)
    ref = reference(model, v, [198] * T, tau, "independent")
    g = TritonGenerator(w, cfg, use_cuda_graph=True)
    assert g.row_groups(B, "independent") == [(0, 4), (4, 8)]
    for _ in range(3):
        out, st = g.run(v, [198] * T, tau, "independent")
        assert_same(out, ref)
        assert len(st._parts) == 2


@pytest.mark.parametrize("merge,gemm,decode_gemm", [(None, None, None), (2, 2, None), (2, 4, None), (None, None, 3)])
def test_merged_prefill_residual_matches_reference(model, vision, merge, gemm, decode_gemm):
    """prefill_merge_rows (the default: every prefill): prefill feeds merge the attention residual and norm it
    once a token (residual_norm) before mlp_gate_up(normed=True), optionally with GEMM-shaped qkv, gate-up and
    down products (prefill_gemm_rows: on for these 3 rows at 2, off at 4; decode_gemm_rows: decode feeds, with
    their own merge); None: mlp_gate_up merges in every program. With rows stopping at different steps, the
    reference's tokens either way."""
    cfg, w, _ = model
    g = TritonGenerator(w, cfg, use_cuda_graph=False)
    assert g.prefill_merge_rows == 1
    g.prefill_merge_rows = merge
    g.prefill_gemm_rows, g.decode_gemm_rows = gemm, decode_gemm
    chunks = []  # block_k of every launch of the three products

    def spy(fn):
        def call(*a, **kw):
            chunks.append(kw.get("block_k", 0))
            return fn(*a, **kw)
        return call

    g.ops = dataclasses.replace(g.ops, rmsnorm_qkv_rope=spy(g.ops.rmsnorm_qkv_rope),
                                mlp_gate_up=spy(g.ops.mlp_gate_up))
    v = torch.cat([vision[:2], vision[:1] * 0.9]).contiguous()
    tau = torch.tensor([[-5.0], [0.5], [-5.0]], device=DEV).expand(3, v.shape[1]).contiguous()
    out, st = g.run(v, [30] * v.shape[1], tau, "independent")
    assert (st._ws.m is not None) == (merge is not None or decode_gemm is not None)
    # the products are GEMM-shaped exactly when the rows reach prefill_gemm_rows or decode_gemm_rows
    assert (g.gemm_block_k in chunks) == any(r is not None and v.shape[0] >= r for r in (gemm, decode_gemm))
    assert_same(out, reference(model, v, [30] * v.shape[1], tau, "independent"))
