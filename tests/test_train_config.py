"""The config dataclass is the single source of truth of the CLI and the files."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fastgp.train.config import ConfigError, TrainConfig, build_parser, from_args, resolve
from fastgp.train.__main__ import main


def test_every_field_has_a_flag_and_defaults_resolve():
    text = build_parser().format_help()
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text
    cfg = resolve(TrainConfig())
    assert (cfg.data, cfg.loss, cfg.model, cfg.gp_weight, cfg.n_critic, cfg.lr, cfg.beta1, cfg.beta2) == \
        ("ring", "wgan-gp", "mlp", 0.1, 5, 1e-3, 0.5, 0.9)  # the WGAN-GP toy code's lambda and betas
    assert cfg.name == "ring-wgan-gp" and cfg.d_norm == "none" and cfg.lr_decay == "linear"
    paper = resolve(dataclasses.replace(TrainConfig(), data="digits"))
    assert (paper.gp_weight, paper.n_critic, paper.lr, paper.beta1, paper.beta2, paper.lr_decay) == \
        (10.0, 5, 1e-4, 0.0, 0.9, "none")  # WGAN-GP paper, Algorithm 1
    assert (paper.model, paper.g_norm, paper.d_norm) == ("dcgan", "batch", "layer")


def test_cli_returns_only_explicit_values():
    cfg, explicit = from_args(["--data", "grid", "--n-critic", "3", "--no-progress", "--z-dim", "auto"])
    assert explicit == {"data": "grid", "n_critic": 3, "progress": False, "z_dim": "auto"}
    assert cfg.data == "grid" and cfg.n_critic == 3 and cfg.progress is False and cfg.z_dim is None


def test_json_overlay_and_flags_win(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"data": "grid", "gp-weight": 0.1, "steps": 9}))
    cfg, explicit = from_args(["--config", str(path), "--steps", "11"])
    assert (cfg.data, cfg.gp_weight, cfg.steps) == ("grid", 0.1, 11)
    assert explicit["steps"] == 11


@pytest.mark.parametrize("content,match", [
    ({"stepz": 3}, "unknown option 'stepz' \\(did you mean 'steps'\\?\\)"),
    ({"steps": "many"}, "'steps' must be an integer"),
    ({"loss": "hinge"}, "'loss' must be one of"),
    ([1, 2], "must hold a mapping"),
])
def test_bad_config_files(tmp_path, content, match):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=match):
        from_args(["--config", str(path)])


def test_yaml_needs_pyyaml(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("data: grid\nsteps: 7\n")
    try:
        import yaml  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="PyYAML is not installed"):
            from_args(["--config", str(path)])
    else:
        cfg, _ = from_args(["--config", str(path)])
        assert (cfg.data, cfg.steps) == ("grid", 7)


@pytest.mark.parametrize("over,match", [
    ({"data": "ring", "model": "dcgan"}, "needs image data"),
    ({"data": "csv"}, "needs --data-path"),
    ({"data": "images", "data_path": "x", "image_size": 12}, "power of two"),
    ({"lr": 0.0}, "'lr' must be > 0"),
    ({"beta2": 1.0}, "'beta2' must be in"),
    ({"name": "a/b"}, "plain folder name"),
])
def test_resolve_refuses_bad_combinations(over, match):
    with pytest.raises(ConfigError, match=match):
        resolve(dataclasses.replace(TrainConfig(), **over))


def test_cli_reports_refusal(capsys):
    assert main(["--d-norm", "batch"]) == 2
    err = capsys.readouterr().err
    assert "d_norm='batch' is refused" in err and "per-sample" in err
