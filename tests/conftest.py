"""The test matrix and what every test file shares: the (backend, device)
pairs, one tolerance table, one tensor/layout maker, one CUDA skip helper.

The matrix. A test that takes the ``backend`` fixture runs once per backend of
``fastgp.backends.PRIORITY`` that is available on the CPU; one that takes
``backend`` and ``device`` runs once per available (backend, device) pair, CUDA
included. A new backend gets every such test by joining PRIORITY. Pairs that
are unavailable here are listed, with the reason, by
tests/test_backends.py::test_matrix_pair (skipped). ``--backends=a,b`` runs
only those backends' parametrizations and deselects every test that is not
parametrized over backends: tests/test_triton.py runs ``--backends=triton``
in a fresh interpreter with TRITON_INTERPRET=1 (which must be set before
triton is imported) so the Triton kernels meet the op-level matrix on the
CPU, less the cases marked ``heavy`` (rows of 10^4 elements and more, or
thousands of kernel calls, which take the interpreter minutes; every
backend runs them everywhere else).

Tolerances (``tolerance``). A fastgp result computed from inputs of dtype
``dtype`` is compared with fastgp.reference in float64 on the very same
(rounded) inputs, so only the arithmetic of the computation differs:
  * a row's sum of squares over n elements in the accumulation dtype (unit
    roundoff u = eps/2: float32 for 16/32-bit inputs, float64 for float64) has
    relative error below LAMBDA * sqrt(n) * u for every summation order (any
    vector width, blocking or thread count) with probability at least
    1 - 2n exp(-LAMBDA^2 / 2) under the model of independent rounding errors
    (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019); the batch reduction
    adds the same with n = B;
  * the norm (a square root) halves it; the handful of scalar operations that
    follow (scale, subtract, power as exp/log, weight) add at most 8 LAMBDA u;
  * |n - c|^p multiplies a relative error by p; the subtraction cancels, so
    the absolute tolerance is the relative one times the magnitude of the
    terms that cancel (``scale``: e.g. weight * (max n + |c|)^p);
  * a result stored in a 16-bit dtype (interpolation, dL/dg) is rounded once
    more: + u of that dtype.
(p < 2 makes phi' non-smooth at the center: the tests keep norms away from it.)
With LAMBDA = 8 the bound fails with probability below 1e-8 for rows of up to
10^5 elements; it holds on any x86-64 CPU and any thread count because it
assumes no summation order.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import textwrap
from typing import List, NamedTuple, Optional

import pytest
import torch

from fastgp import backends, reference

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
DEVICES = ("cpu", "cuda")
LAMBDA = 8.0


# ------------------------------------------------------------------ matrix
class Pair(NamedTuple):
    backend: str
    device: str

    @property
    def id(self) -> str:
        return f"{self.backend}-{self.device}"


def unavailable(pair: Pair) -> Optional[str]:
    """Why a (backend, device) pair cannot run here, or None."""
    if pair.device == "cuda" and not torch.cuda.is_available():
        return "needs a CUDA device"
    return backends.unavailable_reason(pair.backend, pair.device)


ALL_PAIRS = [Pair(b.name, d) for d in DEVICES for b in backends.PRIORITY]


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy: rows of 10^4 elements or more, or thousands of kernel calls: minutes "
                                       "in the Triton interpreter, whose session leaves them out (a GPU runs them)")
    config.addinivalue_line("markers", "for_backends(*names): a test of these backends that takes no `backend` "
                                       "argument; --backends keeps it when it names one of them")


def pytest_addoption(parser):
    parser.addoption("--backends", default=None,
                     help="comma-separated fastgp backends: run only their parametrizations of the tests that are "
                          "parametrized over backends (and the tests marked for_backends of them), and deselect "
                          "every other test")


def _selected(config):
    names = config.getoption("--backends")
    if names is None:
        return None
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in backends.NAMES]
    if unknown:
        raise pytest.UsageError(f"--backends: unknown backend(s) {unknown}; expected some of {backends.NAMES}")
    return chosen


def matrix(config, devices=DEVICES):
    """The available (backend, device) pairs on `devices`, honouring --backends."""
    chosen = _selected(config)
    return [p for p in ALL_PAIRS
            if p.device in devices and (chosen is None or p.backend in chosen) and unavailable(p) is None]


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    if any("backend" in m.args[0] for m in metafunc.definition.iter_markers("parametrize")):
        return  # the test chose its backends itself
    with_ops = "ops" in metafunc.fixturenames  # a test of the registered ops: backends that have some
    if "device" in metafunc.fixturenames:
        pairs = [p for p in matrix(metafunc.config) if not with_ops or backends.get(p.backend).ops]
        metafunc.parametrize("backend,device", [tuple(p) for p in pairs], ids=[p.id for p in pairs])
    else:
        names = [p.backend for p in matrix(metafunc.config, devices=("cpu",))
                 if not with_ops or backends.get(p.backend).ops]
        metafunc.parametrize("backend", names)


def pytest_collection_modifyitems(config, items):
    chosen = _selected(config)
    if chosen is None:
        return
    keep = [item for item in items
            if getattr(getattr(item, "callspec", None), "params", {}).get("backend") in chosen
            or any(name in chosen for m in item.iter_markers("for_backends") for name in m.args)]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.fixture
def impl(backend):
    """The backend module (the Backend protocol) of the current `backend`."""
    return backends.get(backend)


@pytest.fixture
def ops(impl):
    """The backend's registered ops (interpolate, penalty_forward, penalty_backward)
    as OpOverloads; a test taking this fixture runs only for backends with ops."""
    return tuple(torch._library.utils.lookup_op(name) for name in impl.ops)


def no_fake_tracing(backend: str, device: str) -> Optional[str]:
    """Why torch.compile and FakeTensorMode cannot trace this pair's kernels, or
    None: the Triton interpreter runs kernels on the host, reading the data
    pointers that fake tensors do not have (a GPU's Triton traces them)."""
    if backend == "triton" and device == "cpu" and backends.triton.INTERPRETED:
        return ("the Triton interpreter reads tensors' data pointers, which fake tensors (torch.compile, "
                "FakeTensorMode, opcheck's fake and AOT checks) do not have; a GPU traces these kernels")
    return None


def cuda_only(*backend_names: str):
    """Decorator of a test that needs a CUDA device (and the named backends on
    it): marked ``gpu``, and skipped with the reason when something is missing,
    except the extension's CUDA kernels on a machine that has a GPU: their
    absence there fails the test (a skip would prove nothing)."""
    why = None if torch.cuda.is_available() else "needs a CUDA device"
    broken = None
    for name in backend_names if why is None else ():
        reason = backends.unavailable_reason(name, "cuda")
        if reason and name == "cpp":
            broken = f"a CUDA device is present but fastgp's CUDA kernels are not usable: {reason}"
        why = why or (reason and f"{name}: {reason}")

    def apply(fn):
        if broken is not None:
            @functools.wraps(fn)
            def fails(*args, **kwargs):
                pytest.fail(broken)

            return pytest.mark.gpu(fails)
        return pytest.mark.gpu(pytest.mark.skipif(why is not None, reason=str(why))(fn))

    return apply


# ------------------------------------------------------- the ends of the range
# Values whose squares overflow or underflow the accumulation dtype while the
# norms themselves are representable (float32/bfloat16 squares leave float32
# above ~1.8e19 and below ~1e-19.5; float64's above ~1e154 and below ~1e-162):
# the kernels' range rescue must still give finite, accurate norms.
RANGE_ENDS = {
    torch.float32: (1e20, 1e-25, 1e36, 1e-40),
    torch.bfloat16: (1e30, 1e-30),
    torch.float64: (1e200, 1e-200, 1e300, 1e-310),
}
# Norms so small (or large) that phi'(n)/n leaves float32: dL/dg must stay finite and right.
COEF_RANGE_ENDS = (3e-39, 1e-40, 1e18)


# --------------------------------------------------------------- tolerances
def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def tolerance(dtype: torch.dtype, row_len: int = 1, batch: int = 1, power: float = 2.0,
              stored: Optional[torch.dtype] = None) -> float:
    """The relative tolerance of a fastgp result from `dtype` inputs against the
    float64 reference (derivation in this module's docstring). `stored`: the
    dtype the result is stored in, when it is not the accumulation dtype."""
    u = unit_roundoff(reference.accumulation_dtype(dtype))
    rtol = max(power, 1.0) * LAMBDA * (math.sqrt(row_len) / 2 + math.sqrt(batch) + 8) * u
    if stored is not None and stored != reference.accumulation_dtype(dtype):
        rtol += unit_roundoff(stored)
    return rtol


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, *, row_len: int = 1,
                 batch: int = 1, power: float = 2.0, stored: Optional[torch.dtype] = None,
                 scale: Optional[float] = None, msg=None) -> None:
    """actual == expected within tolerance(...); the absolute tolerance is the
    relative one times `scale`, the magnitude of the terms that cancel
    (default: the largest |expected|, at least 1)."""
    rtol = tolerance(dtype, row_len, batch, power, stored)
    if scale is None:
        scale = float(expected.abs().max()) if expected.numel() else 1.0
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=rtol * max(scale, 1.0), msg=msg)


