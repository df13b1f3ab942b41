"""Pictures of a run: samples vs real data (over the critic's contour lines
for 2-D data), image grids, and loss curves. matplotlib runs headless (Agg);
image grids use Pillow only."""

from __future__ import annotations

import math
import os
from typing import Callable, Dict, List, Optional, Sequence

import torch


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)  # no bbox_inches="tight": it draws the figure twice
    _pyplot().close(fig)


def toy_picture(path: str, real: torch.Tensor, fake: torch.Tensor, critic: Optional[Callable] = None,
                title: str = "", columns: Sequence[str] = ("x", "y")) -> None:
    """Scatter of real and generated 2-D points over the critic's contour lines (critic maps (N, 2) -> (N,))."""
    plt = _pyplot()
    real, fake = real.detach().cpu().double(), fake.detach().cpu().double()
    both = torch.cat([real, fake[torch.isfinite(fake).all(1)]])
    lo, hi = both.min(0).values, both.max(0).values
    pad = (hi - lo).clamp(min=1e-3) * 0.15
    lo, hi = lo - pad, hi + pad
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.1, top=0.9)
    if critic is not None:
        xs, ys = torch.linspace(float(lo[0]), float(hi[0]), 120), torch.linspace(float(lo[1]), float(hi[1]), 120)
        gx, gy = torch.meshgrid(xs, ys, indexing="xy")
        with torch.no_grad():
            z = critic(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)).reshape(gx.shape).cpu().double()
        ax.contour(gx.numpy(), gy.numpy(), z.numpy(), levels=14, cmap="viridis", linewidths=0.8)
    ax.scatter(real[:, 0], real[:, 1], s=4, c="tab:orange", alpha=0.6, label="real", linewidths=0)
    ax.scatter(fake[:, 0], fake[:, 1], s=4, c="tab:blue", alpha=0.6, label="generated", linewidths=0)
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(lo[1]), float(hi[1]))
    ax.set_aspect("equal")
    ax.set_xlabel(columns[0])
    ax.set_ylabel(columns[1])
    ax.legend(loc="upper right", markerscale=3, fontsize=8)
    ax.set_title(title + ("\n(lines: level sets of the critic, yellow = higher score)" if critic is not None else ""),
                 fontsize=9)
    _save(fig, path)


