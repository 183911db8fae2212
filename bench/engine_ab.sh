#!/usr/bin/env bash
# A/B of engine configurations on the lent GPU, in one device call: install, compile every variant in parallel
# (one `engine_gpu.py --iters 1` process each, so the timed runs hit Triton's cache), then time them in
# alternating processes, ROUNDS rounds. Usage (from the repo root, on the device):
#   VARIANTS="--no-fused-front|--fused-front|--fused-front --front-warps 8" [ONLY="tau None"] [SKIP_BIG=1]
#   [ITERS=10] [ROUNDS=2] [EXTRA="--bf16"] [T_COMPILE=300] [T_RUN=120] bash bench/engine_ab.sh
# VARIANTS: engine_gpu.py argument sets separated by '|'. Carry .devcarry/wheels (scikit-build-core, pybind11).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
ls .devcarry/wheels/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-deps .devcarry/wheels/*.whl > "$OUT/wheels.log" 2>&1
python3 -m pip install -q --no-build-isolation --no-deps . > "$OUT/install.log" 2>&1 || { tail -20 "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
git log --oneline -1 2>/dev/null | cut -c1-100
IFS='|' read -r -a V <<< "${VARIANTS:?set VARIANTS}"
COMMON=(--only "${ONLY:-tau None}" ${EXTRA:-})
[ -n "${SKIP_BIG:-}" ] && COMMON+=(--skip-big)
T0=$SECONDS
for i in "${!V[@]}"; do
  # shellcheck disable=SC2086
  timeout "${T_COMPILE:-300}" python3 bench/engine_gpu.py --iters 1 "${COMMON[@]}" ${V[$i]} > "$OUT/compile_$i.log" 2>&1 &
done
wait
echo "compiled ${#V[@]} variants in $((SECONDS - T0)) s"
for r in $(seq "${ROUNDS:-2}"); do
  for i in "${!V[@]}"; do
    echo "== [${V[$i]}] round $r"
    # shellcheck disable=SC2086
    timeout "${T_RUN:-120}" python3 bench/engine_gpu.py --iters "${ITERS:-10}" "${COMMON[@]}" ${V[$i]} 2>&1 \
      | grep -E "^(1 clip|8 clips|[0-9]+ rows|Traceback|[A-Za-z]*Error)" | tee -a "$OUT/ab.log"
  done
done
echo "total $((SECONDS - T0)) s"
