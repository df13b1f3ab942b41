#!/usr/bin/env bash
# The GPU check: one prepared command for a GPU machine without network. It
# builds fastgp for the visible card, checks that the CUDA kernels are
# registered, runs the GPU tests (and the op matrix on the GPU), the bandwidth
# benchmark with the GPU targets, and compute-sanitizer (memcheck, racecheck)
# over a few cases when the tool is there, then says whether everything was
# proven:
#   exit 0  every step ran, every test passed, every target was met
#   exit 1  something failed or was missed (each reason is printed, "FAILED: ...")
#   exit 3  no GPU: nothing was proven
# OUTDIR then holds:
#   summary.md        steps (exit code, seconds), the verdict and its reasons, test counts, targets
#   readme_table.md   the README's GPU table, ready to paste (card, versions, figures)
#   targets.json      every target: value, threshold, met
#   bandwidth.json, bandwidth.md   benchmarks/gpu_bandwidth.py
#   info.json         python -m fastgp.info
#   environment.txt   nvidia-smi, nvcc, torch/triton versions
#   tests-*.xml       JUnit XML of each test step
#   sanitizer-*.txt   compute-sanitizer output
#   log.txt           the output of every step
#
# Usage: benchmarks/gpu_check.sh OUTDIR
# Every step runs under a time cap inside one overall budget
# (GPU_CHECK_BUDGET_S, default 480 s); a failing step is recorded and the next
# one still runs. Knobs: PYTHON (interpreter), TORCH_CUDA_ARCH_LIST (default:
# the visible card's arch only, the fastest build), MAX_JOBS (default: the
# CPU count), GPU_CHECK_BUILD_S (build cap, default 240),
# GPU_CHECK_REHEARSE=1: rehearsal on a machine without a GPU: every step that
# can run without one runs (a CPU-only build in place, nothing installed; the
# CPU tests; the bandwidth script on tiny CPU tensors), and the check still
# ends with "no GPU: nothing was proven" and exit 3.
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
BUDGET=${GPU_CHECK_BUDGET_S:-480}
REHEARSE=${GPU_CHECK_REHEARSE:-0}
START=$(date +%s)
LOG="$OUT/log.txt"
STEPS="$OUT/.steps.md"
REASONS="$OUT/.reasons.txt"
: >"$LOG"
: >"$STEPS"
: >"$REASONS"
# The checkout's fastgp (with the library built for it) everywhere, not another install.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

time_left() { echo $((BUDGET - ($(date +%s) - START))); }
fail() { echo "$*" >>"$REASONS"; }

# step NAME CAP_S CMD...: runs CMD with its output in the log, under
# min(CAP_S, time left); records exit code and duration in STEP_RC and the
# steps table; never aborts the script.
STEP_RC=0
step() {
  local name=$1 cap=$2
  shift 2
  local left limit t0 note=""
  left=$(time_left)
  limit=$((cap < left ? cap : left))
  if [ "$limit" -lt 10 ]; then
    echo "| $name | - | 0 | skipped: time budget spent |" >>"$STEPS"
    STEP_RC=125
    return 0
  fi
  printf '\n==== %s (limit %ss): %s\n' "$name" "$limit" "$*" >>"$LOG"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  STEP_RC=$?
  if [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then note="timed out after ${limit}s"; fi
  if [ "$STEP_RC" -eq 5 ]; then note="no tests selected"; fi
  echo "| $name | $STEP_RC | $(($(date +%s) - t0)) | $note |" >>"$STEPS"
  return 0
}

# Fails the check for a step that did not end with exit code 0.
require() {
  local what=$1
  if [ "$STEP_RC" -eq 125 ]; then
    fail "$what: not run (time budget spent)"
  elif [ "$STEP_RC" -ne 0 ]; then
    fail "$what (exit code $STEP_RC, see log.txt)"
  fi
}

# 1. What machine this is.
step environment 60 bash -c "
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv 2>&1 || echo 'nvidia-smi: unavailable'
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
  command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -n 1
  echo cpus \$(nproc); '$PY' --version
  '$PY' -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"available\", torch.cuda.is_available())'
  '$PY' -c 'import triton; print(\"triton\", triton.__version__)' 2>&1 | tail -n 1" 
sed -n '/==== environment/,$p' "$LOG" | tail -n +2 >"$OUT/environment.txt"

HAS_GPU=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>>"$LOG" || echo 0)
if [ "$HAS_GPU" != 1 ]; then
  fail "no GPU: nothing was proven"
fi

