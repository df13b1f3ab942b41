#!/usr/bin/env bash
# The CPU benchmark suite and its report, in one command (from anywhere):
#
#   benchmarks/run_cpu.sh [OUT_DIR] [extra pytest args, e.g. --bench-matrix=full]
#
# Writes OUT_DIR/{ops,step,memory}.json, OUT_DIR/report.md and OUT_DIR/chart.png.
# OUT_DIR defaults to benchmarks/out/cpu (git-ignored); the committed results are
# replaced only when asked by name: benchmarks/run_cpu.sh benchmarks/results/cpu.
# The interpreter: $PYTHON, else the repository's .venv, else `python`; it must
# have torch and fastgp with its C++ extension (the script says which is missing).
# Two threads, fp32, the quick matrix: about ten minutes on a quiet 2-core
# machine. Quote figures only from a quiet machine: the report warns when the
# load average says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/suites.sh
OUT=$(bench_out_dir cpu "${1:-}")
[ $# -gt 0 ] && [ "$OUT" = "$1" ] && shift
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
check_bench_python "$(bench_python)" cpu

status=0
run_suites "$OUT" "--benchmark-min-rounds=5 --benchmark-max-time=0.5" \
  --bench-device=cpu --bench-threads=2 -p no:cacheprovider -q \
  --benchmark-columns=min,median,mean,rounds --benchmark-sort=name -- "$@" || status=$?
exit $status
