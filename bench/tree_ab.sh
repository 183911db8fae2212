#!/usr/bin/env bash
# A/B of this tree against an older commit on the lent GPU, in one device call: both installed (the old one with
# `pip --target`, imported through PYTHONPATH from its own folder), a pytest-benchmark selection run once untimed in
# each (parallel compiles), then timed in alternating processes, ROUNDS rounds. Prepare the old tree here first:
#   mkdir -p .devcarry/old && git archive <commit> | tar -x -C .devcarry/old
# and carry it with .devcarry/wheels. Usage (from the repo root, on the device):
#   OLD=.devcarry/old K="stream and fp32" [BENCH=bench/bench_engine.py] [ROUNDS=2] [T_RUN=100] bash bench/tree_ab.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
OLD="${OLD:?set OLD to the folder of the old tree}"; K="${K:?set K to a pytest -k expression}"
BENCH="${BENCH:-bench/bench_engine.py}"
T0=$SECONDS
ls .devcarry/wheels/*.whl > /dev/null 2>&1 && python3 -m pip install -q --no-deps .devcarry/wheels/*.whl > /tmp/ab_wheels.log 2>&1
python3 -m pip install -q --no-build-isolation --no-deps . > /tmp/ab_new.log 2>&1 || { tail /tmp/ab_new.log; exit 1; }
rm -rf /tmp/ab_old && python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/ab_old "$OLD" \
  > /tmp/ab_old.log 2>&1 || { tail /tmp/ab_old.log; exit 1; }
(cd "$OLD" && PYTHONPATH=/tmp/ab_old python3 -c "import triton_autogaze as t; print('old tree imports', t.__file__)")
echo "installed in $((SECONDS - T0)) s"; nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
run() {  # $1: new | old, $2: seconds allowed, then pytest arguments
  local which=$1 limit=$2; shift 2
  if [ "$which" = old ]; then
    (cd "$OLD" && PYTHONPATH=/tmp/ab_old timeout "$limit" python3 -m pytest "$BENCH" -q -p no:cacheprovider "$@")
  else
    timeout "$limit" python3 -m pytest "$BENCH" -q -p no:cacheprovider "$@"
  fi
}
run new 400 --benchmark-disable -k "$K" > /tmp/ab_compile_new.log 2>&1 &
run old 400 --benchmark-disable -k "$K" > /tmp/ab_compile_old.log 2>&1 &
wait
echo "compiled in $((SECONDS - T0)) s"
for r in $(seq "${ROUNDS:-2}"); do
  for which in new old; do
    echo "== $which round $r"
    run "$which" "${T_RUN:-100}" --benchmark-only -k "$K" --benchmark-columns=min,median,max,rounds \
      --benchmark-sort=name 2>&1 | grep -E "^test_|failed|Error"
  done
done
echo "total $((SECONDS - T0)) s"
