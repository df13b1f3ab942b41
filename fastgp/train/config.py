"""The trainer's configuration: one dataclass is the single source of truth.

The command line (``fastgp-train --help``) is generated from the fields below,
an optional JSON (or YAML, when PyYAML is installed) file can overlay the
defaults, and explicit flags overlay the file. ``None`` means "auto": it is
filled in by :func:`resolve` from the data kind and the loss, and the resolved
config is what gets saved in the run directory and in every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

TOY_DATA = ("ring", "grid", "swissroll")
IMAGE_DATA = ("images", "digits")
DATA_KINDS = TOY_DATA + ("csv",) + IMAGE_DATA
LOSSES = ("wgan-gp", "wgan-gp-one-sided", "wgan-gp-zero", "ns-r1", "rpgan-r1r2", "dragan")
ZERO_CENTERED = ("ns-r1", "rpgan-r1r2")  # losses regularized by R1 (and R2), with gamma and the lazy schedule


class ConfigError(ValueError):
    """A configuration that cannot be trained; the message says which option and why."""


def _opt(default, help: str, group: str, choices: Optional[Sequence[str]] = None, auto: Optional[str] = None,
         at_least: Optional[float] = None, above: Optional[float] = None, below: Optional[float] = None,
         at_most: Optional[float] = None):
    """A field with its CLI help, group, choices, auto rule and valid range (checked by resolve())."""
    meta = {"help": help, "group": group}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if auto is not None:
        meta["auto"] = auto
    bounds = {k: v for k, v in (("at_least", at_least), ("above", above), ("below", below), ("at_most", at_most))
              if v is not None}
    if bounds:
        meta["bounds"] = bounds
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # ---- data
    data: str = _opt("ring", "dataset: toy 2-D (ring = 8 Gaussians, grid = 25 Gaussians, swissroll), csv "
                     "(numeric columns of --data-path, standardized), images (a folder of image files), digits "
                     "(scikit-learn's bundled 8x8 digits)", "data", DATA_KINDS)
    data_path: Optional[str] = _opt(None, "CSV file (data=csv) or image folder (data=images)", "data")
    image_size: Optional[int] = _opt(None, "side of the square images, a power of two >= 8", "data",
                                     auto="32 for images, 8 for digits")
    channels: Optional[int] = _opt(None, "image channels: 1 (grayscale) or 3 (RGB)", "data",
                                   auto="3 for images, 1 for digits")
    batch_size: int = _opt(256, "global batch size (split across processes under torchrun)", "data", at_least=1)
    conditional: bool = _opt(False, "class-conditional GAN: a generator with a label embedding and a projection critic "
                             "(Miyato & Koyama 2018); labels from digits, from the sub-folder names of an image "
                             "folder, or from a CSV column (--label-column)", "data")
    label_column: Optional[str] = _opt(None, "data=csv with --conditional: the column holding each row's class", "data")
    classes: Optional[List[str]] = _opt(None, "class names in label order (comma-separated on the command line); "
                                        "filled in from the data and written to config.json; given, the data must "
                                        "have exactly these classes", "data", auto="the data's classes")
    # ---- models
    model: Optional[str] = _opt(None, "architecture of generator and critic", "model", ("mlp", "dcgan"),
                                auto="mlp for toy and csv data, dcgan for images")
    z_dim: Optional[int] = _opt(None, "dimension of the generator's Gaussian noise", "model",
                                auto="2 for toy data (as in the WGAN-GP paper), 16 for csv, 64 for images", at_least=1)
    hidden: int = _opt(128, "MLP: width of the hidden layers (the WGAN-GP toy code uses 512: 10x the CPU time)",
                       "model", at_least=1)
    depth: int = _opt(3, "MLP: number of hidden layers", "model", at_least=1)
    width: int = _opt(64, "DCGAN: channels of the widest critic layer / narrowest generator layer", "model",
                      at_least=1)
    g_norm: Optional[str] = _opt(None, "generator normalization", "model", ("batch", "none"),
                                 auto="batch for dcgan, none for mlp")
    d_norm: Optional[str] = _opt(None, "critic normalization; batch is refused with a gradient penalty", "model",
                                 ("layer", "none", "batch"), auto="layer for dcgan, none for mlp")
    d_sn: bool = _opt(False, "spectral normalization of every critic layer (Miyato et al. 2018), with the penalty or "
                      "instead of it (--gp-weight 0 / --r1-gamma 0)", "model")
    g_ema: Optional[bool] = _opt(None, "keep an exponential moving average (EMA) of the generator's weights, as "
                                 "StyleGAN2-ADA does, and draw samples and evaluations from it", "model",
                                 auto="on for image data, off for toy and csv data")
    ema_kimg: Optional[float] = _opt(None, "EMA half-life in thousands of generated images", "model",
                                     auto="batch_size * 10 / 32 (StyleGAN2-ADA's auto config)", above=0)
    ema_rampup: float = _opt(0.05, "EMA ramp-up: the half-life is at most this times the images generated so far, "
                             "so early weights are forgotten fast (0 = no ramp-up)", "model", at_least=0)
    # ---- objective
    loss: str = _opt("wgan-gp", "objective and gradient penalty: WGAN-GP (two-sided, center 1), one-sided, "
                     "zero-centered on interpolates; non-saturating loss + lazy R1 on real samples; the relativistic "
                     "pairing loss + R1 and R2 (R3GAN); non-saturating loss + DRAGAN", "loss", LOSSES)
    gp_weight: Optional[float] = _opt(None, "lambda of the WGAN-GP and DRAGAN penalties", "loss",
                                      auto="10 (WGAN-GP and DRAGAN papers); for toy data 0.1 with wgan-* (the WGAN-GP "
                                      "toy code) and 1 with dragan (10 lost 7 of the ring's 8 modes in the default "
                                      "demo)", at_least=0)
    r1_gamma: float = _opt(1.0, "gamma of R1, and of R2 with rpgan-r1r2 (each is gamma/2 * E||grad D(x)||^2)",
                           "loss", at_least=0)
    r1_every: Optional[int] = _opt(None, "lazy R1 (and R2): regularize once every k critic steps with gain k "
                                   "(1 = every step)", "loss", auto="16 for ns-r1 (StyleGAN2), 1 for rpgan-r1r2 "
                                   "(R3GAN regularizes every step)", at_least=1)
    gp_batch_fraction: Optional[float] = _opt(None, "regularize only the first ceil(F * batch) samples of each batch "
                                              "(the penalty API's batch_fraction): less time and memory per penalty",
                                              "loss", auto="1, the whole batch", above=0, at_most=1)
    n_critic: Optional[int] = _opt(None, "critic steps per generator step", "loss", auto="5 for wgan-*, 1 otherwise",
                                   at_least=1)
    l2_d: float = _opt(0.0, "L2 weight regularization of the critic: adds l2_d * sum ||W||^2", "loss", at_least=0)
    l2_g: float = _opt(0.0, "L2 weight regularization of the generator: adds l2_g * sum ||W||^2", "loss",
                       at_least=0)
    # ---- optimizer (Adam for both networks)
    lr: Optional[float] = _opt(None, "Adam learning rate of both networks", "optim",
                               auto="1e-4 (WGAN-GP paper), 1e-3 for toy data (with linear decay: a CPU-minute budget)", above=0)
    beta1: Optional[float] = _opt(None, "Adam beta1", "optim", auto="0 (WGAN-GP paper), 0.5 for toy data (toy code)",
                                  at_least=0, below=1)
    beta2: float = _opt(0.9, "Adam beta2", "optim", at_least=0, below=1)
    lr_decay: Optional[str] = _opt(None, "learning-rate schedule: linear decays to 0 at the last step", "optim",
                                   ("none", "linear"), auto="linear for toy data, none otherwise")
    # ---- run
    steps: int = _opt(1500, "generator steps (the total, also when resuming)", "run", at_least=1)
    seed: int = _opt(0, "seed of Python, NumPy and torch (model init, data order, noise, interpolation)", "run")
    device: str = _opt("auto", "where to train", "run", ("auto", "cpu", "cuda"))
    amp: str = _opt("none", "mixed precision: bf16 autocast, or fp16 autocast with a GradScaler", "run",
                    ("none", "bf16", "fp16"))
    backend: str = _opt("auto", "fastgp backend for the penalty", "run", ("auto", "cpp", "triton", "torch"))
    threads: Optional[int] = _opt(None, "CPU threads of torch (per process)", "run",
                                  auto="1 for MLPs on CPU (small matmuls; robust on a shared CPU), else torch's", at_least=0)
    name: Optional[str] = _opt(None, "run name; the run directory is OUT_DIR/NAME", "run", auto="DATA-LOSS")
    out_dir: str = _opt("runs", "parent folder of run directories", "run")
    log_every: int = _opt(25, "steps between metrics.jsonl records and progress-bar updates", "run", at_least=1)
    sample_every: int = _opt(500, "steps between fixed-noise sample pictures (0 = only at the end)", "run",
                             at_least=0)
    ckpt_every: int = _opt(500, "steps between periodic checkpoints (0 = only last.pt)", "run", at_least=0)
    keep_ckpts: int = _opt(3, "periodic checkpoints kept (last.pt is always kept)", "run", at_least=0)
    eval_every: int = _opt(500, "steps between evaluations: the mode metrics of the ring and grid, the image "
                           "quality of labelled images (0 = only at the end)", "run", at_least=0)
    eval_samples: int = _opt(2500, "samples drawn for an evaluation (the toy mode metrics of the VEEGAN protocol, the "
                             "image-quality metrics, at least 2)", "run", at_least=1)
    eval_cache: Optional[str] = _opt(None, "folder of the image evaluator's trained classifier, keyed by the data (a "
                                     "later run or a resume on the same images loads it instead of training it)",
                                     "run", auto="$XDG_CACHE_HOME/fastgp or ~/.cache/fastgp")
    resume: Optional[str] = _opt(None, "continue a run: 'last' (OUT_DIR/NAME/checkpoints/last.pt) or a checkpoint "
                                 "path; its config is the base that explicit flags override", "run")
    overwrite: bool = _opt(False, "start afresh in a run directory that already holds a run", "run")
    progress: bool = _opt(True, "show a tqdm progress bar", "run")


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Fields that fix the shapes of the saved tensors: a checkpoint is only compatible if they agree.
STRUCTURAL = ("data", "conditional", "image_size", "channels", "model", "z_dim", "hidden", "depth", "width", "g_norm",
              "d_norm", "d_sn", "loss", "amp")
# Why a structural option cannot change on resume, where there is more to say than "it fixes tensor shapes".
STRUCTURAL_REASONS = {
    "conditional": "a conditional run's generator and critic take class labels (a label embedding and a projection), "
                   "an unconditional run's do not"}
_CONVERTERS = {int: int, float: float, str: str, list: str}


def _base_type(name: str):
    hint = typing.get_type_hints(TrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    typ = args[0] if args else hint
    return (list if typing.get_origin(typ) is list else typ), type(None) in typing.get_args(hint)


def _close(name: str) -> str:
    near = difflib.get_close_matches(name, FIELDS, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def coerce(name: str, value: Any) -> Any:
    """Checks one value against its field's type and choices; 'auto' or None selects auto."""
    if name not in FIELDS:
        raise ConfigError(f"unknown option {name!r}{_close(name)}")
    typ, optional = _base_type(name)
    if optional and (value is None or value == "auto"):
        return None
    if typ is bool:
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            value = value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"option {name!r} must be true or false, got {value!r}")
    elif typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"option {name!r} must be a number, got {value!r}")
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"option {name!r} must be a number, got {value!r}") from None
    elif typ is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"option {name!r} must be an integer, got {value!r}") from None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"option {name!r} must be an integer, got {value!r}")
    elif typ is str and not isinstance(value, str):
        raise ConfigError(f"option {name!r} must be a string, got {value!r}")
    elif typ is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"option {name!r} must be a list of strings (comma-separated on the command line), "
                              f"got {value!r}")
        value = list(value)
    choices = FIELDS[name].metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"option {name!r} must be one of {', '.join(choices)}, got {value!r}")
    return value