def table_picture(path: str, real: torch.Tensor, fake: torch.Tensor, columns: Sequence[str], title: str = "") -> None:
    """Tabular data of any width: marginal histograms of up to 4 columns, real vs generated."""
    plt = _pyplot()
    real, fake = real.detach().cpu().double(), fake.detach().cpu().double()
    n = min(real.shape[1], 4)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3), squeeze=False)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.1, top=0.8, wspace=0.3)
    for j in range(n):
        ax = axes[0][j]
        lo, hi = float(real[:, j].min()), float(real[:, j].max())
        lo, hi = lo - 0.1 * (hi - lo + 1e-9), hi + 0.1 * (hi - lo + 1e-9)
        ax.hist(real[:, j].numpy(), bins=40, range=(lo, hi), alpha=0.6, color="tab:orange", label="real", density=True)
        f = fake[:, j][torch.isfinite(fake[:, j])]
        ax.hist(f.numpy(), bins=40, range=(lo, hi), alpha=0.6, color="tab:blue", label="generated", density=True)
        ax.set_title(columns[j], fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _grid(images: torch.Tensor, nrow: int, cell: int):
    """(N, C, H, W) in [-1, 1] -> a PIL image of nrow columns, each image upscaled to `cell` pixels."""
    from PIL import Image

    images = images.detach().cpu().float().clamp(-1, 1).nan_to_num(0.0)
    n, c, h, w = images.shape
    rows = math.ceil(n / nrow)
    pad = 2
    canvas = torch.ones(c, rows * (cell + pad) + pad, nrow * (cell + pad) + pad)
    up = torch.nn.functional.interpolate(images, size=(cell, cell), mode="nearest")
    for i in range(n):
        r, k = divmod(i, nrow)
        canvas[:, pad + r * (cell + pad):pad + r * (cell + pad) + cell,
               pad + k * (cell + pad):pad + k * (cell + pad) + cell] = up[i]
    array = ((canvas + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    if c == 1:
        return Image.fromarray(array[:, :, 0].numpy(), mode="L")
    return Image.fromarray(array.numpy(), mode="RGB")


def image_grid(path: str, images: torch.Tensor, nrow: int = 8) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    cell = max(images.shape[-1], 32)
    _grid(images, nrow, cell).save(path)


def image_picture(path: str, real: torch.Tensor, fake: torch.Tensor, nrow: int = 8,
                  row_labels: Optional[Sequence[str]] = None) -> None:
    """Real images (left) next to generated ones (right), each half captioned; with row_labels (one per grid row,
    a conditional run's classes) each row is named on the left."""
    from PIL import Image, ImageDraw

    cell = max(real.shape[-1], 32)
    halves = [("real", _grid(real, nrow, cell).convert("RGB")), ("generated", _grid(fake, nrow, cell).convert("RGB"))]
    gap, band = 16, 18
    margin = 8 + 6 * max(len(str(r)) for r in row_labels) if row_labels else 0  # the built-in font: 6 px a letter
    width = margin + sum(im.width for _, im in halves) + gap
    out = Image.new("RGB", (width, band + max(im.height for _, im in halves)), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    x = margin
    for caption, im in halves:
        out.paste(im, (x, band))
        draw.text((x + 4, 3), caption, fill=(0, 0, 0))  # Pillow's built-in font: no font file needed
        x += im.width + gap
    for r, label in enumerate(row_labels or ()):
        draw.text((4, band + 2 + r * (cell + 2) + cell // 2 - 5), str(label), fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    out.save(path)


def loss_picture(path: str, records: List[Dict], title: str = "") -> None:
    """Curves of the logged training metrics, and of the evaluations when there are some: the toy mode metrics, or
    the image quality (classes covered and KL; FD against the real-vs-real baseline)."""
    plt = _pyplot()
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and "modes" in r]
    quality = [r for r in records if r.get("kind") == "eval" and "coverage" in r]
    raw = [r for r in records if r.get("kind") == "eval_raw" and "coverage" in r]
    steps = [r["step"] for r in train]
    n = 2 + bool(evals) + 2 * bool(quality)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4))
    fig.subplots_adjust(left=0.5 / n, right=1 - 0.5 / n, bottom=0.15, top=0.82, wspace=0.45)
    ax = axes[0]
    for key, label in (("loss_d", "critic (adversarial part)"), ("loss_g", "generator")):
        ax.plot(steps, [r.get(key, float("nan")) for r in train], lw=1, label=label)
    ax.set_title("losses", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(steps, [r.get("penalty", float("nan")) for r in train], lw=1, color="tab:green", label="penalty")
    ax.set_title("penalty (green), mean ||grad_x D|| (red)", fontsize=9)
    twin = ax.twinx()
    twin.plot(steps, [r.get("grad_norm", float("nan")) for r in train], lw=1, color="tab:red")
    if evals:
        ax = axes[2]
        es = [r["step"] for r in evals]
        ax.plot(es, [r["modes"] for r in evals], marker="o", lw=1)
        ax.set_ylim(0, evals[0]["n_modes"] + 1)
        ax.set_title("modes captured (blue), % HQ (red)", fontsize=9)
        twin = ax.twinx()
        twin.plot(es, [r["hq_percent"] for r in evals], marker="s", lw=1, color="tab:red")
        twin.set_ylim(0, 100)
    if quality:
        _quality_panels(axes[n - 2], axes[n - 1], quality, raw)
    for ax in axes:
        ax.set_xlabel("generator step", fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


def _quality_panels(cover_ax, fd_ax, quality: List[Dict], raw: List[Dict]) -> None:
    """Classes covered (and KL) and FD with its real-vs-real baseline; crosses: the raw generator of an EMA run."""
    es = [r["step"] for r in quality]
    cover_ax.plot(es, [r["coverage"] for r in quality], marker="o", lw=1, ms=3)
    cover_ax.set_ylim(0, quality[-1]["classes"] + 0.5)
    cover_ax.set_title("classes covered (blue), KL (red)", fontsize=9)
    twin = cover_ax.twinx()
    twin.plot(es, [r["kl"] for r in quality], marker="s", lw=1, ms=3, color="tab:red")
    if raw:
        rs = [r["step"] for r in raw]
        cover_ax.plot(rs, [r["coverage"] for r in raw], "x", color="tab:blue")
        twin.plot(rs, [r["kl"] for r in raw], "x", color="tab:red")
        fd_ax.plot(rs, [r["fd"] for r in raw], "x", color="tab:blue", label="raw generator")
    twin.set_ylim(bottom=0)
    fd_ax.plot(es, [r["fd"] for r in quality], marker="o", lw=1, ms=3, label="generated")
    fd_ax.plot(es, [r["fd_baseline"] for r in quality], "--", color="black", lw=1, label="real vs real")
    fd_ax.plot(es, [2 * r["fd_baseline"] for r in quality], ":", color="black", lw=1, label="2 x real vs real")
    if all(r["fd"] > 0 for r in quality + raw) and all(r["fd_baseline"] > 0 for r in quality):
        from matplotlib.ticker import FuncFormatter

        fd_ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 20, not 2 x 10^1
        fd_ax.yaxis.set_major_formatter(plain)
        fd_ax.yaxis.set_minor_formatter(plain)
    fd_ax.set_title("Frechet distance in the classifier's features", fontsize=9)
    fd_ax.legend(fontsize=7)
