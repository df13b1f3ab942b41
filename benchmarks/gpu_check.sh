#!/usr/bin/env bash
# One prepared command for a GPU machine without network: build and install
# fastgp for the visible card, print fastgp.info, run the GPU tests and the GPU
# benchmarks, and leave the results in OUTDIR:
#   summary.md                    steps (exit code, seconds), test counts, bandwidth summary
#   log.txt                       the output of every step
#   info.json                     python -m fastgp.info
#   tests-cuda.xml                JUnit XML of the CUDA kernel tests (tests/test_cuda.py -m gpu)
#   tests-gpu.xml                 JUnit XML of the other GPU tests (pytest tests -m gpu)
#   bench.json                    pytest-benchmark JSON of the GPU benchmark suites
#   bandwidth.json, bandwidth.md  benchmarks/gpu_bandwidth.py
#
# Usage: benchmarks/gpu_check.sh OUTDIR
# Every step runs under a time cap inside one overall budget (GPU_CHECK_BUDGET_S,
# default 540 s); a failing step is recorded and the next one still runs.
# Knobs: PYTHON (interpreter), TORCH_CUDA_ARCH_LIST (default: the visible card's),
# MAX_JOBS (default 16), GPU_CHECK_BUILD_S (build cap, default 240),
# GPU_CHECK_REHEARSE=1 (CPU rehearsal of this script: no arch detection, the
# bandwidth script on tiny CPU tensors).
set -u

if [ $# -lt 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
mkdir -p "$1" || exit 2
OUT=$(cd "$1" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$(pwd)

PY=${PYTHON:-python}
command -v "$PY" >/dev/null 2>&1 || PY=python3
BUDGET=${GPU_CHECK_BUDGET_S:-540}
REHEARSE=${GPU_CHECK_REHEARSE:-0}
START=$(date +%s)
LOG="$OUT/log.txt"
STEPS="$OUT/.steps.md"
: >"$LOG"
: >"$STEPS"

time_left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME CAP_S CMD...: runs CMD with stdout/stderr in the log, under
# min(CAP_S, time left); records exit code and duration; never aborts the script.
step() {
  local name=$1 cap=$2
  shift 2
  local left limit t0 rc note=""
  left=$(time_left)
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "| $name | - | 0 | skipped: time budget spent |" >>"$STEPS"
    return 0
  fi
  printf '\n==== %s (limit %ss): %s\n' "$name" "$limit" "$*" >>"$LOG"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then note="timed out after ${limit}s"; fi
  if [ "$rc" -eq 5 ]; then note="no tests selected"; fi
  echo "| $name | $rc | $(($(date +%s) - t0)) | $note |" >>"$STEPS"
  return 0
}

# 1. What machine this is.
step environment 30 bash -c "
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo 'nvidia-smi: unavailable'
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  nproc; '$PY' --version
  '$PY' -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())'
  '$PY' -c 'import triton; print(\"triton\", triton.__version__)' 2>&1 | tail -n 1
  '$PY' -m pip --version"

# 2. Build and install for the visible card only (one arch compiles fastest).
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ] && [ "$REHEARSE" != 1 ]; then
  TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>>"$LOG")
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-}
export MAX_JOBS=${MAX_JOBS:-16}
echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS" >>"$LOG"
[ -n "$TORCH_CUDA_ARCH_LIST" ] || unset TORCH_CUDA_ARCH_LIST
step build "${GPU_CHECK_BUILD_S:-240}" "$PY" -m pip install --no-build-isolation --no-deps --no-index --no-cache-dir -v .

# 3. The tests import fastgp from this checkout: put the installed library next
#    to its sources (the same binary pip installed).
step place-library 60 "$PY" - "$REPO" <<'EOF'
import glob, os, shutil, sys
repo = os.path.realpath(sys.argv[1])
sys.path = [p for p in sys.path if p and os.path.realpath(p) != repo and p != "."]
import fastgp  # the installed copy
src = os.path.dirname(os.path.realpath(fastgp.__file__))
dst = os.path.join(repo, "fastgp")
libs = glob.glob(os.path.join(src, "_C*.so"))
if not libs:
    sys.exit(f"no compiled fastgp._C in the installed package at {src}")
