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
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

if ! "$PY" -c 'import sys, fastgp; sys.exit("cpp" not in fastgp.available_backends("cpu"))'; then
  echo "fastgp's C++ extension is not available; build it first:" >&2
  echo "  MAX_JOBS=2 python setup.py build_ext --inplace   (or pip install --no-build-isolation .)" >&2
  "$PY" -c 'import fastgp; print(fastgp.info()["backends"]["cpu"]["cpp"])' >&2
  exit 1
fi

. benchmarks/suites.sh
status=0
run_suites "$OUT" "--benchmark-min-rounds=5 --benchmark-max-time=0.5" \
  --bench-device=cpu --bench-threads=2 -p no:cacheprovider -q \
  --benchmark-columns=min,median,mean,rounds --benchmark-sort=name -- "$@" || status=$?
exit $status
