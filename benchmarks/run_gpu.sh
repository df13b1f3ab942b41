#!/usr/bin/env bash
# The GPU benchmark suites and their report (for the GPU check script):
#
#   benchmarks/run_gpu.sh OUT_DIR [extra pytest args]
#
# fp32 and bf16, the quick matrix, short timing windows so that the three
# suites fit in a few minutes on one GPU (torch.compile of the reference is
# most of it); every fastgp provider available on the device is included.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:?usage: benchmarks/run_gpu.sh OUT_DIR [pytest args]}"
shift
PY="${PYTHON:-python}"
mkdir -p "$OUT"
rm -f "$OUT/ops.json" "$OUT/step.json" "$OUT/memory.json"
common=(--bench-device=cuda -p no:cacheprovider -q --benchmark-columns=min,median,mean,rounds --benchmark-sort=name)
status=0
"$PY" -m pytest benchmarks/bench_ops.py "${common[@]}" --benchmark-min-rounds=10 --benchmark-max-time=0.1 \
  --benchmark-json="$OUT/ops.json" "$@" || status=$?
"$PY" -m pytest benchmarks/bench_step.py "${common[@]}" --benchmark-json="$OUT/step.json" "$@" || status=$?
"$PY" -m pytest benchmarks/bench_memory.py "${common[@]}" --benchmark-json="$OUT/memory.json" "$@" || status=$?
# Report whatever was measured, even after a failure.
jsons=()
for f in ops step memory; do [ -s "$OUT/$f.json" ] && jsons+=("$OUT/$f.json"); done
if [ ${#jsons[@]} -gt 0 ]; then
  "$PY" -m benchmarks.report "${jsons[@]}" --out "$OUT/report.md" --chart "$OUT/chart.png" || status=$?
fi
exit $status
