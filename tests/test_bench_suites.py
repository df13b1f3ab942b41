"""The benchmark suites still run against the current API (smoke matrix, no
timing), and the fused path's memory property holds: on CPU it allocates
nothing of full size beyond its outputs (asserted inside bench_memory.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytest_benchmark")
ROOT = Path(__file__).resolve().parents[1]


def _run_suite(*args) -> str:
    # torch.compile is left out: it is slow to compile and PyTorch's, not ours.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--benchmark-disable",
           "--bench-matrix=smoke", "--bench-device=cpu", "-k", "not compile", *args]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout
    return proc.stdout


@pytest.mark.slow
def test_op_suite_runs():
    _run_suite("benchmarks/bench_ops.py")


@pytest.mark.slow
def test_overhead_suite_runs():
    out = _run_suite("benchmarks/bench_overhead.py")
    assert " failed" not in out


@pytest.mark.slow
def test_fused_path_allocates_only_its_outputs():
    import fastgp

    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("the C++ extension is not built")
    out = _run_suite("benchmarks/bench_memory.py", "-k", "op_memory and cpp")
    assert "3 passed" in out, out[-2000:]  # interp, forward, fwdbwd