def row_len(t: torch.Tensor) -> int:
    return math.prod(t.shape[1:])


# ------------------------------------------------------------------ tensors
LAYOUTS = ("contiguous", "channels_last", "transposed", "sliced", "padded", "batch_strided", "misaligned", "permuted",
           "expanded")


def make_tensor(shape, dtype=torch.float32, layout="contiguous", seed=0, device="cpu", scale=1.0) -> torch.Tensor:
    """A tensor of `shape` and `dtype` on `device` holding seeded N(0, scale^2)
    values (rounded to dtype; the same values for every layout but "expanded"),
    with the memory layout:
      contiguous     row-major
      channels_last  channels_last (4-D) / channels_last_3d (5-D)
      transposed     the last two dims swapped in memory
      sliced         every other element of the last dim (not dense)
      padded         each innermost row followed by a gap of 3 elements
      batch_strided  every other sample of a batch twice as big (dense rows)
      misaligned     dense, one element past an aligned address
      permuted       the non-batch dims in reverse memory order (dense, not channels_last)
      expanded       stride 0 in the last dim (as autograd returns for a sum)
    """
    shape = tuple(shape)
    gen = torch.Generator().manual_seed(seed)
    if layout == "expanded":
        small = shape[:-1] + (1,)
        return (torch.randn(small, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device).expand(shape)
    values = (torch.randn(shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)
    if layout == "contiguous":
        return values
    if layout == "channels_last":
        return values.contiguous(memory_format=torch.channels_last if len(shape) == 4 else torch.channels_last_3d)
    if layout == "transposed":
        return values.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "sliced":
        big = torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype, device=device)
        big[..., ::2] = values
        return big[..., ::2]
    if layout == "padded":
        big = torch.zeros(*shape[:-1], shape[-1] + 3, dtype=dtype, device=device)
        big[..., : shape[-1]] = values
        return big[..., : shape[-1]]
    if layout == "batch_strided":
        big = torch.zeros(2 * shape[0], *shape[1:], dtype=dtype, device=device)
        big[::2] = values
        return big[::2]
    if layout == "misaligned":
        flat = torch.zeros(values.numel() + 1, dtype=dtype, device=device)
        flat[1:] = values.reshape(-1)
        return flat[1:].view(shape)
    if layout == "permuted":
        order = [0] + list(range(len(shape) - 1, 0, -1))
        return values.permute(order).contiguous().permute([order.index(d) for d in range(len(shape))])
    raise ValueError(f"unknown layout {layout!r}")


def make_alpha(batch: int, dtype: torch.dtype = torch.float32, device="cpu", seed=0) -> torch.Tensor:
    """One seeded interpolation weight per sample in the accumulation dtype of `dtype`."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, generator=gen, dtype=torch.float64).to(device=device,
                                                                     dtype=reference.accumulation_dtype(dtype))


# ------------------------------------------------------------ subprocesses
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_in_subprocess(code: str, interpret: bool, timeout: int = 300) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter at the repository root, with the
    Triton interpreter on or off (TRITON_INTERPRET is read when triton is
    imported, so a session cannot switch it) and no FASTGP_BACKEND override."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env.pop("FASTGP_BACKEND", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def cuda_work(fn) -> List[str]:
    """The names of everything the GPU ran (kernels, memcpy, memset) during one
    call of fn, after a warm-up call; the profiler's own bookkeeping left out."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA and "Activity Buffer" not in e.name]
