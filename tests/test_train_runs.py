"""Short CPU runs of every data kind and loss write the expected, readable files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
Image = pytest.importorskip("PIL.Image")

from fastgp.train import run  # noqa: E402
from fastgp.train.__main__ import main  # noqa: E402
from train_helpers import tiny, write_csv, write_images  # noqa: E402

EXPECTED = ("config.json", "metrics.jsonl", "samples.png", "losses.png", "summary.json", "checkpoints/last.pt")


def _check_run_dir(d, steps):
    for name in EXPECTED:
        assert os.path.isfile(os.path.join(d, name)), name
    periodic = [os.path.join("samples", p) for p in os.listdir(os.path.join(d, "samples"))]
    assert periodic
    for png in ["samples.png", "losses.png"] + periodic:
        with Image.open(os.path.join(d, png)) as im:
            im.load()  # decodes the whole image
            assert im.width > 16 and im.height > 16
    records = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(2, steps + 1, 2))
    assert all(torch.isfinite(torch.tensor(r["loss_d"])) for r in train)
    ckpt = torch.load(os.path.join(d, "checkpoints", "last.pt"), map_location="cpu", weights_only=True)
    assert ckpt["step"] == steps
    assert ckpt["config"] == json.load(open(os.path.join(d, "config.json")))
    return records, ckpt


@pytest.mark.parametrize("data,extra", [
    ("ring", {}),
    ("grid", {"loss": "wgan-gp-one-sided"}),
    ("swissroll", {"loss": "wgan-gp-zero"}),
    ("ring", {"loss": "ns-r1", "r1_every": 2, "name": "ring-r1"}),
])
def test_toy_runs(tmp_path, data, extra):
    summary = run(tiny(tmp_path, data=data, **extra))
    records, ckpt = _check_run_dir(summary["run_dir"], 4)
    assert ckpt["config"]["data"] == data
    if data in ("ring", "grid"):
        evals = [r for r in records if r["kind"] == "eval"]
        assert [r["step"] for r in evals] == [2, 4]
        assert evals[-1]["n_modes"] == (8 if data == "ring" else 25)
        assert 0 <= summary["hq_percent"] <= 100 and 0 <= summary["modes"] <= summary["n_modes"]


def test_csv_run(tmp_path):
    path = write_csv(tmp_path / "people.csv")
    summary = run(tiny(tmp_path, data="csv", data_path=str(path), batch_size=50))
    _, ckpt = _check_run_dir(summary["run_dir"], 4)
    assert ckpt["data"]["columns"] == ["height", "weight", "age"]  # the text column is dropped
    assert ckpt["config"]["z_dim"] == 16 and ckpt["config"]["model"] == "mlp"
    with open(os.path.join(summary["run_dir"], "samples.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "height,weight,age" and len(lines) == 1 + 500
    heights = torch.tensor([float(r.split(",")[0]) for r in lines[1:]])
    assert 100 < heights.mean() < 240  # de-standardized to the CSV's units


def test_image_folder_run(tmp_path):
    folder = write_images(str(tmp_path / "imgs"))
    summary = run(tiny(tmp_path, data="images", data_path=folder, image_size=8, batch_size=16, z_dim=8))
    _, ckpt = _check_run_dir(summary["run_dir"], 4)
    with Image.open(os.path.join(summary["run_dir"], "samples.png")) as im:
        assert im.mode == "RGB"
    assert ckpt["config"]["model"] == "dcgan" and ckpt["config"]["g_norm"] == "batch"
    assert ckpt["config"]["d_norm"] == "layer"
    assert any("running_mean" in k for k in ckpt["generator"])  # BatchNorm in the generator


def test_digits_run(tmp_path):
    pytest.importorskip("sklearn")
    summary = run(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, d_norm="none"))
    _, ckpt = _check_run_dir(summary["run_dir"], 4)
    assert ckpt["config"]["image_size"] == 8 and ckpt["config"]["channels"] == 1


def test_cli_prints_mode_metrics_and_keeps_checkpoints(tmp_path, capsys):
    args = ["--out-dir", str(tmp_path), "--steps", "5", "--hidden", "16", "--depth", "1", "--batch-size", "32",
            "--ckpt-every", "1", "--keep-ckpts", "2", "--log-every", "1", "--sample-every", "0", "--no-progress",
            "--eval-samples", "300"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "modes captured" in out and "high-quality samples" in out
    ckpts = sorted(os.listdir(tmp_path / "ring-wgan-gp" / "checkpoints"))
    assert ckpts == ["last.pt", "step_0000004.pt", "step_0000005.pt"]  # retention: 2 periodic + last
    assert main(args) == 2  # the run directory is taken
    assert "--resume last" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_module_entry_point_help():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "fastgp.train", "--help"], capture_output=True, text=True,
                         timeout=120, check=True, cwd=root, env=env).stdout
    for flag in ("--data", "--loss", "--gp-weight", "--r1-every", "--l2-d", "--amp", "--backend", "--resume",
                 "--device", "--config", "--keep-ckpts"):
        assert flag in out