# 2. Build: for the visible card's arch only (one arch compiles fastest), and
#    installed; in a rehearsal CPU-only and in place (nothing installed).
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [ "$HAS_GPU" = 1 ]; then
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" 2>>"$LOG")
  fi
  export TORCH_CUDA_ARCH_LIST FORCE_CUDA=1
  echo "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS" >>"$LOG"
  step build "${GPU_CHECK_BUILD_S:-240}" "$PY" -m pip install --no-build-isolation --no-deps --no-index \
    --no-cache-dir -v .
  require "the build failed"
  # The tests import fastgp from this checkout: put the installed library next to its sources.
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
EOF
  require "the installed library could not be placed next to the sources"
elif [ "$REHEARSE" = 1 ]; then
  step build "${GPU_CHECK_BUILD_S:-900}" env FASTGP_CPU_ONLY=1 "$PY" setup.py build_ext --inplace
  require "the build failed"
fi

# 3. What fastgp sees, and whether the CUDA kernels are registered.
step info 60 bash -c "'$PY' -m fastgp.info > '$OUT/info.json'"
step cuda-kernels-registered 60 "$PY" -c "
import sys, torch
from fastgp._ext import state
ops = ('interpolate', 'penalty_forward', 'penalty_backward')
ok = state.loaded and all(torch._C._dispatch_has_kernel_for_dispatch_key(f'fastgp::{o}', 'CUDA') for o in ops)
print('extension loaded:', state.loaded, state.reason or '', 'build:', state.build)
print('CUDA kernels registered:', ok)
sys.exit(0 if ok else 1)"
if [ "$HAS_GPU" = 1 ]; then
  require "the CUDA kernels are not registered"
fi

# 4. Tests. The CUDA kernel tests (each skips only without a GPU; with one, a
#    module whose kernels are missing fails), the launch plan on the CPU, and
#    the Triton tests (on the GPU; the interpreted ones run in a subprocess).
pytest_step() {
  local name=$1 cap=$2 xml=$3
  shift 3
  step "$name" "$cap" "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/$xml" "$@"
  require "tests failed: $name"
}
pytest_step cuda-tests 180 tests-cuda.xml tests/test_cuda.py tests/test_cuda_review.py --maxfail=20
# The op matrix (values against the float64 reference, layouts, opcheck) on the
# CUDA device, for the extension's kernels and Triton's.
if [ "$HAS_GPU" = 1 ]; then
  pytest_step cuda-matrix 150 tests-cuda-matrix.xml tests/test_penalty.py tests/test_interpolate.py \
    tests/test_opcheck.py tests/test_semantics.py --backends=cpp,triton -k cuda -m "not heavy" --maxfail=20
fi
pytest_step launch-plan-tests 90 tests-launch-plan.xml tests/test_launch_plan.py
# On a GPU the Triton kernels run there; their interpreted runs (slow subprocesses) are left to the CPU suite.
pytest_step triton-tests 150 tests-triton.xml tests/test_triton_kernels.py tests/test_triton.py \
  tests/test_triton_review.py -k "not interpreted" --maxfail=20

# 5. Bandwidth, speed-ups, launches per call, and the targets (before the
#    sanitizer, which gets what is left of the budget: the figures come first).
LEFT=$(time_left)
BW_BUDGET=$((LEFT - 220 < 150 ? LEFT - 220 : 150))
[ "$BW_BUDGET" -gt 20 ] || BW_BUDGET=20
if [ "$HAS_GPU" = 1 ]; then BW_EXTRA=; else BW_EXTRA="--rehearse-on-cpu --min-time-s 0.005 --repeats 3"; fi
if [ "$HAS_GPU" = 1 ] || [ "$REHEARSE" = 1 ]; then
  # shellcheck disable=SC2086
  step bandwidth $((BW_BUDGET + 60)) "$PY" benchmarks/gpu_bandwidth.py --out "$OUT" --budget-s "$BW_BUDGET" $BW_EXTRA
  if [ "$HAS_GPU" = 1 ] && [ "$STEP_RC" -ne 0 ] && [ "$STEP_RC" -ne 1 ]; then
    fail "the bandwidth benchmark did not finish (exit code $STEP_RC)"
  fi
fi

