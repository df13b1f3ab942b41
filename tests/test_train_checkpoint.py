"""Checkpoints: exact resume, atomic writes, clear errors, non-finite losses."""

from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from fastgp.train import CheckpointError, ConfigError, NonFiniteLossError, Trainer, run  # noqa: E402
from fastgp.train import checkpoint  # noqa: E402
from train_helpers import assert_same_state, last_checkpoint, tiny  # noqa: E402


@pytest.mark.parametrize("extra", [
    {},
    {"loss": "ns-r1", "r1_every": 3, "l2_d": 1e-3, "l2_g": 1e-3},
    {"data": "digits", "batch_size": 32, "z_dim": 8},  # BatchNorm buffers of the DCGAN generator, and its EMA
    {"loss": "rpgan-r1r2", "r1_every": 2, "gp_batch_fraction": 0.5},  # lazy R1 + R2 on half the batch
    {"loss": "dragan", "d_sn": True},  # DRAGAN's perturbation noise, spectral norm's u and v buffers
    {"data": "digits", "conditional": True, "batch_size": 32, "z_dim": 8, "loss": "rpgan-r1r2"},  # labels
])
def test_resume_is_exact(tmp_path, extra):
    if extra.get("data") == "digits":
        pytest.importorskip("sklearn")
    # --steps changes between the two halves, so no schedule that depends on it (the crash test covers decay)
    common = dict(extra, steps=7, sample_every=0, ckpt_every=0, lr_decay="none")
    straight = run(tiny(tmp_path, name="straight", **common))
    run(tiny(tmp_path, name="split", **dict(common, steps=3)))
    resumed = run(tiny(tmp_path, name="split", **dict(common, resume="last")))
    assert resumed["steps"] == 7 and resumed["steps_this_run"] == 4
    assert (last_checkpoint(straight)["generator_ema"] is not None) == (extra.get("data") == "digits")  # on for images
    assert_same_state(last_checkpoint(straight), last_checkpoint(resumed))


def test_resume_after_a_crash_is_exact(tmp_path, monkeypatch):
    """Killed mid-run (after the step-3 checkpoint), resumed with the same command: same result as straight."""
    common = dict(steps=7, sample_every=0, ckpt_every=3, lr_decay="linear", l2_d=1e-3, g_ema=True)
    straight = run(tiny(tmp_path, name="straight", **common))
    original = Trainer.train_step

    def crash_at_step_5(self, step):
        if step == 4:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run(tiny(tmp_path, name="crashed", **common))
    monkeypatch.undo()
    resumed = run(tiny(tmp_path, name="crashed", resume="last", **common))
    assert resumed["steps_this_run"] == 4
    assert_same_state(last_checkpoint(straight), last_checkpoint(resumed))
    with open(os.path.join(resumed["run_dir"], "metrics.jsonl")) as f:
        steps = [r["step"] for r in map(json.loads, f) if r["kind"] == "train"]
    assert steps == [2, 4, 6, 7]  # step 4, logged after the checkpoint before the crash, was dropped then redone


