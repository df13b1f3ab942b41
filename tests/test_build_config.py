"""What setup.py decides before compiling anything: whether the CUDA sources
are compiled and for which archs, where the object files live (a reinstall
finds them up to date; another torch or other flags get their own), and which
sources the package carries for FASTGP_JIT=1."""

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("fastgp_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the helpers, builds nothing
    return module


def test_no_visible_gpu_compiles_no_cuda(setup_py):
    plan = setup_py.cuda_plan({}, "13.0", [], nvcc_found=True)
    assert plan["with_cuda"] is False and plan["archs"] is None
    assert "FORCE_CUDA=1" in plan["why"]  # says how to get the CUDA kernels anyway


def test_force_cuda_compiles_without_a_gpu(setup_py):
    plan = setup_py.cuda_plan({"FORCE_CUDA": "1"}, "13.0", [], nvcc_found=True)
    assert plan["with_cuda"] and plan["archs"] == setup_py.DEFAULT_CUDA_ARCHS
    plan = setup_py.cuda_plan({"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "9.0"}, "13.0", [], nvcc_found=True)
    assert plan["with_cuda"] and plan["archs"] == "9.0"


def test_visible_gpus_set_the_archs(setup_py):
    plan = setup_py.cuda_plan({}, "13.0", [(9, 0), (8, 6), (9, 0)], nvcc_found=True)
    assert plan["with_cuda"] and plan["archs"] == "8.6;9.0+PTX"
    plan = setup_py.cuda_plan({}, "13.0", [(10, 0), (9, 0)], nvcc_found=True)
    assert plan["archs"] == "9.0;10.0+PTX"  # sorted as numbers, not strings
    plan = setup_py.cuda_plan({"TORCH_CUDA_ARCH_LIST": "8.0"}, "13.0", [(9, 0)], nvcc_found=True)
    assert plan["archs"] == "8.0"  # an explicit list wins


def test_visible_capabilities_are_clamped_to_torchs_newest_arch(setup_py, monkeypatch):
    import torch

    caps = {0: (9, 0), 1: (12, 1)}
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: caps[i])
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90a", "sm_100", "sm_120", "compute_120"])
    assert setup_py.visible_capabilities() == [(9, 0), (12, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert setup_py.visible_capabilities() == []


@pytest.mark.parametrize("env,torch_cuda,caps,nvcc", [
    ({"FASTGP_CPU_ONLY": "1", "FORCE_CUDA": "1"}, "13.0", [(9, 0)], True),
    ({"FORCE_CUDA": "1"}, None, [], True),   # a CPU build of torch
    ({}, "13.0", [(9, 0)], False),           # a GPU but no compiler
])
def test_cuda_is_skipped(setup_py, env, torch_cuda, caps, nvcc):
    plan = setup_py.cuda_plan(env, torch_cuda, caps, nvcc)
    assert plan["with_cuda"] is False
    assert plan.get("cpu_only", False) is ("FASTGP_CPU_ONLY" in env)  # only a choice is recorded as one


def test_object_dir_is_stable_and_keyed_by_torch_and_flags(setup_py, tmp_path):
    info = {"torch_version": "2.14.1", "with_cuda": False, "cuda_archs": None}
    flags = {"cxx": ["-O3", "-g0"]}
    torch_dir, other_torch = str(tmp_path / "torch"), str(tmp_path / "other-torch")
    same = setup_py.object_dir(str(tmp_path), torch_dir, info, flags)
    assert same == setup_py.object_dir(str(tmp_path), torch_dir, dict(info), dict(flags))
    assert same.startswith(str(tmp_path / "build"))
    assert setup_py.object_dir(str(tmp_path), torch_dir, dict(info, torch_version="2.15.0"), flags) != same
    assert setup_py.object_dir(str(tmp_path), other_torch, info, flags) != same
    assert setup_py.object_dir(str(tmp_path), torch_dir, info, {"cxx": ["-O0", "-g"]}) != same
    assert setup_py.object_dir(str(tmp_path), torch_dir, dict(info, with_cuda=True, cuda_archs="9.0"), flags) != same


def _build_ext_command(setup_py, monkeypatch, **env):
    """The build_ext command setup.py would run, finalized as pip's editable
    install does (a fresh temporary build_temp), without compiling."""
    from setuptools import Distribution

    for k in ("FASTGP_NO_EXTENSION", "FORCE_CUDA", "FASTGP_CPU_ONLY", "FASTGP_DEBUG"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(setup_py, "visible_capabilities", lambda: [])
    ext_modules, cmdclass = setup_py._extensions()
    dist = Distribution({"name": "fastgp", "ext_modules": ext_modules, "cmdclass": cmdclass})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_temp = tempfile.mkdtemp(prefix="fastgp-build-temp-")  # thrown away: the objects go elsewhere
    cmd.ensure_finalized()
    return cmd


def test_build_ext_compiles_in_the_persistent_object_dir(setup_py, monkeypatch):
    first = _build_ext_command(setup_py, monkeypatch, FASTGP_CPU_ONLY="1")
    assert first.build_temp.startswith(os.path.join(str(ROOT), "build", "ninja-"))
    again = _build_ext_command(setup_py, monkeypatch, FASTGP_CPU_ONLY="1")
    assert again.build_temp == first.build_temp
    debug = _build_ext_command(setup_py, monkeypatch, FASTGP_CPU_ONLY="1", FASTGP_DEBUG="1")
    assert debug.build_temp != first.build_temp


def test_release_build_has_no_debug_info(setup_py, monkeypatch):
    """-g0 after Python's -g: debug info of torch's headers is a third of the compile time."""
    ext = _build_ext_command(setup_py, monkeypatch, FASTGP_CPU_ONLY="1").extensions[0]
    cxx = ext.extra_compile_args["cxx"] if isinstance(ext.extra_compile_args, dict) else ext.extra_compile_args
    assert "-g0" in cxx and "-g" not in cxx


def test_every_source_is_shipped(setup_py):
    shipped = set(setup_py.shipped_sources(str(ROOT)))
    on_disk = {str(p.relative_to(ROOT / "csrc")) for p in (ROOT / "csrc").rglob("*") if p.is_file()}
    assert shipped == on_disk, "csrc/ holds a file type setup.py does not ship"
    assert {"fastgp.cpp", os.path.join("cpu", "fastgp_cpu.cpp")} <= shipped
    assert any(s.startswith("cuda" + os.sep) and s.endswith(".cu") for s in shipped)


def test_find_sources_prefers_the_shipped_copy(tmp_path):
    from fastgp._ext import find_sources

    pkg = tmp_path / "site" / "fastgp"
    pkg.mkdir(parents=True)
    assert find_sources(str(pkg)) is None
    (tmp_path / "site" / "csrc").mkdir()
    (tmp_path / "site" / "csrc" / "fastgp.cpp").write_text("")
    assert find_sources(str(pkg)) == str(tmp_path / "site" / "csrc")  # a source checkout
    (pkg / "_csrc").mkdir()
    (pkg / "_csrc" / "fastgp.cpp").write_text("")
    assert find_sources(str(pkg)) == str(pkg / "_csrc")  # an installed package
