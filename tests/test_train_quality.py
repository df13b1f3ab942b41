"""Measured image quality in the trainer: the evaluator fitted to the run's labelled images, evaluations at
--eval-every and at the end (EMA and raw generator), reported in stdout, metrics.jsonl, summary.json and losses.png;
no metric for unlabelled images; per-class accuracy of conditional samples; evaluation never changes training."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")
Image = pytest.importorskip("PIL.Image")

from fastgp.train import ConfigError, Trainer, prepare, run  # noqa: E402
from fastgp.train.data import load_image_folder  # noqa: E402
from fastgp.train.frechet import INCEPTION_WEIGHTS_ENV  # noqa: E402
from train_helpers import (assert_same_state, fake_torch_fidelity, last_checkpoint, tiny,  # noqa: E402
                           write_class_folders, write_images)

DIGITS = dict(data="digits", batch_size=32, z_dim=8)
QUALITY = ("coverage", "kl", "fd", "fd_baseline", "fd_samples", "confident_fraction", "classifier_accuracy")


def _records(summary):
    with open(os.path.join(summary["run_dir"], "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def _check_quality(m, samples):
    assert m["samples"] == samples and m["classes"] == 10 and 0 <= m["coverage"] <= 10
    assert m["fd_samples"] == samples  # fewer generated images than the classifier's training split
    for key in ("kl", "fd", "fd_baseline"):
        assert math.isfinite(m[key]) and m[key] >= 0, key
    assert m["fd_baseline"] > 0 and 0.5 < m["classifier_accuracy"] <= 1


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    pytest.importorskip("sklearn")
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = run(tiny(tmp_path_factory.mktemp("digits"), **DIGITS, steps=4, eval_samples=300))
    return summary, out.getvalue()


def test_digits_run_reports_the_image_quality_everywhere(digits_run):
    summary, stdout = digits_run
    # summary.json: the EMA generator's metrics (EMA is on for images), the raw generator's beside them
    with open(os.path.join(summary["run_dir"], "summary.json")) as f:
        saved = json.load(f)
    assert saved["generator"] == "ema"
    _check_quality(saved, 300)
    _check_quality(saved["raw_generator"], 300)
    assert saved["fd"] != saved["raw_generator"]["fd"]  # two generators, two sets of samples
    assert saved["fd_baseline"] == saved["raw_generator"]["fd_baseline"]  # the same yardstick
    # metrics.jsonl: one record per --eval-every (2) steps and the end, the raw generator's at the end
    records = _records(summary)
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4] and all(r["generator"] == "ema" for r in evals)
    for r in evals:
        _check_quality(r, 300)
    assert [(r["step"], r["generator"]) for r in records if r["kind"] == "eval_raw"] == [(4, "raw")]
    assert {k: evals[-1][k] for k in QUALITY} == {k: saved[k] for k in QUALITY}
    # stdout: how the evaluator was obtained, a line per evaluation, the final figures of both generators
    assert "image evaluator: a classifier of the 1797 labelled images in 10 classes" in stdout
    assert "fastgp-train: step 2 (ema generator): " in stdout
    assert "digits quality (EMA generator, 300 samples): " in stdout and "raw generator (no EMA): " in stdout
    assert f"FD {saved['fd']:.3g} vs real-vs-real {saved['fd_baseline']:.3g}" in stdout
    assert stdout.count("FID not computed") <= 1  # said once, where FID is unavailable


def test_losses_png_has_the_quality_panels(digits_run, tmp_path):
    summary, _ = digits_run
    with Image.open(os.path.join(summary["run_dir"], "losses.png")) as im:
        with_quality = im.width
    toy = run(tiny(tmp_path, steps=2, eval_every=0))  # ring, eval at the end only: one mode panel
    with Image.open(os.path.join(toy["run_dir"], "losses.png")) as im:
        toy_width = im.width
    assert (with_quality, toy_width) == (4 * 420, 3 * 420)  # losses, penalty, + coverage/KL and FD panels


def test_unlabelled_image_folder_says_so_once_and_has_no_metric(tmp_path, capsys):
    folder = write_images(str(tmp_path / "imgs"))  # images at the top and in one sub-folder: no classes
    summary = run(tiny(tmp_path, data="images", data_path=folder, image_size=8, batch_size=16, z_dim=8))
    out = capsys.readouterr().out
    assert out.count("no image-quality metric") == 1
    assert "lie outside class sub-folders" in out
    assert "coverage" not in summary and "lie outside" in summary["image_metrics_unavailable"]
    assert not [r for r in _records(summary) if r["kind"].startswith("eval")]


def test_unconditional_class_folders_are_labelled_for_evaluation(tmp_path, capsys):
    folder = write_class_folders(tmp_path / "imgs", {"dark": 10, "light": 14})
    data = load_image_folder(folder, 8, 1)
    assert data.classes == ["dark", "light"] and data.labels.tolist() == [0] * 10 + [1] * 14
    assert float(data.data[data.labels == 0].mean()) < float(data.data[data.labels == 1].mean())
    os.makedirs(os.path.join(folder, "dark", "deeper"))  # images further down count to their top folder
    Image.new("L", (8, 8), 40).save(os.path.join(folder, "dark", "deeper", "x.png"))
    assert load_image_folder(folder, 8, 1).labels.bincount().tolist() == [11, 14]
    summary = run(tiny(tmp_path, data="images", data_path=folder, image_size=8, batch_size=8, z_dim=8,
                       eval_samples=50))
    assert summary["classes"] == 2 and summary["samples"] == 50 and math.isfinite(summary["fd"])
    assert "class_accuracy_mean" not in summary  # not conditional: no labels to generate for
    assert "no image-quality metric" not in capsys.readouterr().out
    one = write_class_folders(tmp_path / "one", {"only": 5})
    assert "one sub-folder ('only')" in load_image_folder(one, 8, 1).unlabelled_reason


def test_conditional_digits_report_per_class_accuracy(tmp_path, capsys):
    pytest.importorskip("sklearn")
    summary = run(tiny(tmp_path, **DIGITS, conditional=True, steps=2, eval_samples=400))
    out = capsys.readouterr().out
    for m in (summary, summary["raw_generator"]):
        per_class = [m[f"class_accuracy_{c}"] for c in range(10)]
        assert all(0 <= a <= 1 for a in per_class)
        assert m["class_accuracy_mean"] == pytest.approx(sum(per_class) / 10)
    assert "conditional accuracy" in out
    # the evaluation's labels follow the data's class frequencies (drawn from the data, not one per class)
    cfg, _, _ = prepare(tiny(tmp_path, **DIGITS, conditional=True, name="x"))
    trainer = Trainer(cfg)
    counts = trainer.quality.labels.bincount(minlength=10).double()
    assert len(trainer.quality.labels) == cfg.eval_samples and counts.min() > 0
    assert not torch.equal(trainer.quality.labels, trainer.quality.labels.sort().values)


@pytest.mark.parametrize("g_ema", [True, False])  # without EMA the generator in training is the one evaluated
def test_evaluation_does_not_change_training(tmp_path, g_ema):
    """Evaluating after every step or only at the end: bitwise the same networks, optimizers and RNG states."""
    pytest.importorskip("sklearn")
    common = dict(DIGITS, conditional=True, steps=3, sample_every=0, ckpt_every=0, eval_samples=64, g_ema=g_ema)
    often = run(tiny(tmp_path, name="often", eval_every=1, **common))
    rarely = run(tiny(tmp_path, name="rarely", eval_every=0, **common))
    assert len([r for r in _records(often) if r["kind"] == "eval"]) == 3
    a, b = last_checkpoint(often), last_checkpoint(rarely)
    assert_same_state(a, b)
    assert a["rng"].keys() == b["rng"].keys()
    for key in a["rng"]:  # python_gauss is NaN when Python's gauss() has no cached value
        torch.testing.assert_close(a["rng"][key], b["rng"][key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_resume_with_evaluation_is_exact_and_reuses_the_evaluator(tmp_path, capsys):
    pytest.importorskip("sklearn")
    cache = tmp_path / "cache"
    common = dict(DIGITS, steps=7, sample_every=0, ckpt_every=0, eval_every=2, eval_cache=str(cache),
                  eval_samples=64)
    straight = run(tiny(tmp_path, name="straight", **common))
    assert "trained in" in capsys.readouterr().out
    [entry] = os.listdir(cache)
    stamp = os.stat(cache / entry).st_mtime_ns
    run(tiny(tmp_path, name="split", **dict(common, steps=3)))  # evaluates at 2 and 3 (its end, raw too)
    resumed = run(tiny(tmp_path, name="split", **dict(common, resume="last")))
    out = capsys.readouterr().out
    assert out.count(f"loaded from {cache / entry}") == 2 and "trained in" not in out
    assert os.listdir(cache) == [entry] and os.stat(cache / entry).st_mtime_ns == stamp
    assert_same_state(last_checkpoint(straight), last_checkpoint(resumed))
    steps = [(r["kind"], r["step"]) for r in _records(resumed) if r["kind"].startswith("eval")]
    assert steps == [("eval", 2), ("eval", 3), ("eval_raw", 3), ("eval", 4), ("eval", 6), ("eval", 7),
                     ("eval_raw", 7)]


def test_resume_does_not_take_the_evaluator_cache_from_the_checkpoint(tmp_path):
    pytest.importorskip("sklearn")
    elsewhere = tmp_path / "another-machine"
    run(tiny(tmp_path, **DIGITS, steps=1, eval_cache=str(elsewhere)))
    cfg, _, _ = prepare(tiny(tmp_path, **DIGITS, steps=2, resume="last", eval_cache=None))
    assert cfg.eval_cache is None  # the default folder of this machine, never the checkpoint's


def test_fid_at_the_end_only_on_a_cpu(tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    fake_torch_fidelity(monkeypatch)
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"weights")
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(weights))
    summary = run(tiny(tmp_path, **DIGITS, steps=4, eval_samples=64))
    evals = [r for r in _records(summary) if r["kind"] == "eval"]
    assert "fid" not in evals[0] and math.isfinite(evals[-1]["fid"]) and evals[-1]["fid"] == summary["fid"]
    assert "FID not computed" not in capsys.readouterr().out and "fid_unavailable" not in summary


def test_eval_options(tmp_path):
    with pytest.raises(ConfigError, match=r"--eval-every\) must be an integer >= 0"):
        prepare(tiny(tmp_path, eval_every=-1))
    with pytest.raises(ConfigError, match=r"'eval_samples' \(--eval-samples\) must be >= 2 with image data"):
        prepare(tiny(tmp_path, **DIGITS, eval_samples=1))
    prepare(tiny(tmp_path, eval_samples=1))  # the toy mode metrics take any number


def test_toy_runs_do_not_fit_an_evaluator(tmp_path, capsys):
    summary = run(tiny(tmp_path, eval_cache=str(tmp_path / "cache")))
    assert "image evaluator" not in capsys.readouterr().out and not os.path.exists(tmp_path / "cache")
    assert "modes" in summary and "coverage" not in summary