def overlay(cfg: TrainConfig, values: Dict[str, Any]) -> TrainConfig:
    """A copy of cfg with `values` (field name -> value; '-' or '_' in names) applied and checked."""
    clean = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        clean[name] = coerce(name, value)
    return dataclasses.replace(cfg, **clean)


def load_file(path: str) -> Dict[str, Any]:
    """Reads a JSON (or, with PyYAML installed, YAML) mapping of option -> value."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"config file {path!r} is YAML but PyYAML is not installed; "
                              "pip install pyyaml or write the file as JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of option names to values")
    return data


# --------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """argparse generated from TrainConfig; defaults are suppressed so only explicit flags come back."""
    parser = argparse.ArgumentParser(
        prog="fastgp-train",
        description="Train a GAN with a fastgp gradient penalty. With no arguments: WGAN-GP on the 8-Gaussians "
                    "ring on CPU (about a minute). Multi-process: torchrun --nproc_per_node=N -m fastgp.train ...",
        epilog="examples: fastgp-train --data grid --steps 8000 | fastgp-train --data images --data-path DIR "
               "--device cuda --amp bf16 | fastgp-train --data csv --data-path table.csv | fastgp-train --resume last",
        argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", metavar="FILE", help="JSON (or YAML) file of options; explicit flags win")
    groups: Dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        group_name = f.metadata["group"]
        group = groups.get(group_name) or parser.add_argument_group(group_name)
        groups[group_name] = group
        typ, optional = _base_type(f.name)
        flag = "--" + f.name.replace("_", "-")
        default = f.metadata.get("auto", f.default)
        help_text = f"{f.metadata['help']} [default: {'auto: ' if 'auto' in f.metadata else ''}{default}]"
        help_text = help_text.replace("%", "%%")
        if typ is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_text)
            continue
        choices = f.metadata.get("choices")
        if choices and optional:
            choices = ("auto",) + tuple(choices)
        conv = _CONVERTERS[typ]
        if optional:
            def conv(s, _t=_CONVERTERS[typ]):
                return s if s == "auto" else _t(s)
        group.add_argument(flag, dest=f.name, type=conv, choices=choices, help=help_text,
                           metavar=None if choices else "A,B,..." if typ is list else typ.__name__.upper())
    return parser


def from_args(argv: Optional[Sequence[str]] = None):
    """(config overlaid by --config and flags, dict of the explicit overrides) from the command line."""
    parser = build_parser()
    ns = vars(parser.parse_args(argv))
    file_values = load_file(ns.pop("config")) if "config" in ns else {}
    explicit = {**file_values, **ns}
    return overlay(TrainConfig(), explicit), explicit


# ---------------------------------------------------------------- resolve
def penalty_weight(cfg: TrainConfig) -> float:
    """The weight of the loss's gradient penalty (0: none)."""
    return cfg.r1_gamma if cfg.loss in ZERO_CENTERED else cfg.gp_weight


