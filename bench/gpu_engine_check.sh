#!/usr/bin/env bash
# One device call for the Triton backend: install, (engine + kernel tests), Triton-backend fixture parity,
# a per-kernel profile, then the engine benchmark matrix. Carry .devcarry/shared (a copy of ../shared).
# Toggles: T_DET / T_BISECT / T_RACECHECK / T_REPRO / T_SANITIZE / T_PROBE / T_MICRO / T_SPLITS / T_AB / T_TESTS / T_ENGINE / T_PARITY / T_PROFILE / T_BENCH / T_BF16 / T_CALL / T_UPLOAD / T_SUITE = seconds for each stage (0 skips it);
# BENCH_ARGS. Example: T_PROFILE=90 bash bench/gpu_engine_check.sh (carry .devcarry/shared).
# Prepare once here: mkdir -p .devcarry/shared && cp -r ../shared/fixtures ../shared/media .devcarry/shared/ &&
#   rm .devcarry/shared/fixtures/model/model.safetensors   (the model travels in tests/fixtures/model)
set -uo pipefail
export PYTHONUNBUFFERED=1 AUTOGAZE_SHARED_FIXTURES="$PWD/.devcarry/shared/fixtures"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
REPO="$PWD"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
# build requirements the device image may lack (scikit-build-core, pybind11, pytest-benchmark, ...): carry
# .devcarry/wheels (`pip download -d .devcarry/wheels scikit-build-core pybind11 pytest-benchmark pathspec
# packaging py-cpuinfo --no-deps`)
ls .devcarry/wheels/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-deps .devcarry/wheels/*.whl > "$OUT/wheels.log" 2>&1
python3 -m pip install -q --no-build-isolation --no-deps . > "$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
# PyAV is not on the device: carry its wheel (.devcarry/avwheel, `pip download av`) for the video benches
ls .devcarry/avwheel/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-deps .devcarry/avwheel/*.whl >> "$OUT/install.log" 2>&1
export AUTOGAZE_SHARED_MEDIA="$REPO/.devcarry/shared/media"
# pytest-xdist (carry .devcarry/xdist: `pip download pytest-xdist execnet --no-deps`) spreads the parity tests'
# Triton compiles over CPU cores: a cold machine otherwise spends minutes compiling one variant after another
ls .devcarry/xdist/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-deps .devcarry/xdist/*.whl >> "$OUT/install.log" 2>&1
XDIST=""; python3 -c "import xdist" 2>/dev/null && XDIST="-n ${WORKERS:-6}"
# SPLITS configurations compile in the background (one process each, --iters 1) while the tests run; the timed
# runs below then find their kernels in Triton's cache
if [ "${T_SPLITS:-0}" != 0 ]; then
  IFS=';' read -ra SP <<< "${SPLITS:-}"
  for a in "${SP[@]}"; do
    timeout "$T_SPLITS" python3 bench/engine_gpu.py --iters 1 --skip-big --only "${SPLIT_ONLY:-1 clip}" $a > /dev/null 2>&1 &
  done
fi
# the two-batch-size crash: REPRO = ';'-separated argument lists of bench/repro_two_batches.py, then one of them
# under compute-sanitizer's memcheck (SANITIZE_ARGS)
if [ "${T_REPRO:-0}" != 0 ]; then
  IFS=';' read -ra RUNS <<< "${REPRO:-model 1 8}"
  for r in "${RUNS[@]}"; do timeout "$T_REPRO" python3 bench/repro_two_batches.py $r 2>&1 | tail -6 | tee -a "$OUT/repro.log"; done
fi
[ "${T_SANITIZE:-0}" != 0 ] && timeout "$T_SANITIZE" compute-sanitizer --tool memcheck --print-limit 4 \
  python3 bench/repro_two_batches.py ${SANITIZE_ARGS:-model 1 8} > "$OUT/sanitize.log" 2>&1; grep -v "^=========     " "$OUT/sanitize.log" 2>/dev/null | tail -40
# bit-for-bit determinism of repeated calls (DET_ARGS = ';'-separated argument lists of bench/determinism.py,
# e.g. "8 4;8 4 --split-k 0"), then compute-sanitizer's racecheck (shared-memory hazards inside a program) and
# synccheck on one of them (RACE_ARGS)
if [ "${T_DET:-0}" != 0 ]; then
  IFS=';' read -ra DETS <<< "${DET_ARGS:-8 4}"
  for r in "${DETS[@]}"; do timeout "$T_DET" python3 bench/determinism.py $r 2>&1 | tail -5 | tee -a "$OUT/det.log"; done
fi
# the first op launch whose result differs between repeated eager calls, and its differing elements
[ "${T_BISECT:-0}" != 0 ] && timeout "$T_BISECT" python3 bench/race_bisect.py ${BISECT_ARGS:-8 4} 2>&1 | tee "$OUT/bisect.log"
if [ "${T_RACECHECK:-0}" != 0 ]; then
  for tool in racecheck synccheck; do
    timeout "$T_RACECHECK" compute-sanitizer --tool $tool --print-limit 6 python3 bench/determinism.py ${RACE_ARGS:-8 1 --quick} \
      > "$OUT/$tool.log" 2>&1; grep -v "^=========     " "$OUT/$tool.log" | tail -15
  done
fi
cd /tmp
# Triton compiles every kernel variant on first use: the full kernel test folder needs several minutes there,
# so by default only the engine's GPU tests and the model-level parity run (T_TESTS=N adds the kernel tests, spread
# over CPU cores with xdist; KTESTS narrows them to some files, e.g. "test_mlp.py test_rmsnorm_qkv_rope.py": the
# changed kernels' files took ~100 s on a cold H100 in session 17; interpreter-sized tiles skip there)
if [ "${T_TESTS:-0}" != 0 ]; then
  KPATHS=""; for f in ${KTESTS:-}; do KPATHS="$KPATHS $REPO/tests/kernels/$f"; done
  timeout "${T_TESTS}" python3 -m pytest -q -rf $XDIST ${KPATHS:-"$REPO/tests/kernels"} -p no:cacheprovider > "$OUT/tests.log" 2>&1
  tail -5 "$OUT/tests.log"
fi
[ "${T_ENGINE:-200}" != 0 ] && timeout "${T_ENGINE:-200}" python3 -m pytest -q -rf $XDIST "$REPO/tests/test_engine.py" "$REPO/tests/test_backend_triton.py" "$REPO/tests/test_branches.py" -k "${ENGINE_K:-gpu or triton_backend or f64 or bf16_engine or layout or clear_error}" -p no:cacheprovider > "$OUT/engine_tests.log" 2>&1; tail -5 "$OUT/engine_tests.log" 2>/dev/null
[ "${T_PARITY:-300}" != 0 ] && timeout "${T_PARITY:-300}" python3 -m pytest -q -rf $XDIST "$REPO/tests/test_parity.py" -k "cuda-triton" -p no:cacheprovider > "$OUT/parity.log" 2>&1; tail -8 "$OUT/parity.log" 2>/dev/null
cd "$REPO"
wait  # the background SPLITS compiles end before anything is timed
[ "${T_PROFILE:-0}" != 0 ] && timeout "$T_PROFILE" python3 bench/engine_profile.py > "$OUT/profile.log" 2>&1; tail -22 "$OUT/profile.log" 2>/dev/null
[ "${T_BENCH:-200}" != 0 ] && timeout "${T_BENCH:-200}" python3 bench/engine_gpu.py ${BENCH_ARGS:---iters 10} 2>&1 | tee "$OUT/engine.log"
# latency probes (one product per program, K sweep; grid barrier vs kernel boundary), then engine split sweeps:
# SPLITS = ';'-separated engine_gpu.py argument lists, e.g. "--chunk 64 --key-block 64;--down-k 512"
[ "${T_PROBE:-0}" != 0 ] && { timeout "$T_PROBE" python3 bench/dot_probe.py; timeout 60 python3 bench/barrier_probe.py; } 2>&1 | tee "$OUT/probe.log"
if [ "${T_SPLITS:-0}" != 0 ]; then
  for a in "${SP[@]}"; do
    timeout "$T_SPLITS" python3 bench/engine_gpu.py --iters 10 --skip-big --only "${SPLIT_ONLY:-1 clip}" $a 2>&1 | grep -v "^device-to" | tee -a "$OUT/splits.log"
  done
fi
# A/B of a change within one machine: time AB_ARGS (';'-separated engine_gpu.py flag lists, cases named by AB_ONLY)
# with the installed tree, then with the files under .devcarry/base copied over the installed package (paths
# relative to it, e.g. `mkdir -p .devcarry/base/kernels && git show REV:kernels/attention.py >
# .devcarry/base/kernels/attention.py`; carry .devcarry/base), then reinstall the tree
if [ "${T_AB:-0}" != 0 ] && [ -d .devcarry/base ]; then
  PKG=$(cd /tmp && python3 -c "import os, triton_autogaze; print(os.path.dirname(triton_autogaze.__file__))")
  IFS=';' read -ra ABS <<< "${AB_ARGS:-}"
  [ ${#ABS[@]} = 0 ] && ABS=("")
  for side in tree base; do
    [ $side = base ] && (cd .devcarry/base && find . -name '*.py' -exec cp {} "$PKG/{}" \; -exec echo "base: {}" \;)
    for a in "${ABS[@]}"; do
      echo "[$side] $a"
      timeout "$T_AB" python3 bench/engine_gpu.py --iters 10 --skip-big --only "${AB_ONLY:-tau None}" $a 2>&1 \
        | grep -v "^device-to" | tee -a "$OUT/ab.log"
    done
  done
  python3 -m pip install -q --no-build-isolation --no-deps . >> "$OUT/install.log" 2>&1
fi
# one kernel at a time at decode shape (engine_micro.py; MICRO_ARGS, e.g. "--focus --rows 1 8 --keys 3600")
[ "${T_MICRO:-0}" != 0 ] && timeout "$T_MICRO" python3 bench/engine_micro.py ${MICRO_ARGS:---focus} 2>&1 | tee "$OUT/micro.log"
[ "${T_BF16:-0}" != 0 ] && timeout "$T_BF16" python3 bench/bf16_agreement.py 2>&1 | tee "$OUT/bf16.log"
# where a model call's time goes when frames come a few at a time (streaming); CALL_ARGS, e.g. "--frames-per-call 4"
[ "${T_CALL:-0}" != 0 ] && timeout "$T_CALL" python3 bench/call_overhead.py ${CALL_ARGS:-} 2>&1 | tee "$OUT/call.log"
# the host -> GPU upload of a 1080p RGBA clip (pin_probe.py) and the resize-224 overlap sweep (overlap_probe.py;
# UPLOAD_ARGS, e.g. "--threads 8 16 --overlap 0 4 2 --timeline")
[ "${T_UPLOAD:-0}" != 0 ] && { timeout "$T_UPLOAD" python3 bench/pin_probe.py;
  timeout "$T_UPLOAD" python3 bench/overlap_probe.py ${UPLOAD_ARGS:-}; } 2>&1 | tee "$OUT/upload.log"
# the pytest-benchmark suites (GPU groups only); SUITE_K narrows them
[ "${T_SUITE:-0}" != 0 ] && timeout "$T_SUITE" python3 -m pytest bench/bench_engine.py bench/bench_pipeline.py \
  --benchmark-only -p no:cacheprovider -q -k "${SUITE_K:-not cpu}" --benchmark-columns=median,min,max,rounds \
  --benchmark-json="$OUT/suite.json" 2>&1 | tail -60 | tee "$OUT/suite.log"
true
