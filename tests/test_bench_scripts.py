"""benchmarks/run_cpu.sh and run_gpu.sh before any suite runs: which
interpreter they pick, what they say when it lacks torch, and where they write
(never over the committed results unless that folder is named). The scripts run
from a copy of the benchmarks folder, with a fake interpreter that logs its
command lines, so no suite runs and the checkout is untouched."""

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("run_cpu.sh", "run_gpu.sh", "suites.sh")


@pytest.fixture
def repo(tmp_path):
    """A repository root holding the benchmark scripts and a committed result."""
    (tmp_path / "benchmarks").mkdir()
    for name in SCRIPTS:
        shutil.copy2(ROOT / "benchmarks" / name, tmp_path / "benchmarks" / name)
    committed = tmp_path / "benchmarks" / "results" / "cpu"
    committed.mkdir(parents=True)
    (committed / "summary.json").write_text("committed")
    return tmp_path


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _logging_python(path: Path, log: Path) -> Path:
    """An interpreter stand-in: logs its arguments, answers every check with success, runs nothing."""
    return _executable(path, f'#!/bin/sh\necho "$@" >> "{log}"\nexit 0\n')


def _run(repo, script, *args, python=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV")}
    if python is not None:
        env["PYTHON"] = str(python)
    return subprocess.run(["bash", str(repo / "benchmarks" / script), *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_python_without_torch_says_what_is_missing_and_how_to_fix(repo, tmp_path):
    fake = tmp_path / "fake_torch"
    no_torch = 'raise ModuleNotFoundError("No module named \'torch\'", name="torch")\n'
    _executable(fake / "torch" / "__init__.py", no_torch)
    python = _executable(tmp_path / "bin" / "python-without-torch",
                         f'#!/bin/sh\nPYTHONPATH="{fake}" exec "{sys.executable}" "$@"\n')
    proc = _run(repo, "run_cpu.sh", python=python)
    assert proc.returncode != 0
    assert "torch is not installed" in proc.stderr and "No module named 'torch'" in proc.stderr
    assert "PYTHON=.venv/bin/python" in proc.stderr
    assert "C++ extension" not in proc.stderr  # the old, misleading message


def test_missing_interpreter_is_named(repo, tmp_path):
    missing = str(tmp_path / "no-such-python")
    proc = _run(repo, "run_gpu.sh", python=missing)
    assert proc.returncode != 0 and missing in proc.stderr and "PYTHON=" in proc.stderr


@pytest.mark.parametrize("script,device", [("run_cpu.sh", "cpu"), ("run_gpu.sh", "gpu")])
def test_default_output_is_not_the_committed_folder(repo, tmp_path, script, device):
    log = tmp_path / "calls.log"
    proc = _run(repo, script, "--bench-matrix=smoke", python=_logging_python(tmp_path / "python", log))
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text()
    assert f"--benchmark-json=benchmarks/out/{device}/raw/ops.json" in calls
    assert "--bench-matrix=smoke" in calls  # an option is not taken for the output folder
    assert "results/" not in calls
    assert (repo / "benchmarks" / "results" / "cpu" / "summary.json").read_text() == "committed"


def test_committed_folder_only_when_named(repo, tmp_path):
    log = tmp_path / "calls.log"
    proc = _run(repo, "run_cpu.sh", "benchmarks/results/cpu", python=_logging_python(tmp_path / "python", log))
    assert proc.returncode == 0, proc.stderr
    assert "--benchmark-json=benchmarks/results/cpu/raw/ops.json" in log.read_text()


def test_repository_venv_is_found_without_PYTHON(repo, tmp_path):
    log = tmp_path / "calls.log"
    _logging_python(repo / ".venv" / "bin" / "python", log)
    proc = _run(repo, "run_cpu.sh")
    assert proc.returncode == 0, proc.stderr
    assert "-m pytest benchmarks/bench_ops.py" in log.read_text()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_check_without_a_gpu_exits_3_and_says_so(tmp_path):
    """The GPU check proves nothing on a machine without a GPU: exit code 3 and the reason, never 0.
    (A budget of a few seconds: the steps after the first are recorded as not run.)"""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run for real")
    env = dict(os.environ, PYTHON=sys.executable, GPU_CHECK_BUDGET_S="12")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no GPU: nothing was proven" in proc.stdout
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Verdict: NOT proven" in summary and "FAILED: no GPU" in summary
