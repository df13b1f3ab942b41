"""Shared fixtures of the trainer tests: tiny configurations that run in a second or two on CPU."""

from __future__ import annotations

import csv
import os
import random

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
