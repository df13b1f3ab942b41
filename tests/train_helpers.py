"""Shared fixtures of the trainer tests: tiny configurations that run in a second or two on CPU."""

from __future__ import annotations

import atexit
import csv
import importlib.machinery
import os
import random
import shutil
import sys
import tempfile
import types

import pytest
import torch

TINY = {"hidden": 32, "depth": 2, "batch_size": 64, "steps": 4, "log_every": 2, "sample_every": 2, "eval_every": 2,
        "ckpt_every": 2, "keep_ckpts": 1, "progress": False, "eval_samples": 500, "width": 8}

# One image-evaluator cache for the whole test session: the classifier of a dataset is trained once, not once per
# test (tests of the cache itself pass their own folder). Never the user's cache folder.
EVAL_CACHE = tempfile.mkdtemp(prefix="fastgp-test-evaluators-")
atexit.register(shutil.rmtree, EVAL_CACHE, ignore_errors=True)


def tiny(tmp_path, **over):
    cfg = dict(TINY, out_dir=str(tmp_path / "runs"), eval_cache=EVAL_CACHE)
    cfg.update(over)
    return cfg


def write_csv(path, rows=200, seed=0):
    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["height", "weight", "label", "age"])
        for _ in range(rows):
            h = rng.gauss(170, 10)
            w.writerow([f"{h:.2f}", f"{0.9 * h - 80 + rng.gauss(0, 5):.2f}", rng.choice("abc"), rng.randint(18, 90)])
    return path


def write_images(folder, n=40, seed=0):
    from PIL import Image

    rng = random.Random(seed)
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    for i in range(n):
        w, h = rng.randint(12, 30), rng.randint(12, 30)
        mode = "RGB" if i % 3 else "L"
        im = Image.new(mode, (w, h), (rng.randint(0, 255),) * (3 if mode == "RGB" else 1))
        im.save(os.path.join(folder, "sub" if i % 2 else "", f"im{i}.{'png' if i % 4 else 'jpg'}"))
    with open(os.path.join(folder, "notes.txt"), "w") as f:
        f.write("not an image")
    return folder


def write_class_folders(root, counts, size=12):
    """One sub-folder of small images per class, each class its own gray level."""
    from PIL import Image

    for i, (name, n) in enumerate(counts.items()):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for k in range(n):
            Image.new("L", (size, size), 40 + 60 * i).save(os.path.join(root, name, f"{k}.png"))
    return str(root)


def assert_same_state(a, b):
    """Two checkpoints hold bitwise the same networks (EMA included) and optimizer states."""
    assert (a.get("generator_ema") is None) == (b.get("generator_ema") is None)
    for key in ("generator", "critic") + (("generator_ema",) if a.get("generator_ema") else ()):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for key in ("opt_g", "opt_d"):
        for pid, st in a[key]["state"].items():
            for name, t in st.items():
                assert torch.equal(t, b[key]["state"][pid][name]), (key, pid, name)
        assert a[key]["param_groups"] == b[key]["param_groups"]


def last_checkpoint(summary):
    return torch.load(os.path.join(summary["run_dir"], "checkpoints", "last.pt"), weights_only=True)


EPS32 = torch.finfo(torch.float32).eps


def gamma(n: int) -> float:
    """Higham's bound on the relative rounding error of a float32 sum (or dot product) of n terms."""
    return n * EPS32 / (1 - n * EPS32)


def term_magnitude(params, terms):
    """sum over `terms` of |d term / d param|, per parameter, in float64.

    A batch-mean gradient is a sum of per-sample terms; two computations of it that add them in different
    orders (two backends, two process counts) differ by rounding at the scale of this magnitude, not at the scale
    of the (possibly cancelled) result."""
    params = list(params)
    out = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for term in terms:
        for m, g in zip(out, torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)):
            if g is not None:
                m += g.double().abs()
    return out


def fake_torch_fidelity(monkeypatch, with_weights_arg=True):
    """A stand-in torch_fidelity whose 'Inception' features are per-channel pixel statistics: it checks the wiring
    (local weights path passed, uint8 RGB input, FD on its features), not Inception itself."""
    built = []

    class FakeInception(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__()
            assert feature_extractor_weights_path is not None  # None would make torch-fidelity download
            built.append(feature_extractor_weights_path)

        def forward(self, x):
            assert x.dtype == torch.uint8 and x.shape[1] == 3
            x = x.float()
            return (torch.cat([x.mean((2, 3)), x.std((2, 3)), x[:, :, ::2].mean((2, 3))], 1),)

    if not with_weights_arg:
        def __init__(self, name, features_list, **kwargs):
            torch.nn.Module.__init__(self)
        FakeInception.__init__ = __init__
    pkg = types.ModuleType("torch_fidelity")
    pkg.__spec__ = importlib.machinery.ModuleSpec("torch_fidelity", None)
    sub = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    sub.FeatureExtractorInceptionV3 = FakeInception
    pkg.feature_extractor_inceptionv3 = sub
    monkeypatch.setitem(sys.modules, "torch_fidelity", pkg)
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", sub)
    monkeypatch.setattr("torch.hub.load_state_dict_from_url", lambda *a, **k: pytest.fail("a download was attempted"))
    return built, FakeInception
