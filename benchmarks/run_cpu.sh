#!/usr/bin/env bash
# The CPU benchmark suite and its report, in one command (from the repository
# root, with fastgp's extension built):
#
#   benchmarks/run_cpu.sh [OUT_DIR] [extra pytest args, e.g. --bench-matrix=full]
#
# Writes OUT_DIR/{ops,step,memory}.json, OUT_DIR/report.md and OUT_DIR/chart.png
# (OUT_DIR defaults to benchmarks/results/cpu). Two threads, fp32, the quick
# matrix: about ten minutes on a quiet 2-core machine. Quote figures only from
# a quiet machine: the report warns when the load average says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/cpu}"
shift || true
PY="${PYTHON:-python}"
mkdir -p "$OUT"
rm -f "$OUT/ops.json" "$OUT/step.json" "$OUT/memory.json"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

if ! "$PY" -c 'import sys, fastgp; sys.exit("cpp" not in fastgp.available_backends("cpu"))'; then
  echo "fastgp's C++ extension is not available; build it first:" >&2
  echo "  MAX_JOBS=2 python setup.py build_ext --inplace   (or pip install --no-build-isolation .)" >&2
  "$PY" -c 'import fastgp; print(fastgp.info()["backends"]["cpu"]["cpp"])' >&2
  exit 1
fi

common=(--bench-device=cpu --bench-threads=2 -p no:cacheprovider -q
        --benchmark-columns=min,median,mean,rounds --benchmark-sort=name)
status=0
"$PY" -m pytest benchmarks/bench_ops.py "${common[@]}" --benchmark-min-rounds=5 --benchmark-max-time=0.5 \
  --benchmark-json="$OUT/ops.json" "$@" || status=$?
"$PY" -m pytest benchmarks/bench_step.py "${common[@]}" --benchmark-json="$OUT/step.json" "$@" || status=$?
"$PY" -m pytest benchmarks/bench_memory.py "${common[@]}" --benchmark-json="$OUT/memory.json" "$@" || status=$?
# Report whatever was measured, even after a failure (the exit status keeps it).
jsons=()
for f in ops step memory; do [ -s "$OUT/$f.json" ] && jsons+=("$OUT/$f.json"); done
if [ ${#jsons[@]} -gt 0 ]; then
  "$PY" -m benchmarks.report "${jsons[@]}" --out "$OUT/report.md" --chart "$OUT/chart.png" || status=$?
  echo "report: $OUT/report.md, chart: $OUT/chart.png"
fi
exit $status
