"""Shared fixtures of the trainer tests: tiny configurations that run in a second or two on CPU."""

from __future__ import annotations

import csv
import os
import random

import torch

TINY = {"hidden": 32, "depth": 2, "batch_size": 64, "steps": 4, "log_every": 2, "sample_every": 2,
        "ckpt_every": 2, "keep_ckpts": 1, "progress": False, "eval_samples": 500, "width": 8}


def tiny(tmp_path, **over):
    cfg = dict(TINY, out_dir=str(tmp_path / "runs"))
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
