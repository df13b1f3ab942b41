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


def _run(env_extra, path=ROOT, timeout=300, script=SCRIPT):
    """Runs `script` in a fresh interpreter that imports fastgp from `path`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTGP_BACKEND", "FASTGP_JIT", "FASTGP_DISABLE_EXTENSION")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(path)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout,
                         cwd=path)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _copy_package(tmp_path, build_info=None):
    """A copy of the fastgp package without its compiled library (and with the
    given build record, or none)."""
    import shutil

    import fastgp

    dst = tmp_path / "fastgp"
    shutil.copytree(os.path.dirname(fastgp.__file__), dst,
                    ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_build_info.json"))
    if build_info is not None:
        (dst / "_build_info.json").write_text(json.dumps(build_info))
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
    # `import fastgp` imports fastgp.info; as a plain module runpy would then warn
    # that it is about to run it a second time
    assert "RuntimeWarning" not in out.stderr, out.stderr
    info = json.loads(out.stdout)
    assert info["torch"] and "cpu" in info["backends"] and info["backends"]["cpu"]["torch"] is True
    assert set(info["extension"]) == {"loaded", "loaded_from", "reason", "build"}


def test_info_is_still_the_public_function():
    import fastgp

    assert callable(fastgp.info) and fastgp.info()["fastgp"] == fastgp.__version__


WARN_SCRIPT = r"""
import json, warnings, torch
with warnings.catch_warnings(record=True) as at_import:
    warnings.simplefilter("always")
    import fastgp
    fastgp.info()
with warnings.catch_warnings(record=True) as at_use:
    warnings.simplefilter("always")
    critic = torch.nn.Linear(4, 1)
    for _ in range(3):
        fastgp.gradient_penalty(critic, torch.randn(3, 4), torch.randn(3, 4)).backward()
        fastgp.penalty_from_grads(torch.randn(3, 4))
fallback = lambda ws: [w for w in ws if type(w.message).__name__ == "FallbackWarning"]
print(json.dumps({"import": [str(w.message) for w in fallback(at_import)],
                  "use": [str(w.message) for w in fallback(at_use)], "where": [w.filename for w in fallback(at_use)]}))
"""


def test_mismatched_build_warns_once_at_first_use(tmp_path):
    """backend "auto" falling back because the library was built for another
    torch: one warning, at the first call (not at import), with cause and fix."""
    res = _run({}, _copy_package(tmp_path, {"torch_version": "1.0.0", "with_cuda": False}), script=WARN_SCRIPT)
    assert res["import"] == []
    assert len(res["use"]) == 1, res["use"]
    message = res["use"][0]
    assert "built against torch 1.0.0" in message
    assert "pip install --no-build-isolation ." in message and "FASTGP_JIT=1" in message
    assert res["where"] == ["<string>"]  # the user's line, not fastgp's


def test_missing_library_warns_once(tmp_path):
    res = _run({}, _copy_package(tmp_path), script=WARN_SCRIPT)
    assert res["import"] == [] and len(res["use"]) == 1
    assert "could not be imported" in res["use"][0] and "pip install --no-build-isolation ." in res["use"][0]


@pytest.mark.parametrize("env,build_info", [
    ({"FASTGP_DISABLE_EXTENSION": "1"}, None),
    ({}, {"extension": False, "why": "built with FASTGP_NO_EXTENSION=1"}),
], ids=["FASTGP_DISABLE_EXTENSION", "FASTGP_NO_EXTENSION-build"])
def test_deliberate_fallback_does_not_warn(tmp_path, env, build_info):
    res = _run(env, _copy_package(tmp_path, build_info), script=WARN_SCRIPT)
    assert res["import"] == [] and res["use"] == []


def test_healthy_install_does_not_warn():
    import fastgp

    if "cpp" not in fastgp.available_backends("cpu"):
        pytest.skip("the C++ extension is not built")
    res = _run({}, script=WARN_SCRIPT)
    assert res["import"] == [] and res["use"] == []


def test_cuda_fallback_message(monkeypatch):
    """A library without CUDA kernels: a CPU-only build by choice is silent, one
    built where no GPU was visible says how to get the CUDA kernels."""
    from fastgp import _ext

    monkeypatch.setattr(_ext.state, "loaded", True)
    monkeypatch.setattr(_ext.state, "deliberate", False)
    monkeypatch.setattr(_ext, "has_kernel", lambda device_type: device_type == "cpu")
    monkeypatch.setattr(_ext.state, "build", {"with_cuda": False, "cuda_why": "FASTGP_CPU_ONLY=1", "cpu_only": True})
    assert _ext.fallback_message("cuda", "triton", "no CUDA kernels") is None
    monkeypatch.setattr(_ext.state, "build", {"with_cuda": False, "cuda_why": "no CUDA device was visible",
                                              "cpu_only": False})
    message = _ext.fallback_message("cuda", "triton", "no CUDA kernels")
    assert "FORCE_CUDA=1 pip install --no-build-isolation ." in message and "'triton'" in message
    assert _ext.fallback_message("meta", "torch", "no kernels for meta") is None