if src != dst:
    for f in libs + glob.glob(os.path.join(src, "_build_info.json")):
        shutil.copy2(f, dst)
        print("copied", f, "->", dst)
from fastgp._ext import state
print("installed extension loaded:", state.loaded, state.reason or "")
EOF

# 4. What fastgp sees.
step info 60 bash -c "'$PY' -m fastgp.info > '$OUT/info.json'"

# 5. GPU tests of the CUDA kernels, then the bandwidth benchmark (the issue's
#    figures), then the other GPU tests and benchmark suites. Separate steps, so
#    that a slow suite cannot take the JUnit XML of another with it.
step cuda-tests 150 "$PY" -m pytest tests/test_cuda.py -m gpu -q -rs -p no:cacheprovider \
  --junitxml="$OUT/tests-cuda.xml"

# 6. Bandwidth vs copy, speed-ups, launches per call.
LEFT=$(time_left)
BW_BUDGET=$((LEFT - 150 < 120 ? LEFT - 150 : 120))
[ "$BW_BUDGET" -gt 20 ] || BW_BUDGET=20
if [ "$REHEARSE" = 1 ]; then BW_EXTRA=--rehearse-on-cpu; else BW_EXTRA=; fi
step bandwidth $((BW_BUDGET + 60)) "$PY" benchmarks/gpu_bandwidth.py --out "$OUT" --budget-s "$BW_BUDGET" $BW_EXTRA

# 7. Every other test marked gpu (Triton kernels...).
step other-gpu-tests 120 "$PY" -m pytest tests -m gpu --ignore=tests/test_cuda.py -q -rs -p no:cacheprovider \
  --junitxml="$OUT/tests-gpu.xml"

# 8. The GPU benchmark suites (pytest-benchmark), kept short.
step benchmark-suites 90 "$PY" -m pytest benchmarks -k "cuda or gpu" -q -p no:cacheprovider \
  --benchmark-json="$OUT/bench.json" --benchmark-max-time=0.2 --benchmark-min-rounds=3 --benchmark-warmup=on

# 9. Summary.
"$PY" - "$OUT" "$(($(date +%s) - START))" <<'EOF' >"$OUT/summary.md" 2>>"$LOG"
import json, os, sys
import xml.etree.ElementTree as ET
out, seconds = sys.argv[1], sys.argv[2]
print(f"# fastgp GPU check ({seconds} s)\n")
try:
    info = json.load(open(os.path.join(out, "info.json")))
    ext = info.get("extension", {})
    print(f"GPU {info.get('gpu')}, torch {info.get('torch')} (CUDA {info.get('torch_cuda')}), "
          f"triton {info.get('triton')}; extension loaded: {ext.get('loaded')} "
          f"{ext.get('reason') or ''}; build: {ext.get('build')}; auto backend: {info.get('auto')}\n")
except Exception as e:
    print(f"info.json unreadable: {e}\n")
print("| step | exit code | seconds | note |\n|---|---|---|---|")
print(open(os.path.join(out, ".steps.md")).read())
for name, label in (("tests-cuda.xml", "CUDA kernel tests"), ("tests-gpu.xml", "Other GPU tests")):
    try:
        root = ET.parse(os.path.join(out, name)).getroot()
    except Exception as e:
        print(f"{label}: no readable {name} ({e})\n")
        continue
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    print(f"{label}: " + ", ".join(f"{v} {k}" for k, v in total.items()))
    for s in suites:
        for case in s.iter("testcase"):
            for bad in list(case.findall("failure")) + list(case.findall("error")):
                first = (bad.get("message") or "").splitlines()[:1]
                print(f"- {bad.tag}: {case.get('classname')}::{case.get('name')}: {first[0][:200] if first else ''}")
    print()
try:
    bench = json.load(open(os.path.join(out, "bench.json")))
    print(f"\nBenchmark suites: {len(bench.get('benchmarks', []))} benchmarks in bench.json")
except Exception as e:
    print(f"\nBenchmark suites: no bench.json ({e})")
print()
try:
    print(open(os.path.join(out, "bandwidth.md")).read())
except Exception as e:
    print(f"bandwidth.md missing ({e})")
EOF
rm -f "$STEPS"
cat "$OUT/summary.md"
