"""TritonGenerator: greedy multi-token gaze generation (SPEC §6-§7, §9) on static buffers.

One call = for each frame: frame_setup, a prefill (pending chunk + N vision tokens, 4 layers x 4 kernels),
then ``ceil(M/K)`` selection steps (heads_select) with a K-token decode feed (4 x 4 kernels) between them, then
frame_finish. Every step is launched; rows that finished (independent semantics) or batches that finished
(upstream semantics) make the kernels return at once, so a whole call has no host synchronisation and is
captured as one CUDA graph per (rows, budgets, tau or not, cache bound) shape. The only sync is at the end,
to read the frame lengths. With task-loss stopping, a captured call nests each decode step in a CUDA-graph IF
node on its alive flags (branches.py), so the steps after every row stopped are skipped on the device.
A call of many rows that do not wait for each other (independent semantics, or no task-loss stopping) runs as row
groups, each its own call on its own CUDA stream before the one sync (``TritonGenerator.row_group_rows``).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

import torch

from triton_autogaze.kernels._checks import num_sms
from triton_autogaze.kernels._products import f64_products_wanted

from ..config import AutoGazeConfig
from ..reference.generate import GenerationOutput, PaddedFrames
from .branches import Branches
from .ops import ops_for
from .plan import CallPlan, make_plan
from .workspace import CallBuffers, PackedWeights, Workspace

SEMANTICS = ("upstream", "independent")
_BUCKET = 1024  # streaming: round the start-of-call cache bound so that captured graphs get reused


class EngineState:
    """Opaque generation state returned by :meth:`TritonGenerator.run`; pass it back to continue the clip.

    A state is consumed by the call it is passed to (its buffers move on to the returned state). A call run as
    row groups (see ``TritonGenerator.row_group_rows``) returns one state per group inside this one, and its
    continuation keeps the same groups.
    """

    def __init__(self, ws: Workspace | None, semantics: str, len_hi: int, pending_hi: int, frames: int,
                 parts: list[tuple[int, int, EngineState]] | None = None):
        self._ws = ws
        self._parts = parts  # grouped: (first row, end row, the group's state) in row order
        self.semantics = semantics
        self.len_hi = len_hi  # upper bound (exact max over rows at the last sync) of the cache length
        self.pending_hi = pending_hi
        self.frames = frames

    @property
    def rows(self) -> int:
        if self._parts is not None:
            return self._parts[-1][1]
        return self._ws.rows

    @property
    def consumed(self) -> bool:
        if self._parts is not None:
            return any(st._ws is None for _, _, st in self._parts)
        return self._ws is None


def _held():  # a workspace's owner while a call uses it (the pool hands out only workspaces without one)
    return True


class _Group:
    """One row group of a call: rows [a, b), its workspace, call buffers, plan and graph key."""

    def __init__(self, a: int, b: int, ws: Workspace, bufs: CallBuffers, plan: CallPlan, key: tuple):
        self.a, self.b, self.ws, self.bufs, self.plan, self.key = a, b, ws, bufs, plan, key


def row_group_defaults(interp: bool, bf16: bool) -> tuple[int | None, int, tuple[int, int] | None]:
    """(row_group_rows, max_row_groups, stopping_row_groups) of a new generator (see TritonGenerator.__init__):
    fp32 groups of 4+ rows, up to 4; bf16 groups of 16+ rows, up to 2 (so from 32 rows), and with task-loss
    stopping of 15+ rows, up to 3 (so 3 from 45 rows); none under the interpreter."""
    if interp:
        return None, 4, None
    return (16, 2, (15, 3)) if bf16 else (4, 4, None)


class TritonGenerator:
    """Greedy gaze generation with Triton kernels. See the module docstring.

    weights: checkpoint tensors keyed without the ``gazing_model.`` prefix; cfg: the model config;
    dtype: torch.float32 (exact: fp32 weights and KV cache; the decoder's products on fp64 tensor cores where the GPU
    has fast ones, see ``f64_dots``, else IEEE fp32) or torch.bfloat16 (bf16 weights and KV cache; the decoder's
    products take bf16 operands on tensor cores with fp32 accumulation unless ``bf16_dots`` is set False);
    use_cuda_graph: capture each call shape on its second occurrence and replay it (CUDA only).
    device: where to run (default: CUDA if available); backend: "auto" | "triton" | "torch" (see ops.py).
    """

    def __init__(self, weights: dict[str, torch.Tensor], cfg: AutoGazeConfig, dtype: torch.dtype = torch.float32,
                 use_cuda_graph: bool = True, device: torch.device | str | None = None, backend: str = "auto",
                 chunk: int = 256):
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError(f"dtype: expected torch.float32 or torch.bfloat16, got {dtype}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.cfg, self.dtype = cfg, dtype
        self.ops = ops_for(self.device, backend)
        self.use_graph = bool(use_cuda_graph) and self.device.type == "cuda" and self.ops.triton
        self.w = PackedWeights(weights, cfg, self.device, dtype)
        d = cfg.decoder
        self.K, self.N, self.C = d.num_multi_token_pred, cfg.num_tokens, d.hidden_size
        self.eps, self.eos = d.rms_norm_eps, cfg.eos_id
        # The interpreter pays per program, so CPU runs use few, large programs.
        interp = self.device.type != "cuda"
        f64 = f64_products_wanted(self.device, dtype)  # fp32 mode's products on fp64 tensor cores (see f64_dots)
        self.chunk = chunk
        # Decode feeds are 10 tokens: latency-bound, so GPU programs take narrow output slices (many programs,
        # small register tiles); the interpreter wants the opposite.
        # bf16 tensor-core products take 32 (H200: 45 rows 165.2 -> 146.3 ms, 8 clips 62.6 -> 61.9, one clip
        # 35.2 -> 34.7; fp32 32 is 1.5x slower at 45 rows: bench/engine_gpu.py --block-i / --block-c)
        wide = 32 if dtype == torch.bfloat16 else 16
        self.mlp_block_i = 256 if interp else wide
        self.mlp_block_c = 256 if interp else wide
        self.mlp_block_k = 128
        # the same for prefill feeds (None: mlp_block_i / mlp_block_c)
        self.prefill_block_i = None
        self.prefill_block_c = None
        # tokens a prefill program (a workspace's prefill scratch is sized for it). bf16 tensor-core products
        # take 64 (8 clips 71.5 -> 67.0 ms on an H200, 72.8 -> 68.3 on an H100); fp32 FMA products 32 (64 was
        # 1.5x slower in the fourth pass): set 32 too when turning bf16_dots off
        self.prefill_block = 256 if interp else (64 if dtype == torch.bfloat16 else 32)
        # queries a prefill attention program (None: prefill_block). fp32 64 helps many rows and hurts one: H200,
        # 45 rows, 3600 keys, 2401 us a launch vs 3066 at 32 (bench/attention_micro.py --prefill-bq), but one clip
        # 63.4 -> 66.4 ms (bench/engine_gpu.py --prefill-attention-block 64), so it is off by default
        self.prefill_attention_block = None
        self.decode_block = 16
        # rotation pairs per rmsnorm_qkv_rope program; bf16 32 (H200: 45 rows 146.6 -> 141.6 ms, one clip and 8
        # clips unchanged: bench/engine_gpu.py --head-block)
        self.head_block = 128 if interp else (32 if dtype == torch.bfloat16 else 16)
        self.key_block = 256 if interp else 64
        # launch shapes of the two ticket kernels, for sweeps (bench/engine_gpu.py --attention-warps,
        # --merge-group, --oproj-block, --select-warps, --vocab-parts); the defaults are the measured configuration
        self.attention_warps = 4  # 2 / 8: one clip 45.3 -> 54.5 / 46.7 ms, 8 clips 82.9 -> 91.0 / 99.5 (H100, fp32)
        self.merge_group = 8
        self.oproj_block = None  # attention's o_proj columns per product, every launch (None: the rule below)
        # ... and by default: launches of more programs than the GPU has SMs run several programs an SM, as many as
        # their registers allow, and the o_proj tail (the merge's [C x D] weight tile, pow2(C) = 256 of C = 192
        # columns, upcast to fp64) sets the whole kernel's count: 64-column products take 254 -> 168 registers a
        # thread. H100, fp64 products: 8 clips 90.6 -> 86.7 ms, 45 rows 315.3 -> 300.4; a one-row decode launch
        # (fewer programs than SMs) is ~1% slower with them, so it keeps one product, but programs of more than 16
        # queries (prefill) spill with one: 64 columns there at any size (one row, 1000 keys: 27.6 -> 26.1 us a
        # launch; bench/attention_micro.py, RESULTS.md thirteenth pass). bf16 tensor-core launches take them by the
        # program count only (they do not spill): 45 rows 138.8 -> 135.2 ms, 8 clips -0.7%. IEEE fp32 FMA launches
        # (GPUs without fast fp64) were not measured and keep one product.
        self.oproj_block_many = 64
        self.sms = 0 if interp else num_sms(self.device)
        # heads_select's warps: 8 (H100, fp32: one clip 45.3 -> 44.5 ms, tau -2 12.7 -> 12.5; 8 clips and 45 rows
        # within noise; 16 no better; RESULTS.md fourteenth pass)
        self.select_warps = 8
        # warps of a rmsnorm_qkv_rope / mlp_gate_up / mlp_down program, decode and prefill feeds
        # (bench/engine_gpu.py --linear-warps / --prefill-linear-warps). 4: H100, fp32, one clip 45.3 ms; decode 2 /
        # 8 / 16 warps 50.4 / 54.1 / 64.5 (more warps: shorter chains per warp, but cross-warp reductions and
        # layout conversions on the path); prefill 8 46.3, 8 clips 82.9 -> 88.6 (RESULTS.md fourteenth pass)
        self.linear_warps = 4
        self.prefill_linear_warps = 4
        # Decode attention while the cache is short: the smallest of these chunks that keeps the launch at most
        # decode_programs programs (rows x heads x splits), else ``chunk``. A split walks its chunk's key blocks
        # in sequence and the last split merges them all, so the best chunk grows with the keys and the rows:
        # H100, fp32, one row: 1000 keys 17.3 / 14.2 / 12.7 us a launch at chunk 256 / 128 / 64, 3600 keys
        # 20.5 / 23.3 / 34.6 us; 8 rows: chunk 256 best from 1000 keys (bench/attention_micro.py, RESULTS.md).
        self.decode_chunks = () if interp else (64, 128)
        self.decode_programs = 128
        # Large launches (many rows: AnyRes tiles) the other way: ``chunk`` doubles, up to max_chunk, while a launch
        # would exceed max_programs programs (decode and prefill). Each split program is a latency-bound chain, so
        # past ~12 programs an SM the waves cost more than the longer chain: H200, 45 rows, 3600 keys, decode bf16
        # 125 / 109 / 68 us at chunk 256 / 512 / 1024, fp32 282 / 272 / 247; prefill bf16 759 -> 550 us, fp32
        # 3317 -> 3066 at 1024 (bench/attention_micro.py, RESULTS.md). 0 turns it off.
        # Tensor-core (bf16) chains are shorter, so they take larger chunks sooner: bf16 prefill, 8 rows, 3600 keys
        # 144 / 123 / 103 us at 256 / 512 / 1024; 45 rows decode, 1000 keys 27.5 / 22.7 at 256 / 512. fp64
        # products 400 (with 64-column o_proj blocks in large launches, H100: 8 clips 87.0 -> 83.5 ms; 45 rows and
        # one clip within 1%; RESULTS.md thirteenth pass).
        bf16 = dtype == torch.bfloat16
        self.max_programs = 0 if interp else (600 if bf16 else (400 if f64 else 1600))
        # bf16 to 2048: 45 rows 193 -> 179 ms (prefill at 3600 keys 549 -> 426 us a launch)
        self.max_chunk = 2048 if bf16 else 1024
        # The same rule's limit for prefill launches (None: max_programs). fp64 products, one row (42 query blocks
        # of 32): 200 takes chunk 512 from 1200 keys and 1024 from 2600 (H100, a launch at 1800 keys 37.7 -> 30.6
        # us, 3600 keys 50.8 -> 47.8; bench/attention_micro.py, RESULTS.md fifteenth pass); 8 and 45 rows take the
        # same splits either way.
        self.prefill_max_programs: int | None = 200 if f64 and not interp else None
        # Key blocks where 128 measured faster than key_block (None: key_block): fp32 prefill (one clip 63.1 ->
        # 61.8 ms; 45 rows 711 -> 661, a prefill launch at 3600 keys 3066 -> 2094 us) and bf16 decode launches of
        # large_chunk keys a split or more (45 rows 213 -> 193 ms; 68 -> 58 us a launch). fp32 decode (247 -> 264
        # us) and bf16 prefill (152 -> 183 us at 1000 keys) went the other way (H200, bench/attention_micro.py).
        # fp64 products: 64 again (H100, 45 rows 300.0 -> 294.4 ms, the others within 1%; thirteenth pass).
        self.prefill_key_block = None if interp or bf16 or f64 else 128
        self.large_decode_key_block = 128 if bf16 and not interp else None
        self.large_chunk = 1024
        # decode feeds' row-wise programs (rmsnorm_qkv_rope, mlp_gate_up, mlp_down) take 16 consecutive tokens
        # across rows (flat=True): 29 programs a column block instead of 45 at 45 rows, no per-row padding of the
        # 10 tokens. MLP only, H200: 45 rows fp32 661.6 -> 639.1 ms, bf16 177.5 -> 169.0; 8 clips 159.0 -> 155.4
        # / 63.2 -> 63.0; one row unchanged (bench/engine_gpu.py --[no-]flat-decode, RESULTS.md ninth pass)
        self.flat_decode = True
        self.flat_qkv = True  # with flat_decode, rmsnorm_qkv_rope too (bench/engine_gpu.py --no-flat-qkv)
        # prefill feeds of at least this many rows merge the attention residual and norm it once a token
        # (residual_norm) before mlp_gate_up, whose column programs otherwise each re-read the H + 1 inputs.
        # H200: 45 rows fp32 610.9 -> 593.5 ms, bf16 142.5 -> 135.0; 8 clips 150.5 -> 147.7 / 62.8 -> 62.2; one
        # clip unchanged (62.7 / 62.9, bf16 35.3 / 34.9), so on for every prefill (None: off;
        # bench/engine_gpu.py --prefill-merge-rows)
        self.prefill_merge_rows: int | None = 1
        # Prefill feeds of at least this many rows run their qkv, gate-up and down products as GEMMs: programs of
        # gemm_block_n consecutive tokens across rows (flat), each inner axis in sequential chunks of gemm_block_k
        # into accumulator tiles (fp64 with fp64 products, one rounding at the end), output tiles of 64 columns
        # (gemm_block_h rotation pairs, gemm_block_i gate and up columns, gemm_block_c down columns). Needs the
        # merged prefill residual (prefill_merge_rows). A Triton GEMM of these shapes on fp64 tensor cores runs at
        # 42-50 TFLOP/s on an H100 (bench/gemm_probe.py, 45 rows: 41 / 56 / 30 us for the three products, against
        # 229 / 247 / 107 us for the sliced products of 32-token programs). H100, fp32, alternating in one call
        # (bench/engine_gpu.py --prefill-gemm-rows 1 --gemm-block-h 16, RESULTS.md seventeenth pass): 45 rows
        # 299 -> 278 ms, tau -2 120 -> 98; 8 clips 84-87 -> 81-85, tau -2 29.4 -> 26.8; 4 rows 63.4 -> 62.1, tau -2
        # 19.6 -> 18.7; but 2 rows 51.4 -> 54.2 and one clip 44.0 -> 45.0 (too few programs): on from 4 rows.
        # 16 rotation pairs a qkv program (32: 44 bytes spilled a thread). bf16 (tensor-core products): neutral,
        # 45 rows 138.0 vs 138.8 ms, so one code path for both. None: off.
        self.prefill_gemm_rows: int | None = None if interp else 4
        # the same for decode feeds (10 tokens a row) of at least this many rows, with residual_norm before
        # mlp_gate_up as in prefill. Off: a decode feed is latency-bound, not throughput-bound (H100, from 8 rows:
        # 8 clips 79-83 -> 115-118 ms, 45 rows 277-279 -> 279-280, tau -2 98 -> 106; 32-token programs no better)
        self.decode_gemm_rows: int | None = None
        self.gemm_block_n = 64
        self.gemm_block_k = 32
        self.gemm_block_h = 16
        self.gemm_block_i = 32
        self.gemm_block_c = 64
        # heads_select programs a head, each reading 1/P of its lm_head rows: on the GPU one 32-row vocabulary
        # chunk a program (9 for 266 ids: 71.1 -> 67.0 ms a clip, bench/RESULTS.md sixth pass)
        self.select_vocab_parts = 1 if interp else -(-d.vocab_size // 32)
        # Inner-axis slice length of the qkv / gate-up / down products of decode and prefill feeds (0: one
        # product over the whole axis). A small fp32 FMA product's latency grows with its inner length, so
        # slices multiplied in parallel and summed run ~2x faster at K = 192 and 384 (bench/dot_probe.py); the
        # 16x224 clip went from 107 to 70 ms (bench/RESULTS.md).
        # The interpreter's wide prefill tiles (256 x 256) would reach Triton's 2^20-element block limit with
        # slices for larger checkpoints, so CPU runs slice only the decode feed.
        self.decode_split_k = 32
        # prefill 64 (H200, fp32: 45 rows 619.4 -> 609.8 ms, 8 clips 150.9 -> 149.3, one clip 62.7 -> 62.3)
        self.prefill_split_k = 0 if interp else 64
        # bf16 mode only: the decoder's products on tensor cores (bf16 operands, fp32 accumulation) instead of
        # fp32 FMA products of bf16 weights: 66.3 -> 35.1 ms a 16x224 clip, 177.3 -> 72.1 ms 8 clips on the H100
        # (bench/RESULTS.md sixth pass; bench/engine_gpu.py --bf16 [--no-bf16-dots])
        self.bf16_dots = True
        # fp32 mode: the decoder's products on fp64 tensor cores (fp32 operands upcast exactly, exact products,
        # fp64 sums, one rounding to fp32) where the GPU has fast ones (sm_80 / sm_90), else IEEE fp32 FMA chains.
        # At least as accurate as fp32 and never TF32; fixture tokens equal either way. H100: one clip 62.9 ->
        # 46.4 ms, 8 clips 149.4 -> 95.6, 45 rows 601 -> 337 (bench/engine_gpu.py --[no-]f64-dots, RESULTS.md).
        # AUTOGAZE_F64_DOTS=0 keeps the FMA products.
        self.f64_dots = f64
        self.f64_ops: frozenset[str] | None = None  # with f64_dots: only these ops (qkv, attention, gate_up, down)
        # Captured calls with task-loss stopping put each decode step of a frame in an IF node of the previous
        # step's body that runs only while some row is alive (engine/branches.py), so the steps after every row
        # stopped are skipped instead of launched to return at once. Exact: nothing reads a skipped step's state.
        # Off, or where the driver lacks conditional nodes, every step is launched (bench/engine_gpu.py
        # --no-skip-dead).
        self.skip_dead_steps = True
        # Independent-semantics calls of many rows (and upstream-semantics ones without task-loss stopping, whose
        # rows all end every frame on the budget together) run as row groups: each group is its own call (workspace,
        # captured graph) enqueued on its own CUDA stream, all before the call's one sync, so that one group's
        # latency-bound kernels (the decode products, heads_select) run beside another's bandwidth-bound decode
        # attention. Groups of at least row_group_rows rows, at most max_row_groups of them (None: off, the default
        # off CUDA, where the groups would run one after another). Same tokens: independent rows never see each
        # other. H100, fp32, full budget (bench/concurrency_probe.py, alternating in one process): 45 rows 277.8 ->
        # 254.2 / 245.0 / 244.0 / 253.2 ms in 2 / 3 / 4 / 6 groups, default stopping (tau 0.7) 53.9 -> 52.8 / 51.5
        # (2 / 3); 24 rows 168.5 -> 154.8 / 145.8 / 147.9 / 148.6 (2 / 3 / 4 / 6); 8 rows 81.2 -> 76.6 / 80.0 / 83.0
        # (2 / 4 / 6). Through the pipeline (bench_engine.py, 1080p AnyRes, 16 frames) 286.4 -> 253.5 ms. bf16's
        # shorter tensor-core chains leave less to overlap: 2 groups from 32 rows (45 rows 137.0 -> 124.0 ms, tau -2
        # 53.1 -> 47.4; 32 rows 108.6 -> 103.6; but 24 rows 88.3 -> 93.7 and 4 groups at 45 rows 136.8 -> 143.6).
        # RESULTS.md eighteenth and nineteenth passes. stopping_row_groups: (row_group_rows, max_row_groups) for
        # calls with task-loss stopping (None: the same rule as without; off while row_group_rows is None). Such a
        # call is short and mostly prefill, whose throughput-bound launches overlap less: bf16 45 rows at tau 0.7
        # 26.70 / 26.53 / 23.96 ms in 1 / 2 / 3 groups (nineteenth pass), 27.84 / 27.62 / 24.76 (twenty-first),
        # while at full budget 3 groups were slower than 2 (130.9 vs 128.0).
        self.row_group_rows, self.max_row_groups, self.stopping_row_groups = row_group_defaults(interp, bf16)
        self._streams: list[torch.cuda.Stream] = []
        self._pool: dict[tuple, list[Workspace]] = {}

    # ----- public API ---------------------------------------------------------------------------------------
    def run(self, vision: torch.Tensor, budgets: list[int], tau: torch.Tensor | None, semantics: str,
            state: EngineState | None = None, prepare: Callable | None = None) -> tuple[GenerationOutput, EngineState]:
        """vision [B, T, N, C] fp32 on this device; budgets: T ints in 1..NV; tau [B, T] fp32 or None;
        semantics "upstream" | "independent"; state: from a previous call (same B and semantics) or None.
        prepare: called as ``prepare(ids [T, B, M], confidence [T, B, M], lens [T, B])`` with the call's
        full-width outputs on the device before the call's host sync, so that the work it enqueues overlaps the
        call's kernels; its result is ``out.padded.prepared``."""
        B, T = self._check_vision(vision)
        self._check_call(B, T, budgets, tau, semantics)
        return self._run(lambda a, b: vision[:, a:b], B, T, budgets, tau, semantics, state, T, prepare)

    def run_fed(self, feed: Callable[[int, int], torch.Tensor], rows: int, budgets: list[int],
                tau: torch.Tensor | None, semantics: str, state: EngineState | None = None,
                segment: int = 4) -> tuple[GenerationOutput, EngineState]:
        """:meth:`run` with the vision embeddings fed ``segment`` frames at a time: ``feed(a, b)`` returns frames
        [a, b) as a [rows, b - a, N, C] fp32 tensor on this device and is called just before those frames'
        kernels are enqueued, so the work it enqueues first (an upload still in flight, the encoder) overlaps
        the earlier frames' generation. Same tokens as one :meth:`run` of the whole clip and still one host
        sync: the call's plan never depends on what was generated."""
        if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
            raise ValueError(f"segment: expected an int >= 1, got {segment!r}")
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows: expected an int >= 1, got {rows!r}")
        T = len(budgets)
        self._check_call(rows, T, budgets, tau, semantics)

        def checked(a: int, b: int) -> torch.Tensor:
            v = feed(a, b)
            if self._check_vision(v) != (rows, b - a):
                raise ValueError(f"feed({a}, {b}): expected [{rows}, {b - a}, {self.N}, {self.C}], "
                                 f"got {tuple(v.shape)}")
            return v

        return self._run(checked, rows, T, budgets, tau, semantics, state, segment)

    def _run(self, feed, B: int, T: int, budgets, tau, semantics: str, state: EngineState | None, segment: int,
             prepare: Callable | None = None):
        if state is not None:
            if state.consumed:
                raise ValueError("state: already consumed by a previous run (use the state that run returned)")
            if state.rows != B or state.semantics != semantics:
                raise ValueError(f"state: holds {state.rows} rows in '{state.semantics}' semantics, "
                                 f"got {B} rows in '{semantics}'")
            parts = state._parts or [(0, B, state)]
            if len(parts) > 1 and not self._rows_independent(semantics, tau is None):
                parts = [(0, B, self._merge_groups(state))]  # stopping couples the rows again: one workspace
        else:
            parts = [(a, b, None) for a, b in self.row_groups(B, semantics, tau is None)]
        groups: list[_Group] = []
        try:
            for a, b, st in parts:
                if st is None:
                    start_hi, pend_hi = 0, 0
                else:
                    start_hi = -(-st.len_hi // _BUCKET) * _BUCKET
                    pend_hi = self.K if st.pending_hi else 0
                plan = make_plan(list(budgets), self.K, self.N, start_hi, pend_hi)
                ws = self._workspace(b - a, semantics, plan.end_hi, st)
                ws.owner = _held  # another group of the call must not get it from the pool
                bufs = self._call_buffers(ws, T, max(budgets))
                if tau is not None:
                    bufs.tau.copy_(tau[a:b].t())
                key = (T, tuple(budgets), tau is not None, semantics, start_hi, pend_hi)
                groups.append(_Group(a, b, ws, bufs, plan, key))
            if state is not None:
                state._ws, state._parts = None, None
            streams = self._group_streams(len(groups))
            for a in range(0, T, segment):
                b = min(T, a + segment)
                v = feed(a, b)
                for g, stream in zip(groups, streams):
                    g.bufs.vision[:, a:b].copy_(v if len(groups) == 1 else v[g.a:g.b])
                    with self._forked(stream):
                        self._execute(g.ws, g.bufs, g.plan, g.key + (a, b), semantics == "upstream",
                                      tau is not None, range(a, b))
            self._join(streams)
            return self._collect(groups, T, semantics, state, prepare)
        except BaseException:  # the call's workspaces go back to the pool (a merged one too)
            for g in groups:
                g.ws.owner = None
            for _, _, st in parts:
                if st is not None and st._ws is not None and st._ws.owner is _held:
                    st._ws.owner = None
            raise

    def row_groups(self, B: int, semantics: str, no_stopping: bool = False) -> list[tuple[int, int]]:
        """The row ranges [a, b) a fresh call of B rows runs as (see ``row_group_rows``): balanced, in order.
        Independent semantics, or upstream semantics without task-loss stopping (``no_stopping``: every row then
        ends each frame on the budget at the same step, so the rows never wait for each other). A call with
        task-loss stopping takes ``stopping_row_groups`` where it is set."""
        n = 1
        if self.row_group_rows and self._rows_independent(semantics, no_stopping):
            rows, most = self.row_group_rows, self.max_row_groups
            if not no_stopping and self.stopping_row_groups is not None:
                rows, most = self.stopping_row_groups
            n = max(1, min(most, B // rows))
        cuts = [round(i * B / n) for i in range(n + 1)]
        return list(zip(cuts[:-1], cuts[1:]))

    @staticmethod
    def _rows_independent(semantics: str, no_stopping: bool) -> bool:
        """Whether a call's rows can run apart: upstream semantics couples them only through task-loss stopping."""
        return semantics == "independent" or no_stopping

    def _merge_groups(self, state: EngineState) -> EngineState:
        """One workspace holding every row of a grouped state (an upstream-semantics stream that was grouped
        while it had no stopping and now has some); the groups' workspaces go back to the pool."""
        parts = state._parts
        cap = max(st._ws.capacity for _, _, st in parts)
        ws = self._acquire(state.rows, cap)
        ws.owner = _held
        for a, _, st in parts:
            ws.carry_rows_from(st._ws, a)
            st._ws.owner, st._ws = None, None
        state._parts = None
        return EngineState(ws, state.semantics, state.len_hi, state.pending_hi, state.frames)

    # ----- internals ---------------------------------------------------------------------------------------
    def _check_vision(self, vision) -> tuple[int, int]:
        if not isinstance(vision, torch.Tensor) or vision.dim() != 4:
            raise ValueError("vision: expected a [B, T, N, C] tensor")
        B, T, N, C = vision.shape
        if (N, C) != (self.N, self.C):
            raise ValueError(f"vision: expected [B, T, {self.N}, {self.C}], got {tuple(vision.shape)}")
        if vision.dtype != torch.float32:
            raise ValueError(f"vision: expected float32, got {vision.dtype}")
        if vision.device != self.device:
            raise ValueError(f"vision: expected device {self.device}, got {vision.device}")
        if B < 1 or T < 1:
            raise ValueError(f"vision: needs at least one row and one frame, got {tuple(vision.shape)}")
        return B, T

    def _check_call(self, B: int, T: int, budgets, tau, semantics) -> None:
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics: expected one of {SEMANTICS}, got {semantics!r}")
        nv = self.cfg.num_vision_tokens_each_frame
        if T < 1 or len(budgets) != T or any(int(m) != m or not 1 <= m <= nv for m in budgets):
            raise ValueError(f"budgets: expected {T} ints in 1..{nv}, got {list(budgets)}")
        if tau is not None:
            if not isinstance(tau, torch.Tensor) or tuple(tau.shape) != (B, T) or tau.dtype != torch.float32:
                raise ValueError(f"tau: expected a float32 [{B}, {T}] tensor or None")
            if tau.device != self.device:
                raise ValueError(f"tau: expected device {self.device}, got {tau.device}")

    def _new_workspace(self, B: int, capacity: int) -> Workspace:
        H = self.cfg.decoder.num_attention_heads
        splits = self.decode_programs // (B * H) if self.decode_chunks else 0
        return Workspace(self.cfg, B, capacity, self.device, self.dtype, self.w.inv_freq, self.prefill_block,
                         self.decode_block, self.chunk, decode_splits=splits,
                         prefill_attention_block=self.prefill_attention_block)

    def decode_chunk(self, B: int, key_end: int) -> int:
        """Keys per attention split of a decode feed whose queries see at most ``key_end`` keys (see __init__)."""
        H = self.cfg.decoder.num_attention_heads
        for c in self.decode_chunks:
            if c < self.chunk and c % self.key_block == 0 and B * H * -(-key_end // c) <= self.decode_programs:
                return c
        return self._large_launch_chunk(B * H, key_end)

    def prefill_chunk(self, B: int, n: int, block: int, key_end: int) -> int:
        """Keys per attention split of a prefill feed of ``n`` slots in ``block``-query programs (see __init__)."""
        return self._large_launch_chunk(B * self.cfg.decoder.num_attention_heads * -(-n // block), key_end,
                                        self.prefill_max_programs)

    def key_block_for(self, chunk: int, prefill: bool) -> int:
        """Keys an attention program takes per inner step in a launch of ``chunk``-key splits (see __init__)."""
        if prefill:
            kb = self.prefill_key_block
        else:
            kb = self.large_decode_key_block if chunk >= self.large_chunk else None
        return kb if kb and chunk % kb == 0 else self.key_block

    def oproj_block_for(self, B: int, n: int, block_q: int, key_end: int, chunk: int, products: str) -> int | None:
        """o_proj columns a product of an attention launch over ``n`` slots of B rows in ``block_q``-query programs
        and ``chunk``-key splits whose products are ``products`` ("f64", "bf16" or "fp32"; see __init__)."""
        if self.oproj_block is not None:
            return self.oproj_block
        programs = B * self.cfg.decoder.num_attention_heads * -(-n // block_q) * -(-key_end // chunk)
        if products == "f64":
            many = programs > self.sms or block_q > 16
        else:
            many = products == "bf16" and programs > self.sms
        return self.oproj_block_many if self.oproj_block_many and many else None

    def _large_launch_chunk(self, blocks: int, key_end: int, limit: int | None = None) -> int:
        limit = self.max_programs if limit is None else limit
        c = self.chunk
        while limit and c < self.max_chunk and blocks * -(-key_end // c) > limit:
            c *= 2
        return c

    def _acquire(self, B: int, cap: int) -> Workspace:
        """A free workspace of B rows and capacity ``cap`` from the pool (with its captured graphs), or a new one."""
        pool = self._pool.setdefault((B, cap), [])
        for ws in pool:
            if ws.owner is None or ws.owner() is None:
                return ws
        ws = self._new_workspace(B, cap)
        pool.append(ws)
        return ws

    def _workspace(self, B: int, semantics: str, need: int, state: EngineState | None) -> Workspace:
        if state is not None:
            ws = state._ws
            state._ws = None
            if ws.capacity >= need:
                return ws
            # growth (streaming): the larger workspace also comes from the pool, so a stream that runs again
            # grows through the same workspaces and replays their graphs instead of capturing new ones
            new = self._acquire(B, -(-max(need, 2 * ws.capacity) // 256) * 256)
            new.carry_from(ws)
            ws.owner = None  # the smaller one goes back to the pool
            return new
        ws = self._acquire(B, -(-need // 256) * 256)
        ws.reset()
        return ws

    def _call_buffers(self, ws: Workspace, T: int, max_budget: int) -> CallBuffers:
        k = (T, max_budget)
        if k not in ws.calls:
            ws.calls[k] = CallBuffers(ws.rows, T, max_budget, self.cfg, self.device)
        return ws.calls[k]

    def _execute(self, ws: Workspace, bufs: CallBuffers, plan: CallPlan, key, upstream: bool, has_tau: bool,
                 frames: range):
        if not self.use_graph:
            self._launch(ws, bufs, plan, upstream, has_tau, frames)
            return
        g = ws.graphs.get((key, id(bufs)))
        if g is None and (key, id(bufs)) in ws.seen:
            branches = None
            if has_tau and self.skip_dead_steps:
                branches = Branches.for_device(self.device)
                branches = branches if branches.supported() else None
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self._launch(ws, bufs, plan, upstream, has_tau, frames, branches)
            ws.graphs[(key, id(bufs))] = g
        if g is None:
            ws.seen.add((key, id(bufs)))  # first time: run eagerly (compiles every kernel variant)
            self._launch(ws, bufs, plan, upstream, has_tau, frames)
        else:
            g.replay()

    def _launch(self, ws: Workspace, bufs: CallBuffers, plan: CallPlan, upstream: bool, has_tau: bool,
                frames: range, branches: Branches | None = None):
        """Enqueue every kernel of the call's ``frames`` (no host sync). With ``branches`` (inside a capture),
        decode step s > 0 of a frame and the steps after it form the body of an IF node on ``alive[s]``."""
        ops, w, K, N, S = self.ops, self.w, self.K, self.N, ws.S
        eos, eps = self.eos, self.eps
        for t in frames:
            fp = plan.frames[t]
            ops.frame_setup(bufs.vision[:, t], ws.x, ws.chunk_ids, ws.chunk_n, ws.clen, ws.ccount, ws.keymask,
                            ws.pos, ws.dpos, ws.pre_qoff, ws.pre_jmin, ws.fstart, ws.alive[0], ws.ban,
                            bufs.ids[t], bufs.conf[t], bufs.lens[t], K * (fp.steps - 1), eos)
            pre_end = fp.start_hi + fp.pending_hi + N
            self._decoder(ws, S, ws.pre_qoff, 0, ws.pre_jmin, ws.pos, ws.alive[0], pre_end, ws.att_prefill,
                          ws.prefill_block, self.prefill_split_k, upstream,
                          self.prefill_chunk(ws.rows, S, ws.att_prefill.bq, pre_end), True)
            with contextlib.ExitStack() as steps:  # closes the step bodies, innermost first
                for s in range(fp.steps):
                    if s > 0:
                        if branches is not None:
                            steps.enter_context(branches.if_any(ws.alive[s]))
                        key_end = pre_end + K * s
                        self._decoder(ws, K, ws.fstart, K * (s - 1), ws.zeros, ws.dpos, ws.alive[s], key_end,
                                      ws.att_decode, ws.decode_block, self.decode_split_k, upstream,
                                      self.decode_chunk(ws.rows, key_end), False)
                    ops.heads_select(ws.hB, None, w.norm, w.lm_head, w.tl_head, ws.alive[s], ws.alive[s + 1],
                                     bufs.tau[t] if has_tau else None, ws.select, ws.ban, w.embed, ws.x, ws.chunk_ids,
                                     ws.chunk_n, bufs.ids[t], bufs.conf[t], bufs.lens[t],
                                     S - 1 if s == 0 else K - 1, s, fp.step_n(s, K), eps, eos, upstream,
                                     num_warps=self.select_warps, vocab_parts=self.select_vocab_parts)
            ops.frame_finish(bufs.ids[t], bufs.lens[t], ws.chunk_n, ws.fstart, ws.clen, ws.ccount, ws.keymask, eos)

    def _decoder(self, ws: Workspace, n, qoff, qoff_add, jmin, pos, alive, key_end, scratch, block, split,
                 upstream, chunk, prefill):
        """The 4 layers over n slots, each rmsnorm_qkv_rope -> attention (+o_proj) -> mlp_gate_up -> mlp_down.
        ``block``: slots a program of the row-wise kernels; an attention program takes ``scratch.bq`` queries.

        The residual stream enters in ws.x (layer 0) or ws.hB and leaves in ws.hB; ws.hA holds the mid-layer h1.
        """
        ops, eps = self.ops, self.eps
        tc = self.bf16_dots and self.dtype == torch.bfloat16
        f64 = {op: self.f64_dots and not tc and (self.f64_ops is None or op in self.f64_ops)
               for op in ("qkv", "attention", "gate_up", "down")}
        flat = self.flat_decode and not prefill
        warps = self.prefill_linear_warps if prefill else self.linear_warps
        bi = (prefill and self.prefill_block_i) or self.mlp_block_i
        bc = (prefill and self.prefill_block_c) or self.mlp_block_c
        if prefill:
            merge = bool(self.prefill_merge_rows and ws.rows >= self.prefill_merge_rows)
            gemm = merge and bool(self.prefill_gemm_rows) and ws.rows >= self.prefill_gemm_rows
        else:  # a GEMM's chunked hidden axis reads the merged, normed residual (residual_norm)
            gemm = merge = bool(self.decode_gemm_rows) and ws.rows >= self.decode_gemm_rows
        if merge and ws.m is None:
            ws.m = torch.empty_like(ws.hA)  # the normed h1 of a feed (residual_norm -> mlp_gate_up)
        gemm_k = self.gemm_block_k if gemm else 0
        gblock = self.gemm_block_n if gemm else block
        ob = self.oproj_block_for(ws.rows, n, scratch.bq, key_end, chunk,
                                  "f64" if f64["attention"] else ("bf16" if tc else "fp32"))
        for li, lw in enumerate(self.w.layers):
            x_in = ws.x if li == 0 else ws.hB
            ops.rmsnorm_qkv_rope(x_in, None, None, lw["ln1"], lw["qkv"], ws.cos, ws.sin,
                                 pos, qoff, qoff_add, jmin, alive, ws.q, ws.k[li], ws.v[li], n, eps, upstream,
                                 block_n=gblock, block_h=self.gemm_block_h if gemm else self.head_block,
                                 split_k=split, bf16_dots=tc, f64_dots=f64["qkv"],
                                 flat=gemm or (flat and self.flat_qkv), block_k=gemm_k, num_warps=warps)
            ops.attention(ws.q, ws.k[li], ws.v[li], ws.keymask, qoff, qoff_add, jmin, alive, lw["o"], ws.opart,
                          scratch, n, key_end, upstream, block_q=scratch.bq, chunk=chunk,
                          block_k=self.key_block_for(chunk, prefill), num_warps=self.attention_warps,
                          merge_group=self.merge_group, oproj_block=ob, bf16_dots=tc,
                          f64_dots=f64["attention"])
            if merge:
                ops.residual_norm(x_in, ws.opart, ws.hA, lw["ln2"], alive, ws.m, n, eps, upstream, block_n=block)
            ops.mlp_gate_up(ws.m if merge else x_in, ws.opart, ws.hA, lw["ln2"], lw["gate_up"], alive, ws.act, n,
                            eps, upstream, block_n=gblock, block_i=self.gemm_block_i if gemm else bi, split_k=split,
                            bf16_dots=tc, f64_dots=f64["gate_up"], flat=flat or gemm, normed=merge, block_k=gemm_k,
                            num_warps=warps)
            ops.mlp_down(ws.hA, ws.act, lw["down"], alive, ws.hB, n, upstream, block_n=gblock,
                         block_c=self.gemm_block_c if gemm else bc, block_k=gemm_k or self.mlp_block_k,
                         split_k=0 if gemm else split, bf16_dots=tc, f64_dots=f64["down"], flat=flat or gemm,
                         num_warps=warps)

    def _group_streams(self, n: int) -> list:
        """One side stream a group (None: the current stream, for a single group or off CUDA)."""
        if n == 1 or self.device.type != "cuda":
            return [None] * n
        while len(self._streams) < n:
            self._streams.append(torch.cuda.Stream(self.device))
        return self._streams[:n]

    @contextlib.contextmanager
    def _forked(self, stream):
        """Enqueue on ``stream`` after everything enqueued so far on the current stream (a no-op for None)."""
        if stream is None:
            yield
            return
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            yield

    def _join(self, streams) -> None:
        cur = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        for s in streams:
            if s is not None:
                cur.wait_stream(s)

    def _collect(self, groups: list[_Group], T: int, semantics: str, prev: EngineState | None,
                 prepare: Callable | None = None):
        # copies of the call's outputs at full width, enqueued before the sync (behind the call's kernels)
        if len(groups) == 1:
            bufs = groups[0].bufs
            ids, conf, lens = bufs.ids.clone(), bufs.conf.clone(), bufs.lens
        else:
            ids = torch.cat([g.bufs.ids for g in groups], dim=1)
            conf = torch.cat([g.bufs.conf for g in groups], dim=1)
            lens = torch.cat([g.bufs.lens for g in groups], dim=1)
        B = ids.shape[1]
        dev = torch.cat([lens.flatten()] + [g.ws.clen for g in groups] + [g.ws.chunk_n for g in groups])
        lens = dev[: T * B].view(T, B)
        prepared = None if prepare is None else prepare(ids, conf, lens)
        host = dev.cpu()  # the call's one sync
        widths = [int(x) for x in host[: T * B].view(T, B).max(dim=1).values]
        padded = PaddedFrames(ids, conf, lens, widths, prepared)
        out = GenerationOutput(frames=padded.frame_results(), padded=padded)
        frames = (0 if prev is None else prev.frames) + T
        clen, chunk_n = host[T * B: T * B + B], host[T * B + B:]
        states = []
        for g in groups:
            st = EngineState(g.ws, semantics, int(clen[g.a:g.b].max()), int(chunk_n[g.a:g.b].max()), frames)
            g.ws.owner = weakref.ref(st)
            states.append(st)
        if len(groups) == 1:
            return out, states[0]
        return out, EngineState(None, semantics, int(clen.max()), int(chunk_n.max()), frames,
                                parts=[(g.a, g.b, st) for g, st in zip(groups, states)])
