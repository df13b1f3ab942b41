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
. benchmarks/suites.sh
status=0
run_suites "$OUT" "--benchmark-min-rounds=10 --benchmark-max-time=0.1" \
  --bench-device=cuda -p no:cacheprovider -q --benchmark-columns=min,median,mean,rounds --benchmark-sort=name \
  -- "$@" || status=$?
exit $status
