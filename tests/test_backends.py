"""The backends as peers: one protocol, one priority list, one resolution
("auto", FASTGP_BACKEND, an unavailable backend's reason), one spelling of
the reduction codes, and the test matrix they define."""

from __future__ import annotations

import ast
import inspect
import os
import re

import pytest
import torch

import fastgp
from fastgp import backends
from fastgp.backends import shared
from fastgp.backends.cpp import arch_supported

from conftest import ALL_PAIRS, matrix, unavailable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL_METHODS = ("unavailable_reason", "interpolate", "penalty_forward", "penalty_backward")


@pytest.fixture
def fresh_resolution(monkeypatch):
    """An empty resolution cache, restored afterwards, and no FASTGP_BACKEND."""
    monkeypatch.setattr(backends, "_resolved", {})
    monkeypatch.delenv("FASTGP_BACKEND", raising=False)


@pytest.mark.parametrize("impl", backends.PRIORITY, ids=lambda b: b.name)
def test_every_backend_implements_the_protocol(impl):
    assert isinstance(impl, backends.Backend)
    assert backends.get(impl.name) is impl and isinstance(impl.ops, tuple)
    for method in PROTOCOL_METHODS:
        assert callable(getattr(impl, method)), method
    why = impl.unavailable_reason(torch.device("cpu"))
    assert why is None or (isinstance(why, str) and why)
    assert set(backends.NAMES) == {b.name for b in backends.PRIORITY} and len(backends.NAMES) == len(backends.PRIORITY)


def test_protocol_signatures_are_the_op_schemas():
    """The protocol's methods take the arguments of the op schemas (csrc/fastgp.cpp), in order."""
    text = re.sub(r'"\s*"', "", open(os.path.join(ROOT, "csrc", "fastgp.cpp")).read())  # join adjacent literals
    for op in ("interpolate", "penalty_forward", "penalty_backward"):
        schema = re.search(rf'"{op}\((.*?)\) ->', text).group(1)
        schema_args = [a.strip().split()[-1] for a in schema.split(",")]
        params = list(inspect.signature(getattr(backends.Backend, op)).parameters)[1:]  # without self
        assert params == schema_args, (op, params, schema_args)


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=lambda p: p.id)
def test_matrix_pair(pair, request):
    """Every (backend, device) pair: in the matrix when it can run here, else skipped with the reason."""
    why = unavailable(pair)
    if why is not None:
        pytest.skip(f"{pair.id} is not in this session's matrix: {why}")
    chosen = request.config.getoption("--backends")
    assert pair in matrix(request.config) or (chosen is not None and pair.backend not in chosen)


def test_available_backends_follow_the_priority_list():
    names = fastgp.available_backends("cpu")
    assert names == [n for n in backends.NAMES if n in names] and "torch" in names


def test_auto_takes_the_first_available_backend(fresh_resolution, monkeypatch):
    first = fastgp.available_backends("cpu")[0]
    assert fastgp.select_backend("auto", "cpu") == first
    for b in backends.PRIORITY:
        if b.name != "torch":
            monkeypatch.setattr(b, "unavailable_reason", lambda device: "simulated: missing")
    monkeypatch.setattr(backends, "_resolved", {})
    monkeypatch.setattr(fastgp._ext, "_warned_devices", set())
    with pytest.warns(fastgp.FallbackWarning, match="simulated: missing"):
        assert fastgp.select_backend("auto", "cpu") == "torch"


def test_auto_with_nothing_available_names_every_reason(fresh_resolution, monkeypatch):
    for b in backends.PRIORITY:
        monkeypatch.setattr(b, "unavailable_reason", lambda device, n=b.name: f"simulated: no {n} here")
    with pytest.raises(RuntimeError, match="no fastgp backend can run on cpu") as info:
        fastgp.penalty_from_grads(torch.randn(3, 4))
    for name in backends.NAMES:
        assert f"{name}: simulated: no {name} here" in str(info.value)