def _auto(value, default):
    """The option's value, or its auto default when it is None: 0, '' and False are values, never 'auto'."""
    return default if value is None else value


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _describe(bounds: Dict[str, float]) -> str:
    lo = [f"{'>=' if k == 'at_least' else '>'} {v:g}" for k, v in bounds.items() if k in ("at_least", "above")]
    hi = [f"{'<=' if k == 'at_most' else '<'} {v:g}" for k, v in bounds.items() if k in ("below", "at_most")]
    return " and ".join(lo + hi)


def check_ranges(cfg: TrainConfig) -> None:
    """Every numeric option finite and within its field's bounds; the message names the option and its flag."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if value is None or isinstance(value, (bool, str)) or not isinstance(value, (int, float)):
            continue
        bounds = f.metadata.get("bounds", {})
        kind = "an integer" if isinstance(value, int) else "a finite number"
        what = f"option {f.name!r} ({flag(f.name)}) must be {kind}" + (f" {_describe(bounds)}" if bounds else "")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{what}, got {value!r}")
        ok = all({"at_least": value >= v, "above": value > v, "below": value < v, "at_most": value <= v}[k]
                 for k, v in bounds.items())
        if not ok:
            raise ConfigError(f"{what}, got {value!r}")


def _check_labels(cfg: TrainConfig) -> None:
    """The conditional options fit together and the data can have labels."""
    if cfg.conditional and cfg.data in TOY_DATA:
        raise ConfigError(f"--conditional needs labelled data (digits, images with one sub-folder per class, or csv "
                          f"with --label-column); data={cfg.data!r} has no labels")
    if cfg.conditional and cfg.data == "csv" and not cfg.label_column:
        raise ConfigError("--conditional with data=csv needs --label-column NAME, the column holding the classes")
    if cfg.label_column is not None and cfg.data != "csv":
        raise ConfigError(f"--label-column names a CSV column; data={cfg.data!r} is not csv")
    if cfg.label_column is not None and not cfg.conditional:
        raise ConfigError(f"--label-column {cfg.label_column!r} is used by a conditional GAN: add --conditional (or "
                          "drop --label-column)")
    if cfg.classes is not None:
        if not cfg.conditional:
            raise ConfigError("option 'classes' is for a conditional run: add --conditional or drop it")
        if len(cfg.classes) < 2 or len(set(cfg.classes)) != len(cfg.classes) or not all(cfg.classes):
            raise ConfigError(f"option 'classes' must list 2 or more distinct, non-empty names, got {cfg.classes!r}")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fills every auto field and checks the combination; raises ConfigError naming the option."""
    check_ranges(cfg)  # the explicit values first: a refusal names what the user wrote, not a derived value
    toy, image = cfg.data in TOY_DATA, cfg.data in IMAGE_DATA
    model = _auto(cfg.model, "dcgan" if image else "mlp")
    if model == "dcgan" and not image:
        raise ConfigError(f"model 'dcgan' needs image data (images or digits), not data={cfg.data!r}; use model=mlp")
    if model == "mlp" and image:
        raise ConfigError(f"model 'mlp' is for toy and csv data; data={cfg.data!r} needs model=dcgan")
    if cfg.data in ("csv", "images") and not cfg.data_path:
        raise ConfigError(f"data={cfg.data!r} needs --data-path (a {'CSV file' if cfg.data == 'csv' else 'folder'})")
    image_size = _auto(cfg.image_size, 8 if cfg.data == "digits" else 32)
    channels = _auto(cfg.channels, 1 if cfg.data == "digits" else 3)
    if image:
        if image_size < 8 or image_size & (image_size - 1):
            raise ConfigError(f"image_size must be a power of two >= 8, got {image_size}")
        if channels not in (1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}")
        if cfg.data == "digits" and (image_size, channels) != (8, 1):
            raise ConfigError("data=digits are 8x8 grayscale: image_size must be 8 and channels 1")
    _check_labels(cfg)
    wgan = cfg.loss.startswith("wgan")
    out = dataclasses.replace(
        cfg, model=model, image_size=image_size if image else None, channels=channels if image else None,
        z_dim=_auto(cfg.z_dim, 2 if toy else 16 if cfg.data == "csv" else 64),
        g_norm=_auto(cfg.g_norm, "batch" if model == "dcgan" else "none"),
        d_norm=_auto(cfg.d_norm, "layer" if model == "dcgan" else "none"),
        n_critic=_auto(cfg.n_critic, 5 if wgan else 1),
        gp_weight=_auto(cfg.gp_weight, (0.1 if wgan else 1.0) if toy else 10.0),
        r1_every=_auto(cfg.r1_every, 16 if cfg.loss == "ns-r1" else 1),
        gp_batch_fraction=_auto(cfg.gp_batch_fraction, 1.0),
        lr=_auto(cfg.lr, 1e-3 if toy else 1e-4),
        beta1=_auto(cfg.beta1, 0.5 if toy else 0.0),
        lr_decay=_auto(cfg.lr_decay, "linear" if toy else "none"),
        threads=_auto(cfg.threads, 1 if model == "mlp" else 0),
        g_ema=_auto(cfg.g_ema, image),
        ema_kimg=_auto(cfg.ema_kimg, cfg.batch_size * 10 / 32),
        name=_auto(cfg.name, f"{cfg.data}-{cfg.loss}"))
    check_ranges(out)
    if image and out.eval_samples < 2:
        raise ConfigError(f"option 'eval_samples' (--eval-samples) must be >= 2 with image data (the image-quality "
                          f"metrics compare statistics of the samples), got {out.eval_samples}")
    if out.d_norm == "batch" and penalty_weight(out) > 0:
        raise ConfigError(
            "d_norm='batch' is refused with a gradient penalty: BatchNorm makes each critic score depend on the "
            "whole batch, so grad_x D(x_i) is no longer a per-sample gradient and the penalty constrains the wrong "
            "quantity (the WGAN-GP paper drops BatchNorm from the critic for this reason); it also makes the double "
            "backward several times slower. Use d_norm='layer' or 'none' (BatchNorm in the generator is fine).")
    if out.g_norm == "batch" and out.batch_size < 2:
        raise ConfigError(f"batch_size={out.batch_size} with g_norm='batch': BatchNorm in the generator needs at "
                          "least 2 samples per batch (it normalizes over the batch); raise --batch-size or use "
                          "--g-norm none")
    if not out.name or "/" in out.name or os.sep in out.name or out.name in (".", ".."):
        raise ConfigError(f"option 'name' must be a plain folder name, got {out.name!r}")
    return out


def to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(values: Dict[str, Any]) -> TrainConfig:
    """A config from a saved dict; unknown keys (a newer trainer) are an error naming them."""
    return overlay(TrainConfig(), values)


def differences(a: TrainConfig, b: TrainConfig, names: Sequence[str] = STRUCTURAL) -> Dict[str, tuple]:
    return {n: (getattr(a, n), getattr(b, n)) for n in names if getattr(a, n) != getattr(b, n)}