def _tree(folder):
    """Every file under a folder with its size and modification time."""
    out = {}
    for root, _, names in os.walk(folder):
        for n in names:
            st = os.stat(os.path.join(root, n))
            out[os.path.relpath(os.path.join(root, n), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def test_resume_from_path_takes_the_checkpoint_config_but_writes_where_told(tmp_path, monkeypatch):
    """A checkpoint from elsewhere (its config holds another machine's out_dir) never makes the run write there."""
    first = run(tiny(tmp_path, name="a", hidden=24, steps=2))
    path = os.path.join(first["run_dir"], "checkpoints", "last.pt")
    before = _tree(first["run_dir"])
    # Only --resume PATH, --steps and --out-dir: model options come from the checkpoint, files go to --out-dir with
    # the default name DATA-LOSS of the checkpoint's config.
    summary = run({"resume": path, "steps": 3, "progress": False, "out_dir": str(tmp_path / "elsewhere")})
    assert summary["run_dir"] == str(tmp_path / "elsewhere" / "ring-wgan-gp") and summary["steps"] == 3
    assert last_checkpoint(summary)["config"]["hidden"] == 24
    assert _tree(first["run_dir"]) == before  # nothing written into the checkpoint's run directory
    with open(os.path.join(summary["run_dir"], "metrics.jsonl")) as f:  # the curves continue from the source
        assert [r["step"] for r in map(json.loads, f) if r["kind"] == "train"] == [2, 3]
    # without --out-dir: the default, ./runs, relative to where the command runs
    monkeypatch.chdir(tmp_path / "elsewhere")
    summary = run({"resume": path, "steps": 3, "progress": False, "name": "b"})
    assert os.path.realpath(summary["run_dir"]) == os.path.realpath(tmp_path / "elsewhere" / "runs" / "b")
    assert _tree(first["run_dir"]) == before
    # a folder that holds another run is not overwritten by resuming a foreign checkpoint into it
    with pytest.raises(ConfigError, match="already holds a run.*would overwrite it"):
        run({"resume": path, "steps": 3, "progress": False, "name": "b"})


def test_atomic_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    target = str(tmp_path / "last.pt")
    checkpoint.save_atomic({"x": torch.arange(3)}, target)
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial")  # half a zip archive reaches the disk, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_atomic({"x": torch.arange(5)}, target)
    monkeypatch.setattr(checkpoint.torch, "save", real_save)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.arange(3))
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind


def test_failed_save_during_training_keeps_last_good(tmp_path, monkeypatch):
    first = run(tiny(tmp_path, steps=2))
    before = last_checkpoint(first)

    def failing_save(obj, f, *a, **k):
        f.write(b"garbage")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        run(tiny(tmp_path, steps=4, resume="last"))
    monkeypatch.undo()
    after = checkpoint.load(os.path.join(first["run_dir"], "checkpoints", "last.pt"))
    assert after["step"] == 2
    assert_same_state(before, after)


def test_corrupt_and_incompatible_checkpoints(tmp_path):
    first = run(tiny(tmp_path, steps=2))
    path = os.path.join(first["run_dir"], "checkpoints", "last.pt")
    good = open(path, "rb").read()

    with pytest.raises(CheckpointError, match="hidden: checkpoint 32, requested 64"):
        run(tiny(tmp_path, steps=4, resume="last", hidden=64))
    with pytest.raises(CheckpointError, match="cannot change on resume"):
        run(tiny(tmp_path, steps=4, resume="last", loss="ns-r1", name="ring-wgan-gp"))

    open(path, "wb").write(good[: len(good) // 2])  # truncated by a crash outside our atomic writer
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tiny(tmp_path, steps=4, resume="last"))
    open(path, "wb").write(b"\x00not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tiny(tmp_path, steps=4, resume="last"))
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a fastgp-train checkpoint"):
        run(tiny(tmp_path, steps=4, resume="last"))
    state = torch.load(__import__("io").BytesIO(good), weights_only=True)
    state["critic"] = {k + "_renamed": v for k, v in state["critic"].items()}
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not fit"):
        run(tiny(tmp_path, steps=4, resume="last"))
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        run(tiny(tmp_path, steps=4, resume="last", name="never-ran"))
    with pytest.raises(CheckpointError, match="does not exist"):
        run(tiny(tmp_path, steps=4, resume=str(tmp_path / "missing.pt")))


def test_non_finite_loss_stops_and_keeps_last_good(tmp_path):
    first = run(tiny(tmp_path, steps=4, log_every=1))
    good = last_checkpoint(first)
    # An absurd learning rate makes the critic's weights overflow within the next step.
    with pytest.raises(NonFiniteLossError, match=r"at step 5\b.*last good checkpoint"):
        run(tiny(tmp_path, steps=8, resume="last", lr=1e30, log_every=4))
    kept = last_checkpoint(first)
    assert kept["step"] == 4
    assert_same_state(good, kept)


def test_fresh_run_refuses_existing_run_dir(tmp_path):
    run(tiny(tmp_path, steps=2))
    with pytest.raises(ConfigError, match="already holds a run"):
        run(tiny(tmp_path, steps=2))
