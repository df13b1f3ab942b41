# Sourced by run_cpu.sh and run_gpu.sh: runs the three suites and the report.
#   run_suites OUT_DIR "OPS_TIMING_ARGS" COMMON_ARGS... -- EXTRA_PYTEST_ARGS...
# Writes OUT_DIR/{ops,step,memory}.json, report.md and chart.png; returns the
# first failure's status but always reports whatever was measured.
run_suites() {
  local out=$1 ops_timing=$2
  shift 2
  local common=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do common+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  extra=("$@")
  local py="${PYTHON:-python}" status=0 f
  mkdir -p "$out"
  rm -f "$out/ops.json" "$out/step.json" "$out/memory.json"
  # shellcheck disable=SC2086  # ops_timing is a list of flags
  "$py" -m pytest benchmarks/bench_ops.py "${common[@]}" $ops_timing --benchmark-json="$out/ops.json" \
    "${extra[@]}" || status=$?
  "$py" -m pytest benchmarks/bench_step.py "${common[@]}" --benchmark-json="$out/step.json" "${extra[@]}" || status=$?
  "$py" -m pytest benchmarks/bench_memory.py "${common[@]}" --benchmark-json="$out/memory.json" "${extra[@]}" \
    || status=$?
  local jsons=()
  for f in ops step memory; do [ -s "$out/$f.json" ] && jsons+=("$out/$f.json"); done
  if [ ${#jsons[@]} -gt 0 ]; then
    "$py" -m benchmarks.report "${jsons[@]}" --out "$out/report.md" --chart "$out/chart.png" || status=$?
    echo "report: $out/report.md, chart: $out/chart.png"
  fi
  return $status
}
