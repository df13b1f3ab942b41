"""pytest configuration of the benchmark suites (outside the default test run:
pyproject's testpaths is ``tests``). Run them with, e.g.

    python -m pytest benchmarks --bench-matrix=quick --benchmark-json=ops.json

Options: --bench-matrix quick|full|smoke, --bench-device auto|cpu|cuda,
--bench-dtypes float32,bfloat16, --bench-threads N (CPU), --bench-rounds N
(rounds of the step suite), --bench-label TEXT (recorded with every result).
"""

from __future__ import annotations

import os
import platform

import pytest
import torch

import fastgp

from .matrix import DEFAULT_DTYPES, MATRICES


def pytest_addoption(parser):
    group = parser.getgroup("fastgp benchmarks")
    group.addoption("--bench-matrix", default="quick", choices=sorted(MATRICES),
                    help="shape matrix: quick (default), full, or smoke (checks the suites run)")
    group.addoption("--bench-device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="device to benchmark; auto = cuda when available, else cpu")
    group.addoption("--bench-dtypes", default=None,
                    help="comma-separated dtypes; default float32 on CPU, float32,bfloat16 on CUDA")
    group.addoption("--bench-threads", type=int, default=2, help="torch CPU threads for CPU runs (default 2)")
    group.addoption("--bench-rounds", type=int, default=None,
                    help="timed rounds of each step benchmark (default 3 on CPU, 10 on CUDA)")
    group.addoption("--bench-label", default="", help="free text recorded with every result (e.g. 'quiet machine')")


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py (pytest's own pattern is test_*.py); files named on
    the command line are already collected by pytest itself."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def _device(config) -> torch.device:
    name = config.getoption("--bench-device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device=cuda but torch sees no CUDA device")
    return torch.device(name)


def _dtypes(config, device):
    names = config.getoption("--bench-dtypes")
    names = names.split(",") if names else list(DEFAULT_DTYPES[device.type])
    for n in names:
        if not isinstance(getattr(torch, n, None), torch.dtype):
            raise pytest.UsageError(f"--bench-dtypes: unknown dtype {n!r}")
    return names


def pytest_configure(config):
    if not hasattr(config.option, "bench_matrix"):
        return
    device = _device(config)
    if device.type == "cpu":
        torch.set_num_threads(config.getoption("--bench-threads"))
    # One compiled function serves every shape of the matrix: allow that many
    # recompilations, and fail loudly rather than silently run eager.
    torch._dynamo.config.recompile_limit = 1024
    if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
        torch._dynamo.config.fail_on_recompile_limit_hit = True


def pytest_generate_tests(metafunc):
    config = metafunc.config
    if "shape" in metafunc.fixturenames:
        shapes = MATRICES[config.getoption("--bench-matrix")]
        metafunc.parametrize("shape", shapes, ids=[s.id for s in shapes])
    if "dtype_name" in metafunc.fixturenames:
        metafunc.parametrize("dtype_name", _dtypes(config, _device(config)))


@pytest.fixture(scope="session")
def device(pytestconfig) -> torch.device:
    return _device(pytestconfig)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton_version():
    try:
        import triton

        return triton.__version__
    except Exception:  # not installed, or broken
        return None


@pytest.fixture(scope="session")
def environment(pytestconfig, device) -> dict:
    """What every result records about the run."""
    return {
        "device": device.type,
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": _triton_version(),
        "fastgp": fastgp.__version__,
        "fastgp_backends": fastgp.available_backends(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "matrix": pytestconfig.getoption("--bench-matrix"),
        "label": pytestconfig.getoption("--bench-label"),
        # allocator settings change CPU timings of every op that allocates
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        # OpenMP spin-waiting makes every parallel op stall on a busy machine
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


@pytest.fixture
def record(benchmark, environment, device):
    """record(fn, group=..., **info): times fn (synchronizing inside the timed
    code on CUDA) and stores the environment and `info` in extra_info."""

    def run(fn, *, group: str, pedantic_rounds=None, **info):
        benchmark.group = group
        benchmark.extra_info.update(environment)
        benchmark.extra_info.update(info)
        # Load when the measurement starts: the report flags noisy runs.
        benchmark.extra_info["loadavg_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        if device.type == "cuda":
            def timed():
                out = fn()
                torch.cuda.synchronize(device)
                return out
        else:
            timed = fn
        if pedantic_rounds is not None:
            return benchmark.pedantic(timed, rounds=pedantic_rounds, iterations=1, warmup_rounds=1)
        return benchmark(timed)

    return run
