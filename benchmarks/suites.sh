# Sourced by run_cpu.sh and run_gpu.sh: runs the suites and the report.
#   run_suites OUT_DIR "OPS_TIMING_ARGS" COMMON_ARGS... -- EXTRA_PYTEST_ARGS...
# Writes the raw pytest-benchmark JSON to OUT_DIR/raw/{ops,overhead,step,memory}.json
# (per-round samples: large, kept out of git), their compact summary to
# OUT_DIR/summary.json, and OUT_DIR/report.md and chart.png; returns the first
# failure's status but always reports whatever was measured.
run_suites() {
  local out=$1 ops_timing=$2
  shift 2
  local common=() extra=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do common+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  extra=("$@")
  local py="${PYTHON:-python}" status=0 f raw="$out/raw"
  mkdir -p "$raw"
  rm -f "$raw/ops.json" "$raw/overhead.json" "$raw/step.json" "$raw/memory.json"
  # shellcheck disable=SC2086  # ops_timing is a list of flags
  "$py" -m pytest benchmarks/bench_ops.py "${common[@]}" $ops_timing --benchmark-json="$raw/ops.json" \
    "${extra[@]}" || status=$?
  # shellcheck disable=SC2086
  "$py" -m pytest benchmarks/bench_overhead.py "${common[@]}" $ops_timing --benchmark-json="$raw/overhead.json" \
    "${extra[@]}" || status=$?
  "$py" -m pytest benchmarks/bench_step.py "${common[@]}" --benchmark-json="$raw/step.json" "${extra[@]}" || status=$?
  "$py" -m pytest benchmarks/bench_memory.py "${common[@]}" --benchmark-json="$raw/memory.json" "${extra[@]}" \
    || status=$?
  local jsons=()
  for f in ops overhead step memory; do [ -s "$raw/$f.json" ] && jsons+=("$raw/$f.json"); done
  if [ ${#jsons[@]} -gt 0 ]; then
    "$py" -m benchmarks.report "${jsons[@]}" --summary "$out/summary.json" --out "$out/report.md" \
      --chart "$out/chart.png" || status=$?
    echo "report: $out/report.md, chart: $out/chart.png, summary: $out/summary.json (raw samples: $raw/)"
  fi
  return $status
}
