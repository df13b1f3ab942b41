#!/usr/bin/env bash
# The GPU benchmark suites and their report:
#
#   benchmarks/run_gpu.sh [OUT_DIR] [extra pytest args]
#
# OUT_DIR defaults to benchmarks/out/gpu (git-ignored); committed results are
# replaced only when their folder is named. The interpreter: $PYTHON, else the
# repository's .venv, else `python`. fp32 and bf16, the quick matrix, short
# timing windows so that the three suites fit in a few minutes on one GPU
# (torch.compile of the reference is most of it); every fastgp provider
# available on the device is included.
set -euo pipefail
cd "$(dirname "$0")/.."
. benchmarks/suites.sh
OUT=$(bench_out_dir gpu "${1:-}")
[ $# -gt 0 ] && [ "$OUT" = "$1" ] && shift
check_bench_python "$(bench_python)"

status=0
run_suites "$OUT" "--benchmark-min-rounds=10 --benchmark-max-time=0.1" \
  --bench-device=cuda -p no:cacheprovider -q --benchmark-columns=min,median,mean,rounds --benchmark-sort=name \
  -- "$@" || status=$?
exit $status