# 6. compute-sanitizer over a few cases (every kernel, both walks, the split
#    and folded forward, the strided instances), when the tool is there.
SANITIZER=$(command -v compute-sanitizer || true)
if [ -z "$SANITIZER" ] && [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/compute-sanitizer" ]; then
  SANITIZER=$CUDA_HOME/bin/compute-sanitizer
fi
cat >"$OUT/sanitizer_cases.py" <<'EOF'
import torch
import fastgp  # noqa: F401  registers the ops (and their autograd)
dev = "cuda"
cases = [(3, 40000), (2000, 2), (64, 16), (5, 3, 33, 17)]
for shape in cases:
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        g = torch.randn(shape, device=dev).to(dtype)
        strided = torch.randn(*shape[:-1], 2 * shape[-1], device=dev).to(dtype)[..., ::2]
        for grads in ([g], [g, strided], [torch.empty(shape[0], 0, device=dev, dtype=dtype), g]):
            for reduction in (0, 1):
                _, norms = torch.ops.fastgp.penalty_forward(grads, None, 10.0, 1.0, 2.0, False, reduction)
                torch.ops.fastgp.penalty_backward(torch.ones((), device=dev), grads, norms, None, 10.0, 1.0, 2.0,
                                                  False, 1)
        torch.ops.fastgp.interpolate(g, strided, torch.rand(shape[0], device=dev))
torch.cuda.synchronize()
print("sanitizer cases done")
EOF
if [ "$HAS_GPU" != 1 ]; then
  echo "| compute-sanitizer | - | 0 | skipped: no GPU |" >>"$STEPS"
elif [ -z "$SANITIZER" ]; then
  echo "| compute-sanitizer | - | 0 | not found: not run |" >>"$STEPS"
  echo "compute-sanitizer not found: memcheck and racecheck not run" >>"$LOG"
else
  for tool in memcheck racecheck; do
    step "sanitizer-$tool" 90 "$SANITIZER" --tool "$tool" --error-exitcode 1 --log-file "$OUT/sanitizer-$tool.txt" \
      "$PY" "$OUT/sanitizer_cases.py"
    require "compute-sanitizer $tool found errors (sanitizer-$tool.txt)"
  done
fi

# 7. Verdict and summary.
"$PY" - "$OUT" "$HAS_GPU" <<'EOF' >>"$REASONS" 2>>"$LOG"
import json, os, sys
out, has_gpu = sys.argv[1], sys.argv[2] == "1"
if not has_gpu:
    sys.exit(0)
try:
    targets = json.load(open(os.path.join(out, "targets.json")))
except Exception as e:
    print(f"targets not evaluated: no readable targets.json ({e})")
    sys.exit(0)
for t in targets:
    if not t["met"]:
        value = "not measured" if t["value"] is None else (
            f"{t['value']:.2f}" if isinstance(t["value"], float) else t["value"])
        print(f"target missed: {t['target']} at {t['shape']} {t['dtype']}: {value}, "
              f"needs {t['unit']} {t['threshold']}")
EOF
"$PY" - "$OUT" "$(($(date +%s) - START))" <<'EOF' >"$OUT/summary.md" 2>>"$LOG"
import json, os, sys
import xml.etree.ElementTree as ET
out, seconds = sys.argv[1], sys.argv[2]
reasons = [r for r in open(os.path.join(out, ".reasons.txt")).read().splitlines() if r.strip()]
print(f"# fastgp GPU check ({seconds} s)\n")
print("Verdict: " + ("everything proven" if not reasons else "NOT proven") + "\n")
for r in reasons:
    print(f"- FAILED: {r}")
print()
try:
    info = json.load(open(os.path.join(out, "info.json")))
    print(f"fastgp.info: {json.dumps(info)[:1500]}\n")
except Exception as e:
    print(f"info.json unreadable: {e}\n")
print("| step | exit code | seconds | note |\n|---|---|---|---|")
print(open(os.path.join(out, ".steps.md")).read())
for name in sorted(f for f in os.listdir(out) if f.startswith("tests-") and f.endswith(".xml")):
    try:
        root = ET.parse(os.path.join(out, name)).getroot()
    except Exception as e:
        print(f"{name}: unreadable ({e})\n")
        continue
    suites = [root] if root.tag == "testsuite" else list(root)
    total = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    print(f"{name}: " + ", ".join(f"{v} {k}" for k, v in total.items()))
    for s in suites:
        for case in s.iter("testcase"):
            for bad in list(case.findall("failure")) + list(case.findall("error")):
                first = (bad.get("message") or "").splitlines()[:1]
                print(f"- {bad.tag}: {case.get('classname')}::{case.get('name')}: {first[0][:200] if first else ''}")
    print()
for name in ("readme_table.md", "bandwidth.md"):
    try:
        print(open(os.path.join(out, name)).read())
    except OSError as e:
        print(f"{name} missing ({e})\n")
EOF
rm -f "$STEPS"
cat "$OUT/summary.md"
if [ -s "$REASONS" ]; then
  echo
  sed 's/^/FAILED: /' "$REASONS"
  if [ "$HAS_GPU" != 1 ]; then
    echo "no GPU: nothing was proven"
    rm -f "$REASONS"
    exit 3
  fi
  rm -f "$REASONS"
  exit 1
fi
rm -f "$REASONS"
echo "GPU check passed: every test passed and every target was met"
exit 0
