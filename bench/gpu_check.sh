#!/usr/bin/env bash
# One call on the lent GPU machine: install the package, run the test suite (or part of it), then optionally a
# benchmark script. Usage (from the repo root, on the device):
#   [PART=rest|kernels|all] [PYTEST_K=expr] [T_TESTS=seconds] [BENCH="script args"] bash bench/gpu_check.sh
# PART=rest (default): every test file outside tests/kernels; kernels: tests/kernels (Triton compiles every
# variant on a cold machine: several minutes even over 15 xdist workers); all: both.
# Carry what the machine lacks (see gpu_engine_check.sh): .devcarry/wheels (scikit-build-core, pybind11, ...),
# .devcarry/xdist, and either .devcarry/shared/fixtures (the shared fixture parity) or .devcarry/avwheel +
# .devcarry/shared/media (the video tests): both together pass the 64 MiB carry limit.
# Each test's result is logged as it finishes (-v), so a run cut by its time limit or a crashed worker still
# names its failures ($OUT/pytest.log, FAILED / ERROR lines printed last).
set -uo pipefail
export PYTHONUNBUFFERED=1
[ -d .devcarry/shared/fixtures ] && export AUTOGAZE_SHARED_FIXTURES="$PWD/.devcarry/shared/fixtures"
[ -d .devcarry/shared/media ] && export AUTOGAZE_SHARED_MEDIA="$PWD/.devcarry/shared/media"
OUT="${OUT:-/tmp/out}"
REPO="$PWD"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
for d in wheels xdist avwheel; do
  ls .devcarry/$d/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-deps .devcarry/$d/*.whl >> "$OUT/install.log" 2>&1
done
python3 -m pip install -q --no-build-isolation --no-deps . >> "$OUT/install.log" 2>&1 || { tail -30 "$OUT/install.log"; exit 1; }
XDIST=""; python3 -c "import xdist" 2>/dev/null && XDIST="-n ${WORKERS:-15}"
case "${PART:-rest}" in
  rest) PATHS=("$REPO/tests" --ignore="$REPO/tests/kernels") ;;
  kernels) PATHS=("$REPO/tests/kernels") ;;
  *) PATHS=("$REPO/tests") ;;
esac
cd /tmp  # import the installed package, not the source tree
timeout "${T_TESTS:-500}" python3 -m pytest -v -rfE $XDIST "${PATHS[@]}" ${PYTEST_K:+-k "$PYTEST_K"} \
  -p no:cacheprovider > "$OUT/pytest.log" 2>&1
echo "pytest rc=$? (124: cut by T_TESTS)"
grep -cE " PASSED " "$OUT/pytest.log" | sed 's/^/passed: /'
grep -cE " SKIPPED " "$OUT/pytest.log" | sed 's/^/skipped: /'
grep -E " (FAILED|ERROR) |^(FAILED|ERROR) |node down|Fatal Python error" "$OUT/pytest.log" | sort -u | head -40
cd "$OLDPWD"
if [ -n "${BENCH:-}" ]; then
  python3 $BENCH 2>&1 | tee "$OUT/bench.log"
fi
