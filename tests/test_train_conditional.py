"""Conditional GANs: labels from digits, class folders and a CSV column; a projection critic that receives the
labels in the penalty too; pictures with one row per class; clear refusals of data without usable labels."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
Image = pytest.importorskip("PIL.Image")

import fastgp  # noqa: E402
from fastgp.train import CheckpointError, ConfigError, Trainer, prepare, run  # noqa: E402
from fastgp.train.models import MLPCritic  # noqa: E402
from train_helpers import tiny, write_class_folders, write_csv  # noqa: E402

DIGITS = dict(data="digits", conditional=True, batch_size=32, z_dim=8)


def test_digits_run_writes_classes_labels_and_a_row_per_class(tmp_path):
    pytest.importorskip("sklearn")
    summary = run(tiny(tmp_path, **DIGITS))
    with open(os.path.join(summary["run_dir"], "config.json")) as f:
        assert json.load(f)["classes"] == [str(d) for d in range(10)]
    ckpt = torch.load(os.path.join(summary["run_dir"], "checkpoints", "last.pt"), weights_only=True)
    assert torch.equal(ckpt["fixed_labels"], torch.arange(10).repeat_interleave(8))
    assert any("projection.embed" in k for k in ckpt["critic"]) and any("embed" in k for k in ckpt["generator"])
    with Image.open(os.path.join(summary["run_dir"], "samples.png")) as im:
        height = im.height
    assert height == 18 + 10 * (32 + 2) + 2  # caption band, then one row of 32-pixel cells per class


def test_the_critic_sees_the_labels_in_the_loss_and_in_the_penalty(tmp_path):
    pytest.importorskip("sklearn")
    cfg, _, _ = prepare(tiny(tmp_path, **DIGITS))
    trainer = Trainer(cfg)
    batch = trainer.batch(0, 0)
    index = trainer._index(0, 0)
    assert torch.equal(batch.labels, trainer.data.batch_labels(index, cfg.batch_size, cfg.seed))
    assert torch.equal(batch.real, trainer.data.batch(index, cfg.batch_size, cfg.seed))
    total, stats = trainer.critic_loss(0, 0, batch)
    with torch.no_grad():
        fake = trainer.G(batch.z, batch.labels)  # each fake carries the label of the real sample beside it
    d_real, d_fake = trainer.D(batch.real, batch.labels), trainer.D(fake, batch.labels)
    penalty = fastgp.gradient_penalty(trainer.D, batch.real, fake, weight=cfg.gp_weight, alpha=batch.alpha,
                                      critic_args=(batch.labels,), backend="torch")
    torch.testing.assert_close(total, d_fake.mean() - d_real.mean() + penalty)
    other = (batch.labels + 1) % 10  # the labels matter: other labels give another penalty
    moved = fastgp.gradient_penalty(trainer.D, batch.real, fake, weight=cfg.gp_weight, alpha=batch.alpha,
                                    critic_args=(other,), backend="torch")
    assert not torch.allclose(moved, penalty)


def test_projection_critic_is_score_plus_label_projection():
    torch.manual_seed(0)
    critic = MLPCritic(3, hidden=16, depth=2, norm="none", n_classes=4)
    x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 1])
    phi = critic.net[:-1](x)
    expected = critic.net[-1](phi).squeeze(-1) + (critic.projection.embed.weight[y] * phi).sum(1)
    torch.testing.assert_close(critic(x, y), expected)


def test_class_folders(tmp_path):
    folder = write_class_folders(tmp_path / "imgs", {"cats": 12, "dogs": 20, "owls": 8})
    summary = run(tiny(tmp_path, data="images", data_path=folder, conditional=True, image_size=8, batch_size=16,
                       z_dim=8, steps=2))
    with open(os.path.join(summary["run_dir"], "config.json")) as f:
        assert json.load(f)["classes"] == ["cats", "dogs", "owls"]
    cfg, _, _ = prepare(tiny(tmp_path, data="images", data_path=folder, conditional=True, image_size=8,
                             batch_size=16, name="x"))
    ds = Trainer(cfg).data
    assert ds.labels.bincount().tolist() == [12, 20, 8]
    # the labels follow the folders: each class has its own gray level
    levels = [float(ds.data[ds.labels == c].mean()) for c in range(3)]
    assert levels == sorted(levels) and len(set(round(v, 3) for v in levels)) == 3


@pytest.mark.parametrize("layout,match", [
    ({"cats": 4, "dogs": 0}, r"class folder .*dogs' has no image files"),
    ({"cats": 8}, r"1 class folder\(s\) \['cats'\].*at least 2 classes"),
    ({}, r"0 class folder"),
])
def test_bad_class_folders(tmp_path, layout, match):
    folder = write_class_folders(tmp_path / "imgs", layout)
    os.makedirs(folder, exist_ok=True)
    if not layout:  # images, but no class folders
        Image.new("L", (8, 8)).save(os.path.join(folder, "a.png"))
        match = "images outside any class folder"
    with pytest.raises(ConfigError, match=match):
        run(tiny(tmp_path, data="images", data_path=folder, conditional=True, image_size=8, batch_size=4))


def test_csv_label_column(tmp_path):
    path = write_csv(tmp_path / "people.csv")
    summary = run(tiny(tmp_path, data="csv", data_path=str(path), conditional=True, label_column="label",
                       batch_size=50))
    ckpt = torch.load(os.path.join(summary["run_dir"], "checkpoints", "last.pt"), weights_only=True)
    assert ckpt["data"]["columns"] == ["height", "weight", "age"] and ckpt["config"]["classes"] == ["a", "b", "c"]
    with open(os.path.join(summary["run_dir"], "samples.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["height", "weight", "age", "label"]
    assert {r[3] for r in rows[1:]} == {"a", "b", "c"}


@pytest.mark.parametrize("over,match", [
    ({"data": "ring", "conditional": True}, r"--conditional needs labelled data .*data='ring' has no labels"),
    ({"data": "csv", "data_path": "x.csv", "conditional": True}, "needs --label-column NAME"),
    ({"data": "csv", "data_path": "x.csv", "label_column": "label"}, "add --conditional"),
    ({"data": "digits", "conditional": True, "label_column": "label"}, "data='digits' is not csv"),
    ({"data": "digits", "classes": ["a", "b"]}, "'classes' is for a conditional run"),
    ({"data": "digits", "conditional": True, "classes": ["a"]}, "2 or more distinct"),
    ({"data": "csv", "data_path": "x.csv", "conditional": True, "label_column": ["label"]},
     "'label_column' must be a string"),
])
def test_options_without_usable_labels_are_refused(tmp_path, over, match):
    with pytest.raises(ConfigError, match=match):
        prepare(tiny(tmp_path, **over))


@pytest.mark.parametrize("column,match", [
    ("colour", r"--label-column 'colour' is not a column of .*people.csv.*'height', 'weight', 'label', 'age'"),
    ("height", r"--label-column 'height' has \d+ distinct values in 200 rows"),
])
def test_bad_label_columns(tmp_path, column, match):
    path = write_csv(tmp_path / "people.csv")
    with pytest.raises(ConfigError, match=match):
        run(tiny(tmp_path, data="csv", data_path=str(path), conditional=True, label_column=column, batch_size=50))


def test_resume_refuses_a_change_of_conditional_and_of_the_classes(tmp_path):
    pytest.importorskip("sklearn")
    run(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, steps=2, name="plain"))
    with pytest.raises(CheckpointError, match=r"conditional: checkpoint False, requested True \(a conditional run's "
                                              "generator and critic take class labels"):
        run(tiny(tmp_path, **DIGITS, steps=3, name="plain", resume="last"))
    run(tiny(tmp_path, **DIGITS, steps=2, name="cond"))
    with pytest.raises(CheckpointError, match="conditional: checkpoint True, requested False"):
        run(tiny(tmp_path, **dict(DIGITS, conditional=False), steps=3, name="cond", resume="last"))
    # without the flag the checkpoint's config is the base: the conditional run continues
    resumed = run(tiny(tmp_path, data="digits", batch_size=32, z_dim=8, steps=3, name="cond", resume="last"))
    assert resumed["steps"] == 3

    folder = write_class_folders(tmp_path / "imgs", {"cats": 8, "dogs": 8})
    common = dict(data="images", data_path=folder, conditional=True, image_size=8, batch_size=8, z_dim=8)
    run(tiny(tmp_path, **common, steps=2, name="pets"))
    write_class_folders(tmp_path / "imgs", {"ants": 8})  # a class added: every label would now mean another class
    with pytest.raises(ConfigError, match=r"the data's classes \['ants', 'cats', 'dogs'\] are not the run's classes"):
        run(tiny(tmp_path, **common, steps=3, name="pets", resume="last"))
