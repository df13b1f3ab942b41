"""The built package, as pip installs it outside the checkout: it carries the
C++/CUDA sources, so FASTGP_JIT=1 compiles the kernels from site-packages when
the prebuilt library is missing (here: a FASTGP_NO_EXTENSION=1 wheel, which
holds no library and, by that choice, does not warn)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in")


def _pip(*args, env=None, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the project (so the checkout gets no build
    files) without compiling: FASTGP_NO_EXTENSION=1."""
    src = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "csrc", src / "csrc")
    shutil.copytree(ROOT / "fastgp", src / "fastgp",
                    ignore=shutil.ignore_patterns("__pycache__", "_C*.so", "_build_info.json", "_csrc"))
    dist = tmp_path_factory.mktemp("dist")
    env = dict(os.environ, FASTGP_NO_EXTENSION="1")
    _pip("wheel", "--no-build-isolation", "--no-deps", "--no-index", "-q", "-w", str(dist), str(src), env=env)
    (found,) = dist.glob("fastgp-*.whl")
    return found


def test_wheel_carries_the_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    csrc = {str(p.relative_to(ROOT / "csrc")).replace(os.sep, "/") for p in (ROOT / "csrc").rglob("*") if p.is_file()}
    missing = {f"fastgp/_csrc/{rel}" for rel in csrc} - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert "fastgp/info/__main__.py" in names
    record = json.loads(zipfile.ZipFile(wheel).read("fastgp/_build_info.json"))
    assert record["extension"] is False and "FASTGP_NO_EXTENSION" in record["why"]


INSTALLED_SCRIPT = r"""
import json, warnings, torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import fastgp
    from fastgp import reference
    g = torch.randn(6, 3, 5, dtype=torch.float64)
    auto = fastgp.penalty_from_grads(g, weight=10.0)
    ref = reference.penalty_from_grads([g], weight=10.0)[0]
ext = fastgp.info()["extension"]
print(json.dumps({"file": fastgp.__file__, "ext": ext, "backends": fastgp.available_backends("cpu"),
                  "auto_rel_error": abs(float(auto) - float(ref)) / abs(float(ref)),
                  "warnings": [str(w.message) for w in caught if "backend='auto'" in str(w.message)]}))
"""


def _run_installed(site, tmp_path, **env_extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGP_")}
    env.update(env_extra, PYTHONPATH=str(site))
    proc = subprocess.run([sys.executable, "-c", INSTALLED_SCRIPT], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(res["file"]).resolve().is_relative_to(Path(site).resolve())  # the installed copy, not the checkout
    return res


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    _pip("install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel))
    return target


def test_no_extension_install_falls_back_silently(site, tmp_path):
    res = _run_installed(site, tmp_path)
    assert not res["ext"]["loaded"] and "FASTGP_NO_EXTENSION" in res["ext"]["reason"]
    assert "cpp" not in res["backends"] and res["warnings"] == []


@pytest.mark.slow
def test_jit_compiles_from_an_installed_package(site, tmp_path):
    """FASTGP_JIT=1 in a package installed from a wheel compiles the shipped
    sources against the running torch, and the auto backend then uses them."""
    res = _run_installed(site, tmp_path, FASTGP_JIT="1", TORCH_EXTENSIONS_DIR=str(tmp_path / "cache"), MAX_JOBS="2")
    assert res["ext"]["loaded"] and "FASTGP_JIT=1" in res["ext"]["loaded_from"], res["ext"]
    assert res["backends"][0] == "cpp" and res["warnings"] == []
    # float64, rows of 15 elements, 6 rows: a few dozen roundings of 1.1e-16 each
    assert res["auto_rel_error"] < 1e-12


def _jit_calls(monkeypatch, gpu_visible, cuda_build_fails):
    """What _jit_build asks torch.utils.cpp_extension.load to compile (nothing is compiled)."""
    import torch
    import torch.utils.cpp_extension as cpp_extension

    from fastgp import _ext

    calls = []

    def fake_load(name, sources, with_cuda, extra_ldflags, **kwargs):
        calls.append({"name": name, "with_cuda": with_cuda, "cu": [s for s in sources if s.endswith(".cu")],
                      "ldflags": list(extra_ldflags)})
        if with_cuda:
            extra_ldflags.append("-lcudart")  # as torch's load() does, in place
        if with_cuda and cuda_build_fails:
            raise RuntimeError(f"Error building extension '{name}'")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", os.path.join(tempfile.gettempdir(), "cuda"))  # never read
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu_visible)
    return calls, _ext._jit_build()


def test_jit_compiles_the_cuda_sources_when_a_gpu_is_visible(monkeypatch):
    calls, record = _jit_calls(monkeypatch, gpu_visible=True, cuda_build_fails=False)
    assert len(calls) == 1 and calls[0]["with_cuda"] and calls[0]["cu"]
    assert record["with_cuda"] is True and record["jit"] is True


def test_jit_without_a_gpu_compiles_the_cpu_sources_only(monkeypatch):
    calls, record = _jit_calls(monkeypatch, gpu_visible=False, cuda_build_fails=False)
    assert [c["with_cuda"] for c in calls] == [False] and calls[0]["cu"] == []
    assert record["with_cuda"] is False


def test_jit_falls_back_to_the_cpu_sources_when_the_cuda_build_fails(monkeypatch):
    """A CUDA toolkit torch cannot link against must not cost the CPU kernels too."""
    calls, record = _jit_calls(monkeypatch, gpu_visible=True, cuda_build_fails=True)
    assert [c["with_cuda"] for c in calls] == [True, False] and calls[1]["cu"] == []
    assert "-lcudart" not in calls[1]["ldflags"]  # the failed CUDA attempt left nothing in the CPU build
    assert record["with_cuda"] is False and "fastgp_jit_C_cuda" in record["cuda_why"]