def test_unavailable_backend_says_why(fresh_resolution, monkeypatch):
    monkeypatch.setattr(backends.cpp.state, "loaded", False)
    monkeypatch.setattr(backends.cpp.state, "reason", "simulated: not built")
    with pytest.raises(RuntimeError, match="'cpp' is unavailable on cpu: .*simulated: not built"):
        fastgp.penalty_from_grads(torch.randn(3, 4), backend="cpp")


@pytest.mark.parametrize("bad", ["cuda-magic", None, 3])
def test_unknown_backend_is_refused(fresh_resolution, bad):
    with pytest.raises((ValueError, TypeError), match="backend must be one of auto, cpp, triton, torch"):
        fastgp.interpolate(torch.randn(3, 4), torch.randn(3, 4), backend=bad)


@pytest.mark.parametrize("name", backends.NAMES)
def test_fastgp_backend_env_overrides_auto(fresh_resolution, monkeypatch, name):
    if name not in fastgp.available_backends("cpu"):
        pytest.skip(f"{name} is not available on the CPU here")
    monkeypatch.setenv("FASTGP_BACKEND", name)
    assert backends.resolve("auto", torch.device("cpu")) == name
    assert fastgp.select_backend() == name


def test_resolution_is_cached_per_backend_and_device(fresh_resolution, monkeypatch):
    calls = []
    real = backends.pytorch.unavailable_reason
    monkeypatch.setattr(backends.pytorch, "unavailable_reason", lambda device: calls.append(device) or real(device))
    for _ in range(3):
        fastgp.interpolate(torch.randn(3, 4), torch.randn(3, 4), backend="torch")
    assert calls == [torch.device("cpu")]


def test_reduction_codes_are_spelled_alike():
    """csrc/penalty_math.h's enum and fastgp/triton/kernels.py's constants are the
    codes of backends/shared.py."""
    header = open(os.path.join(ROOT, "csrc", "penalty_math.h")).read()
    enum = re.search(r"enum\s+\w*\s*(?::\s*\w+\s*)?\{([^}]*)\}", header).group(1)
    cpp = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"k(\w+)\s*=\s*(\d+)", enum)}
    tree = ast.parse(open(os.path.join(ROOT, "fastgp", "triton", "kernels.py")).read())
    triton = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets[0].elts if isinstance(node.targets[0], ast.Tuple) else node.targets
            values = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for t, v in zip(targets, values):
                if isinstance(v, ast.Call) and len(v.args) == 1:  # tl.constexpr(N)
                    v = v.args[0]
                if isinstance(t, ast.Name) and t.id.startswith("REDUCTION_") and isinstance(v, ast.Constant):
                    triton[t.id[len("REDUCTION_"):].lower()] = v.value
    assert cpp == shared.REDUCTION_CODES, cpp
    assert triton == shared.REDUCTION_CODES, triton
    # the kernels compare against the named codes, never a bare number
    source = open(os.path.join(ROOT, "fastgp", "triton", "kernels.py")).read()
    assert not re.search(r"REDUCTION\s*[!=]=\s*\d", source)
    assert set(shared.REDUCTION_CODES) == set(fastgp.reference.REDUCTIONS)


@pytest.mark.parametrize("archs,cap,ok", [
    ("8.0;8.6;8.9;9.0+PTX", (9, 0), True), ("8.0;8.6;8.9;9.0+PTX", (12, 0), True),
    ("8.0;8.6;8.9;9.0+PTX", (7, 5), False), ("9.0", (8, 0), False), ("9.0", (10, 0), False),
    ("8.0", (8, 9), True), ("9.0a", (9, 0), True), (None, (7, 0), True), ("8.0 9.0", (9, 0), True),
])
def test_cuda_arch_compatibility_rule(archs, cap, ok):
    assert arch_supported(archs, cap) is ok
