# Sourced by run_cpu.sh and run_gpu.sh (from the repository root).

# bench_python: the interpreter to run the suites with: $PYTHON when set, else
# the repository's .venv when there is one, else `python` from PATH.
bench_python() {
  if [ -n "${PYTHON:-}" ]; then
    echo "$PYTHON"
  elif [ -x .venv/bin/python ]; then
    echo .venv/bin/python
  else
    echo python
  fi
}

# bench_out_dir DEVICE [ARG]: ARG when it is a directory argument (not an
# option), else benchmarks/out/DEVICE (git-ignored). The committed results in
# benchmarks/results/ are only written when named explicitly.
bench_out_dir() {
  if [ $# -gt 1 ] && [ -n "$2" ] && [ "${2#-}" = "$2" ]; then echo "$2"; else echo "benchmarks/out/$1"; fi
}

# check_bench_python PY [DEVICE]: exits with a message saying what is missing
# (the interpreter, torch, fastgp, or, when DEVICE is given, its C++ kernels for
# DEVICE) and how to point the script at the environment where fastgp is installed.
check_bench_python() {
  local py=$1 device=${2:-} err
  local hint="point the script at the environment where fastgp is installed: PYTHON=.venv/bin/python $0 ...
  (or activate that environment; a .venv at the repository root is used automatically)"
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "benchmarks: no Python interpreter '$py'; $hint" >&2
    exit 1
  fi
  if ! err=$("$py" -c 'import torch' 2>&1); then
    echo "benchmarks: torch is not installed for $py ($(command -v "$py")): ${err##*$'\n'}" >&2
    echo "  $hint" >&2
    exit 1
  fi
  if ! err=$("$py" -c 'import fastgp' 2>&1); then
    echo "benchmarks: fastgp cannot be imported by $py: ${err##*$'\n'}" >&2
    echo "  install it there (pip install --no-build-isolation -e .), or $hint" >&2
    exit 1
  fi
  if [ -n "$device" ] && ! "$py" -c 'import sys, fastgp; sys.exit("cpp" not in fastgp.available_backends(sys.argv[1]))' "$device"; then
    echo "benchmarks: fastgp's C++ extension has no $device kernels for $py; build it first:" >&2
    echo "  MAX_JOBS=2 $py setup.py build_ext --inplace   (or $py -m pip install --no-build-isolation .)" >&2
    "$py" -c 'import sys, fastgp; print(fastgp.info()["backends"][sys.argv[1]]["cpp"])' "$device" >&2
    exit 1
  fi
}

# run_suites: runs the suites and the report.
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
  local py status=0 f raw="$out/raw"
  py=$(bench_python)
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
