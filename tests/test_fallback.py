"""fastgp without its compiled extension: import and the whole API work on the
pure-PyTorch backend, and info() says why (run in fresh interpreters)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import json, torch, fastgp
info = fastgp.info()
critic = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
real, fake = torch.randn(5, 4), torch.randn(5, 4)
gp = fastgp.gradient_penalty(critic, real, fake, weight=10.0)
gp.backward()
x = fastgp.interpolate(real, fake)
p, n = fastgp.penalty_from_grads(torch.randn(5, 3), return_norms=True)
try:
    fastgp.penalty_from_grads(torch.randn(5, 3), backend="cpp")
    cpp_error = None
except RuntimeError as e:
    cpp_error = str(e)
print(json.dumps({"backends": fastgp.available_backends(), "ext": info["extension"], "cpp_error": cpp_error,
                  "finite": bool(torch.isfinite(gp)), "norms": list(n.shape)}))
"""


def _run(env_extra, path=ROOT, timeout=300):
    """Runs SCRIPT in a fresh interpreter that imports fastgp from `path`."""
    env = dict(os.environ, **env_extra)
    env.pop("FASTGP_BACKEND", None)
    env["PYTHONPATH"] = str(path)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _copy_package(tmp_path, build_info=None, with_sources=False):
    """A copy of the fastgp package without its compiled library (and with the
    given build record, or none); with_sources adds the C++ sources beside it."""
    import shutil

    import fastgp

    dst = tmp_path / "fastgp"
    shutil.copytree(os.path.dirname(fastgp.__file__), dst,
                    ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_build_info.json"))
    if build_info is not None:
        (dst / "_build_info.json").write_text(json.dumps(build_info))
    if with_sources:
        shutil.copytree(os.path.join(ROOT, "csrc"), tmp_path / "csrc", ignore=shutil.ignore_patterns("cuda"))
    return tmp_path


def test_api_works_with_extension_disabled():
    res = _run({"FASTGP_DISABLE_EXTENSION": "1"})
    assert res["backends"] == ["torch"] or res["backends"] == ["triton", "torch"]
    assert not res["ext"]["loaded"] and "FASTGP_DISABLE_EXTENSION" in res["ext"]["reason"]
    assert "FASTGP_DISABLE_EXTENSION" in res["cpp_error"]
    assert res["finite"] and res["norms"] == [5]


def test_extension_built_for_another_torch_is_not_loaded(tmp_path):
    """A build record from another torch: fastgp must refuse to load that library
    and fall back, naming the version it was built against."""
    res = _run({}, _copy_package(tmp_path, {"torch_version": "1.0.0", "with_cuda": False}))
    assert not res["ext"]["loaded"]
    assert "built against torch 1.0.0" in res["ext"]["reason"]
    assert "cpp" not in res["backends"] and res["finite"]


def test_missing_library_falls_back(tmp_path):
    res = _run({}, _copy_package(tmp_path))
    assert not res["ext"]["loaded"] and "could not be imported" in res["ext"]["reason"]
    assert "FASTGP_JIT=1" in res["ext"]["reason"]


def test_info_command_prints_json():
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-m", "fastgp.info"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["torch"] and "cpu" in info["backends"] and info["backends"]["cpu"]["torch"] is True


def test_jit_build_on_first_use(tmp_path):
    """FASTGP_JIT=1 compiles the C++ sources against the running torch when the
    prebuilt library is missing, and the compiled kernels are then used."""
    env = {"FASTGP_JIT": "1", "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache"), "MAX_JOBS": "2"}
    res = _run(env, _copy_package(tmp_path, with_sources=True), timeout=900)
    assert res["ext"]["loaded"] and "FASTGP_JIT=1" in res["ext"]["how"]
    assert "cpp" in res["backends"] and res["cpp_error"] is None and res["finite"]
