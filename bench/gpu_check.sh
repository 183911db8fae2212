#!/usr/bin/env bash
# One call on the lent GPU machine: install the package, run the GPU tests, then the benchmark matrix.
# Usage (from the repo root, on the device): bash bench/gpu_check.sh [pytest -k expr] [bench script args]
# Needs .devcarry/shared (a copy of ../shared: fixtures + media) carried along.
set -uo pipefail
export PYTHONUNBUFFERED=1
export AUTOGAZE_SHARED_FIXTURES="$PWD/.devcarry/shared/fixtures"
export AUTOGAZE_SHARED_MEDIA="$PWD/.devcarry/shared/media"
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
python3 -m pip install -q --no-build-isolation --no-deps . > "$OUT/install.log" 2>&1 || { tail -30 "$OUT/install.log"; exit 1; }
cd /tmp  # import the installed package, not the source tree
python3 -m pytest -q -x "$OLDPWD/tests" ${PYTEST_K:+-k "$PYTEST_K"} -p no:cacheprovider 2>&1 | tee "$OUT/pytest.log" | tail -25
cd "$OLDPWD"
if [ -n "${BENCH:-}" ]; then
  python3 $BENCH 2>&1 | tee "$OUT/bench.log"
fi
