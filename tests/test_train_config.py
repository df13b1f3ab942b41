"""The config dataclass is the single source of truth of the CLI and the files."""

from __future__ import annotations

import dataclasses
import json
import re

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
    ({"lr": 0.0}, r"'lr' \(--lr\) must be a finite number > 0, got 0.0"),
    ({"beta2": 1.0}, r"'beta2' \(--beta2\) must be a finite number >= 0 and < 1, got 1.0"),
    ({"name": "a/b"}, "plain folder name"),
])
def test_resolve_refuses_bad_combinations(over, match):
    with pytest.raises(ConfigError, match=match):
        resolve(dataclasses.replace(TrainConfig(), **over))


def test_cli_reports_refusal(capsys):
    assert main(["--d-norm", "batch"]) == 2
    err = capsys.readouterr().err
    assert "d_norm='batch' is refused" in err and "per-sample" in err


def _outside(bounds, is_int):
    """A value just outside each bound of a field."""
    step = 1 if is_int else 0.5
    out = []
    for kind, v in bounds.items():
        out.append({"at_least": v - step, "above": v, "below": v, "at_most": v + step}[kind])
    return out


NUMERIC = [f for f in dataclasses.fields(TrainConfig) if "bounds" in f.metadata]


@pytest.mark.parametrize("f", NUMERIC, ids=[f.name for f in NUMERIC])
def test_every_bounded_option_is_checked_with_its_name(f):
    is_int = "int" in str(f.type)
    bad = _outside(f.metadata["bounds"], is_int) + ([] if is_int else [float("nan"), float("inf"), -float("inf")])
    flag = "--" + f.name.replace("_", "-")
    for value in bad:
        with pytest.raises(ConfigError, match=f"option '{f.name}' \\({flag}\\) must be"):
            resolve(dataclasses.replace(TrainConfig(), **{f.name: value}))


def test_numeric_fields_all_have_bounds():
    """A new numeric option must say its valid range (resolve checks it from the field)."""
    import typing

    hints = typing.get_type_hints(TrainConfig)
    numeric = [n for n, h in hints.items() if int in typing.get_args(h) + (h,) or float in typing.get_args(h) + (h,)]
    unbounded = [n for n in numeric if "bounds" not in TrainConfig.__dataclass_fields__[n].metadata
                 and n not in ("seed", "image_size", "channels")]  # checked by resolve's own rules
    assert unbounded == []


@pytest.mark.parametrize("argv,match", [
    (["--gp-weight", "nan"], r"'gp_weight' \(--gp-weight\) must be a finite number >= 0, got nan"),
    (["--gp-weight", "inf"], r"'gp_weight' \(--gp-weight\) must be a finite number >= 0, got inf"),
    (["--r1-gamma", "nan", "--loss", "ns-r1"], r"'r1_gamma' \(--r1-gamma\) must be a finite number"),
    (["--z-dim", "0"], r"'z_dim' \(--z-dim\) must be an integer >= 1, got 0"),
    (["--n-critic", "0"], r"'n_critic' \(--n-critic\) must be an integer >= 1, got 0"),
    (["--g-norm", "batch", "--batch-size", "1"], "BatchNorm in the generator needs at least 2 samples"),
    (["--name", ""], "plain folder name"),
])
def test_cli_refuses_bad_numbers_with_a_message(tmp_path, capsys, argv, match):
    assert main(argv + ["--out-dir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and "Traceback" not in err
    assert not (tmp_path / "ring-wgan-gp").exists()  # refused before anything is written


def test_nan_in_a_config_file_is_refused(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"gp_weight": NaN}')  # Python's json reads NaN
    cfg, _ = from_args(["--config", str(path)])
    with pytest.raises(ConfigError, match="'gp_weight'.*got nan"):
        resolve(cfg)


def test_zero_is_a_value_not_auto():
    """0 (or '') given for an option with an auto default is checked as given, never replaced by the auto value."""
    for name in ("z_dim", "n_critic", "gp_weight", "lr", "beta1", "threads"):
        value = {"gp_weight": 0.0, "beta1": 0.0, "threads": 0}.get(name, 0)
        try:
            cfg = resolve(dataclasses.replace(TrainConfig(), **{name: value}))
        except ConfigError as e:
            assert repr(name) in str(e)
        else:
            assert getattr(cfg, name) == value, name


def test_auto_values_of_the_losses():
    toy = {loss: resolve(dataclasses.replace(TrainConfig(), loss=loss)) for loss in ("ns-r1", "rpgan-r1r2", "dragan")}
    assert [toy[k].n_critic for k in toy] == [1, 1, 1]
    assert (toy["ns-r1"].r1_every, toy["rpgan-r1r2"].r1_every) == (16, 1)  # StyleGAN2 lazy R1; R3GAN every step
    assert toy["dragan"].gp_weight == 1.0
    digits = resolve(dataclasses.replace(TrainConfig(), data="digits", loss="dragan"))
    assert digits.gp_weight == 10.0  # the DRAGAN paper's lambda
    assert resolve(TrainConfig()).gp_batch_fraction == 1.0
