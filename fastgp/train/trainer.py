"""The training loop: critic steps with a fastgp penalty, generator steps,
logging, pictures, checkpoints, resume, and DDP under torchrun.

A step is one generator update preceded by ``n_critic`` critic updates. All
randomness of step s comes from generators keyed by (seed, s), see seeding.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import fastgp

from . import checkpoint, distributed, image_quality, regularizers
from .config import STRUCTURAL_REASONS, TOY_DATA, ZERO_CENTERED, ConfigError, TrainConfig, differences, from_dict, overlay, resolve, to_dict
from .data import TableDataset, TensorDataset, ToyMixture, build_dataset, real_samples, shard
from .ema import GeneratorEMA
from .evaluator import describe
from .metrics import mode_metrics
from .models import build_models
from .rundir import RunDir
from .seeding import (ALPHA, FIXED, NOISE, PERTURB, device_stream, global_rng_state, seed_everything,
                      set_global_rng_state, stream)

N_IMAGES = 64  # fixed-noise images per picture
SAMPLES_PER_CLASS = 8  # columns of a conditional picture (one row per class)


@dataclass
class Batch:
    """One update's inputs on this process: real samples, generator noise, interpolation weights."""

    real: Optional[torch.Tensor]
    z: torch.Tensor
    alpha: Optional[torch.Tensor]
    labels: Optional[torch.Tensor] = None  # class of each real sample, and of the fake generated beside it


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the last good checkpoint."""


def run_dir(cfg: TrainConfig) -> str:
    return os.path.join(cfg.out_dir, cfg.name)


def prepare(overrides: Optional[Dict[str, Any]] = None):
    """(resolved config, checkpoint dict or None, its path) from explicit option values.

    Without resume: defaults <- overrides. With resume: the checkpoint's config
    <- overrides, refusing changes of the options that fix tensor shapes. Where
    the run writes (out_dir, name) always comes from these options or their
    defaults, never from the checkpoint, which may come from another machine.
    """
    overrides = dict(overrides or {})
    cfg = overlay(TrainConfig(), overrides)
    here = resolve(cfg)
    if not cfg.resume:
        return here, None, None
    path = checkpoint.resume_path(cfg.resume, run_dir(here))
    if cfg.resume == "last" and not os.path.isfile(path):
        raise checkpoint.CheckpointError(f"--resume last: no checkpoint at {path!r} (run directory "
                                         f"{run_dir(here)!r}); pass --name/--out-dir of the run or a path")
    ckpt = checkpoint.load(path)
    # 'last' continues the run directory it was found in; a path goes to --out-dir/--name or their defaults
    # (the name's default then follows the checkpoint's data and loss); the evaluator cache is this machine's too
    placement = {"out_dir": cfg.out_dir, "name": here.name if cfg.resume == "last" else cfg.name,
                 "eval_cache": cfg.eval_cache}
    try:
        saved = resolve(from_dict(ckpt["config"]))
    except ConfigError as e:
        raise checkpoint.CheckpointError(f"checkpoint {path!r} holds a config this trainer cannot use: {e}") from None
    requested = overlay(saved, {**overrides, **placement})
    # a structural change is the reason to refuse, even where it also makes the options inconsistent
    _refuse_structural_changes(saved, requested, path)
    merged = resolve(requested)  # a bad option given on resume is refused by name, like any other
    _refuse_structural_changes(saved, merged, path)
    return merged, ckpt, path


def _refuse_structural_changes(saved: TrainConfig, requested: TrainConfig, path: str) -> None:
    diff = {k: v for k, v in differences(saved, requested).items() if v[1] is not None}  # None: auto, resolved later
    if diff:
        what = "; ".join(f"{k}: checkpoint {a!r}, requested {b!r}" + (f" ({STRUCTURAL_REASONS[k]})"
                                                                       if k in STRUCTURAL_REASONS else "")
                         for k, (a, b) in diff.items())
        raise checkpoint.CheckpointError(f"checkpoint {path!r} is incompatible with the requested run ({what}); "
                                         "these options fix the trained tensors and cannot change on resume")


def run(overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Trains from option values (as on the command line) and returns the run summary."""
    info = distributed.from_env()
    cfg, ckpt, path = prepare(overrides)
    try:
        return Trainer(cfg, info, ckpt, path).fit()
    finally:
        distributed.shutdown()


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """The module in eval mode inside the block (BatchNorm statistics, spectral norm's stored u and v)."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def _device(cfg: TrainConfig, info: distributed.Dist) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("device='cuda' but torch sees no CUDA device; use --device cpu or auto")
        torch.cuda.set_device(info.local_rank)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


class Trainer:
    def __init__(self, cfg: TrainConfig, info: Optional[distributed.Dist] = None,
                 ckpt: Optional[Dict[str, Any]] = None, ckpt_path: Optional[str] = None):
        self.cfg, self.info = cfg, info or distributed.Dist()
        self.device = _device(cfg, self.info)
        if self.device.type == "cpu" and cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.batch_size % self.info.world:
            raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the {self.info.world} processes")
        if cfg.g_norm == "batch" and cfg.batch_size // self.info.world < 2:
            raise ConfigError(f"batch_size={cfg.batch_size} over {self.info.world} processes leaves 1 sample per "
                              "process, and BatchNorm in the generator needs at least 2; raise --batch-size or use "
                              "--g-norm none")
        try:  # an unavailable backend fails here, saying why
            self.backend = fastgp.select_backend(cfg.backend, self.device)
        except RuntimeError as e:
            raise ConfigError(f"--backend {cfg.backend}: {e}") from None
        distributed.init(self.info, self.device)
        self.wgan = cfg.loss.startswith("wgan")
        self.lazy = cfg.loss in ZERO_CENTERED and cfg.r1_gamma > 0 and cfg.r1_every > 1
        self.gp_fraction = None if cfg.gp_batch_fraction == 1 else cfg.gp_batch_fraction

        seed_everything(cfg.seed)
        self.data = build_dataset(cfg)
        self.classes: Optional[List[str]] = self.data.classes if cfg.conditional else None
        if self.classes is not None:  # the label order, written to config.json and every checkpoint
            self.cfg = cfg = dataclasses.replace(cfg, classes=list(self.classes))
        g, d = build_models(cfg, self.data.shape, len(self.classes) if self.classes else 0)
        self.G, self.D = g.to(self.device), d.to(self.device)
        self.g_net, self.d_net = self.G, self.D  # what the steps call: DDP wrappers when distributed
        if self.info.enabled:
            if self.device.type == "cuda":
                self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_net = DistributedDataParallel(self.G, device_ids=ids)
            self.d_net = DistributedDataParallel(self.D, device_ids=ids)
        self.ema = GeneratorEMA(self.G, cfg.batch_size, cfg.ema_kimg, cfg.ema_rampup) if cfg.g_ema else None
        betas = (float(cfg.beta1), float(cfg.beta2))
        self.lr_d, betas_d = regularizers.lazy_adam(cfg.lr, betas, cfg.r1_every if self.lazy else 1)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=self.lr_d, betas=betas_d)
        fp16 = cfg.amp == "fp16"
        self.scaler_g = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.scaler_d = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

        self._fixed_inputs()
        self.quality = image_quality.prepare(cfg, self.data, self.classes is not None, self.info.main)
        if self.quality is not None and self.info.main:
            print(f"fastgp-train: {self.quality.note}")
        self.final_metrics: Dict[str, Any] = {}
        self.step = 0
        self.records: List[Dict[str, Any]] = []
        self.dir = run_dir(cfg)
        self.files = RunDir(self.dir)
        self.ckpt_dir = os.path.join(self.dir, "checkpoints")
        self.last_good: Optional[str] = None
        self._prepare_dir(ckpt_path)
        if ckpt is not None:
            self._load(ckpt, ckpt_path)
        self._reset_window()

    def _fixed_inputs(self) -> None:
        """The fixed noise (and labels) of every picture and evaluation, and the real samples shown beside them.
        Conditional images: a grid with one row per class, the same noise down each column."""
        cfg, data = self.cfg, self.data
        self.fixed_labels: Optional[torch.Tensor] = None
        if self.classes is not None and cfg.model == "dcgan":
            n_classes = len(self.classes)
            self.fixed_noise = torch.randn(SAMPLES_PER_CLASS, cfg.z_dim, generator=stream(cfg.seed, FIXED))
            self.fixed_noise = self.fixed_noise.repeat(n_classes, 1)
            self.fixed_labels = torch.arange(n_classes).repeat_interleave(SAMPLES_PER_CLASS)
            self.real_ref = data.class_examples(SAMPLES_PER_CLASS, cfg.seed)
            return
        n_fixed = N_IMAGES if cfg.model == "dcgan" else cfg.eval_samples
        self.fixed_noise = torch.randn(n_fixed, cfg.z_dim, generator=stream(cfg.seed, FIXED))
        n_ref = min(n_fixed, len(data)) if isinstance(data, TensorDataset) else n_fixed
        self.real_ref = real_samples(data, n_ref, cfg.seed)
        if self.classes is not None:  # tables: labels drawn as often as the data has them
            pick = torch.randint(len(data), (n_fixed,), generator=stream(cfg.seed, FIXED, 1))
            self.fixed_labels = data.labels[pick]

    # ------------------------------------------------------------ files
    def _own_checkpoint(self, path: Optional[str]) -> bool:
        """Whether `path` is one of this run directory's checkpoints (resuming it continues this run)."""
        return path is not None and os.path.realpath(os.path.dirname(os.path.abspath(path))) == \
            os.path.realpath(self.ckpt_dir)

    def _prepare_dir(self, ckpt_path: Optional[str]) -> None:
        last = checkpoint.find_last(self.dir)
        continuing = self._own_checkpoint(ckpt_path)
        if last and not continuing and not self.cfg.overwrite:
            what = f"resuming {ckpt_path!r} there would overwrite it" if ckpt_path else "pass --resume last to continue it"
            raise ConfigError(f"run directory {self.dir!r} already holds a run ({last}); {what}, --overwrite to start "
                              "over, or --name/--out-dir for another folder")
        if self.info.main:
            self.files.create(clear=bool(last) and not continuing)
            removed = checkpoint.remove_stale_temporaries(self.ckpt_dir)
            if removed:
                print(f"fastgp-train: removed {len(removed)} temporary file(s) of an interrupted save in "
                      f"{self.ckpt_dir}", file=sys.stderr)
            self.files.write_json("config.json", to_dict(self.cfg))
        distributed.barrier(self.info)

    def _log(self, record: Dict[str, Any]) -> None:
        self.records.append(record)
        if self.info.main:
            self.files.append_record(record)

    # ------------------------------------------------------- checkpoints
    def state(self) -> Dict[str, Any]:
        extra = {}
        if isinstance(self.data, TableDataset):
            extra = {"mean": self.data.mean, "std": self.data.std, "columns": list(self.data.columns)}
        return {
            "format": checkpoint.FORMAT, "version": checkpoint.VERSION, "config": to_dict(self.cfg),
            "step": self.step, "generator": self.G.state_dict(), "critic": self.D.state_dict(),
            "generator_ema": self.ema.module.state_dict() if self.ema else None,
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict() if self.scaler_g else None,
            "scaler_d": self.scaler_d.state_dict() if self.scaler_d else None,
            "rng": global_rng_state(), "fixed_noise": self.fixed_noise, "fixed_labels": self.fixed_labels,
            "data": extra,
            "world_size": self.info.world, "torch_version": str(torch.__version__),
            "fastgp_version": fastgp.__version__,
        }

    def save(self) -> None:
        """last.pt always, step_*.pt every ckpt_every steps; only finite states are saved."""
        self._check_finite()
        if not self.info.main:
            return
        state = self.state()
        last = self.files.file(os.path.join("checkpoints", "last.pt"))
        checkpoint.save_atomic(state, last)
        if self.cfg.ckpt_every and self.step % self.cfg.ckpt_every == 0 and self.cfg.keep_ckpts:
            periodic = os.path.join("checkpoints", checkpoint.periodic_name(self.step))
            checkpoint.save_atomic(state, self.files.file(periodic))
            checkpoint.retain(self.ckpt_dir, self.cfg.keep_ckpts)
        self.last_good = last

    def _load(self, ckpt: Dict[str, Any], path: Optional[str]) -> None:
        try:
            self.G.load_state_dict(ckpt["generator"])
            self.D.load_state_dict(ckpt["critic"])
            self.opt_g.load_state_dict(ckpt["opt_g"])
            self.opt_d.load_state_dict(ckpt["opt_d"])
            self._load_ema(ckpt.get("generator_ema"), path)
            for scaler, key in ((self.scaler_g, "scaler_g"), (self.scaler_d, "scaler_d")):
                if scaler is not None and ckpt.get(key):
                    scaler.load_state_dict(ckpt[key])
            set_global_rng_state(ckpt["rng"])
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise checkpoint.CheckpointError(f"checkpoint {path!r} does not fit this model or trainer: "
                                             f"{str(e).splitlines()[0]}") from None
        self.step = int(ckpt["step"])
        self.fixed_noise = ckpt.get("fixed_noise", self.fixed_noise)
        if ckpt.get("fixed_labels") is not None:
            self.fixed_labels = ckpt["fixed_labels"]
        self.last_good = path
        # the curves continue: this run's metrics up to the checkpoint (later ones were logged after it, before a
        # crash or a kill), or those next to a checkpoint resumed from another folder
        metrics = os.path.join(self.dir, "metrics.jsonl")
        source = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "metrics.jsonl")
        if not os.path.isfile(metrics) and os.path.isfile(source):
            metrics = source
        if self.info.main:
            if os.path.isfile(metrics):
                self.records = self.files.read_records(metrics, self.step)
            self.files.write_records(self.records)
            print(f"fastgp-train: resumed from {path} at step {self.step}")

    def _load_ema(self, state: Optional[Dict[str, torch.Tensor]], path: Optional[str]) -> None:
        if self.ema is None:
            if state and self.info.main:
                print(f"fastgp-train: --no-g-ema: the EMA generator in {path} is not used", file=sys.stderr)
        elif state:
            self.ema.module.load_state_dict(state)
        else:  # an older checkpoint, or a run that had --no-g-ema: the average starts at the current weights
            self.ema.reset(self.G)
            if self.info.main:
                print(f"fastgp-train: {path} holds no EMA generator; the EMA starts from its generator's weights",
                      file=sys.stderr)

    # ------------------------------------------------------------ batches
    def _shard(self, x: torch.Tensor) -> torch.Tensor:
        return shard(x, self.info.rank, self.info.world).to(self.device, non_blocking=True)

    def _index(self, step: int, k: int) -> int:
        """Global data batch of update k of step `step` (the generator update, k = n_critic, reuses the last)."""
        return step * self.cfg.n_critic + min(k, self.cfg.n_critic - 1)

    def real_batch(self, step: int, k: int) -> torch.Tensor:
        return self._shard(self.data.batch(self._index(step, k), self.cfg.batch_size, self.cfg.seed))

    def noise(self, step: int, k: int) -> torch.Tensor:
        return self._shard(torch.randn(self.cfg.batch_size, self.cfg.z_dim, generator=stream(self.cfg.seed, NOISE,
                                                                                               step, k)))

    def alpha(self, step: int, k: int) -> torch.Tensor:
        return self._shard(torch.rand(self.cfg.batch_size, generator=stream(self.cfg.seed, ALPHA, step, k)))

    def batch(self, step: int, k: int) -> Batch:
        """This process's inputs of critic update k of step `step`; k = n_critic is the generator update, with its
        own noise and the real samples (and labels) of the step's last critic update (rpgan-r1r2 pairs them).
        Conditional: each fake is generated with the label of the real sample beside it."""
        labels = None
        if self.classes is not None:
            labels = self._shard(self.data.batch_labels(self._index(step, k), self.cfg.batch_size, self.cfg.seed))
        critic_update = k < self.cfg.n_critic
        alpha = self.alpha(step, k) if critic_update else None
        # a generator update needs real samples only for rpgan-r1r2's pairs
        real = self.real_batch(step, k) if critic_update or self.cfg.loss == "rpgan-r1r2" else None
        return Batch(real=real, z=self.noise(step, k), alpha=alpha, labels=labels)

    @staticmethod
    def call(net: torch.nn.Module, x: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """net(x), or net(x, labels) in a conditional run."""
        return net(x) if labels is None else net(x, labels)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _update(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler) -> None:
        """One backward of the whole loss (the DDP-correct scheme, see distributed.py), one optimizer step."""
        opt.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    # -------------------------------------------------------------- steps
    def critic_adversarial(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        """The critic's side of the objective from its scores of a real and a generated batch."""
        if self.wgan:
            return d_fake.mean() - d_real.mean()
        if self.cfg.loss == "rpgan-r1r2":  # relativistic pairing: sample i of each batch forms a pair
            return F.softplus(d_fake - d_real).mean()
        return F.softplus(d_fake).mean() + F.softplus(-d_real).mean()

    def generator_adversarial(self, d_fake: torch.Tensor, d_real: Optional[torch.Tensor]) -> torch.Tensor:
        if self.wgan:
            return -d_fake.mean()
        if self.cfg.loss == "rpgan-r1r2":
            return F.softplus(d_real - d_fake).mean()
        return F.softplus(-d_fake).mean()

    @staticmethod
    def _labels_arg(labels: Optional[torch.Tensor]) -> tuple:
        """critic_args of a penalty: the labels reach the critic undifferentiated."""
        return () if labels is None else (labels,)

    def zero_centered(self, real: torch.Tensor, fake: Optional[torch.Tensor], gain: float,
                      labels: Optional[torch.Tensor] = None):
        """(gain * (R1 + R2 for rpgan-r1r2), stats): the zero-centered penalties of ns-r1 and rpgan-r1r2."""
        cfg, common = self.cfg, dict(gain=gain, scaler=self.scaler_d, backend=self.backend,
                                     batch_fraction=self.gp_fraction, critic_args=self._labels_arg(labels))
        with self._autocast():
            penalty, norms = regularizers.r1(self.d_net, real, cfg.r1_gamma, **common)
            stats = {"penalty": penalty.detach() / gain, "grad_norm": norms.mean()}
            if cfg.loss == "rpgan-r1r2":
                r2, norms2 = regularizers.r2(self.d_net, fake, cfg.r1_gamma, **common)
                stats.update(r1=stats["penalty"], r2=r2.detach() / gain, grad_norm_fake=norms2.mean())
                stats["penalty"] = stats["penalty"] + stats["r2"]
                penalty = penalty + r2
        return penalty, stats

    def critic_penalty(self, step: int, k: int, batch: Batch, fake: torch.Tensor):
        """(penalty or None, stats) added to critic update k: the loss's penalty unless it is lazy or off."""
        cfg = self.cfg
        if cfg.loss in ZERO_CENTERED:
            if cfg.r1_gamma == 0 or self.lazy:
                return None, {}
            return self.zero_centered(batch.real, fake, 1.0, batch.labels)
        if cfg.gp_weight == 0:
            return None, {}
        with self._autocast():
            if self.wgan:
                penalty, norms = fastgp.gradient_penalty(
                    self.d_net, batch.real, fake, weight=cfg.gp_weight, alpha=batch.alpha,
                    center=0.0 if cfg.loss == "wgan-gp-zero" else 1.0, one_sided=cfg.loss == "wgan-gp-one-sided",
                    critic_args=self._labels_arg(batch.labels), scaler=self.scaler_d, return_norms=True,
                    backend=self.backend, batch_fraction=self.gp_fraction)
            else:  # DRAGAN: each process perturbs its own slice (std over that slice) with its own noise
                noise = device_stream(self.device, cfg.seed, PERTURB, step, k, self.info.rank)
                penalty, norms = fastgp.dragan_penalty(
                    self.d_net, batch.real, weight=cfg.gp_weight, alpha=batch.alpha, generator=noise,
                    critic_args=self._labels_arg(batch.labels), scaler=self.scaler_d, return_norms=True,
                    backend=self.backend, batch_fraction=self.gp_fraction)
        return penalty, {"penalty": penalty.detach(), "grad_norm": norms.mean()}

    def critic_loss(self, step: int, k: int, batch: Optional[Batch] = None):
        """(total loss, stats) of critic update k of step `step` (on `batch` instead of its own when given)."""
        cfg = self.cfg
        batch = batch or self.batch(step, k)
        real, labels = batch.real, batch.labels
        with torch.no_grad(), self._autocast():
            fake = self.call(self.G, batch.z, labels).float()
        with self._autocast():
            out = self.call(self.d_net, torch.cat([real, fake]), None if labels is None else labels.repeat(2)).float()
        d_real, d_fake = out[:real.shape[0]], out[real.shape[0]:]
        adv = self.critic_adversarial(d_real, d_fake)
        penalty, penalty_stats = self.critic_penalty(step, k, batch, fake)
        total = adv if penalty is None else adv + penalty
        l2 = regularizers.l2_weights(self.D.parameters(), cfg.l2_d)
        if l2 is not None:
            total = total + l2
        # E D(real) - E D(fake): the Wasserstein estimate of a WGAN critic
        gap = (d_real.mean() - d_fake.mean()).detach()
        return total, {"loss_d": adv.detach(), "wdist" if self.wgan else "score_gap": gap, **penalty_stats}

    def critic_step(self, step: int, k: int) -> Dict[str, torch.Tensor]:
        batch = self.batch(step, k)
        total, stats = self.critic_loss(step, k, batch)
        self._update(total, self.opt_d, self.scaler_d)
        if self.lazy and (step * self.cfg.n_critic + k) % self.cfg.r1_every == 0:
            stats.update(self.lazy_step(step, k, batch))  # the same inputs, not built again
        return stats

    def lazy_loss(self, step: int, k: int, batch: Optional[Batch] = None):
        """(loss, stats) of the lazy regularization after critic update k: gain r1_every times R1 (+ R2)."""
        batch = batch or self.batch(step, k)
        fake, labels = None, batch.labels
        if self.cfg.loss == "rpgan-r1r2":
            with torch.no_grad(), self._autocast():
                fake = self.call(self.G, batch.z, labels).float()
        penalty, stats = self.zero_centered(batch.real, fake, self.cfg.r1_every, labels)
        with self._autocast():
            # R1 does not reach the last bias: 0 * D(x) lets every DDP hook fire.
            touch = self.call(self.d_net, batch.real[:1], None if labels is None else labels[:1]).float().sum() * 0
        return penalty + touch, stats

    def lazy_step(self, step: int, k: int, batch: Optional[Batch] = None) -> Dict[str, torch.Tensor]:
        """Lazy regularization (StyleGAN2): its own optimizer step every r1_every critic steps, with gain r1_every."""
        loss, stats = self.lazy_loss(step, k, batch)
        self._update(loss, self.opt_d, self.scaler_d)
        return stats

    def generator_loss(self, step: int, batch: Optional[Batch] = None):
        batch = batch or self.batch(step, self.cfg.n_critic)
        labels = batch.labels
        with self._autocast():
            fake = self.call(self.g_net, batch.z, labels).float()
            d_fake = self.call(self.D, fake, labels).float()  # the unwrapped critic: no DDP hooks in a G step
            d_real = None
            if self.cfg.loss == "rpgan-r1r2":  # the pairs of the step's last critic update
                with torch.no_grad():
                    d_real = self.call(self.D, batch.real, labels).float()
        adv = self.generator_adversarial(d_fake, d_real)
        l2 = regularizers.l2_weights(self.G.parameters(), self.cfg.l2_g)
        return (adv if l2 is None else adv + l2), {"loss_g": adv.detach()}

    def generator_step(self, step: int) -> Dict[str, torch.Tensor]:
        self.D.requires_grad_(False)
        try:
            total, stats = self.generator_loss(step)
            self._update(total, self.opt_g, self.scaler_g)
        finally:
            self.D.requires_grad_(True)
        return stats

    def _set_lr(self, step: int) -> None:
        factor = 1.0 - step / self.cfg.steps if self.cfg.lr_decay == "linear" else 1.0
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.lr * factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.lr_d * factor

    def train_step(self, step: int) -> Dict[str, torch.Tensor]:
        self._set_lr(step)
        seen: Dict[str, List[torch.Tensor]] = {}
        for k in range(self.cfg.n_critic):
            for key, value in self.critic_step(step, k).items():
                seen.setdefault(key, []).append(value)
        stats = {key: sum(values) / len(values) for key, values in seen.items()}
        stats.update(self.generator_step(step))
        if self.ema is not None:
            self.ema.update(self.G, step * self.cfg.batch_size)  # images generated before this step's update
        return stats

    # ------------------------------------------------ monitoring, checks
    def _reset_window(self) -> None:
        self._sums: Dict[str, torch.Tensor] = {}
        self._counts: Dict[str, int] = {}
        self._count = 0
        self._t0 = time.perf_counter()
        if not hasattr(self, "_bad"):
            self._bad = torch.tensor(float("inf"), device=self.device)

    def _accumulate(self, stats: Dict[str, torch.Tensor]) -> None:
        for key, value in stats.items():  # lazy R1 reports its penalty only on the steps it runs
            self._sums[key] = self._sums.get(key, 0) + value
            self._counts[key] = self._counts.get(key, 0) + 1
        self._count += 1
        # Watch the adversarial losses (and the penalty unless a GradScaler skips overflowing steps itself),
        # on the device: the step is recorded without a host sync.
        watched = stats["loss_d"] + stats["loss_g"]
        if self.scaler_d is None and "penalty" in stats:
            watched = watched + stats["penalty"]
        bad = ~torch.isfinite(watched)
        self._bad = torch.where(bad & torch.isinf(self._bad), torch.tensor(float(self.step), device=self.device),
                                self._bad)

    def _check_finite(self) -> None:
        bad = float(distributed.min_over_ranks(self._bad, self.info))
        if math.isfinite(bad):
            where = (f"the last good checkpoint, {self.last_good}, is kept" if self.last_good
                     else "no checkpoint was written before it")
            raise NonFiniteLossError(f"non-finite loss (NaN or inf) at step {int(bad)}; training stopped and {where}. "
                                     "Lower the learning rate, raise the penalty weight, or try --amp none.")

    def _flush_window(self) -> Dict[str, float]:
        elapsed = time.perf_counter() - self._t0
        keys = sorted(self._sums)
        values = torch.stack([torch.as_tensor(self._sums[k], device=self.device).float() for k in keys]).tolist()
        record = {"kind": "train", "step": self.step, **{k: v / self._counts[k] for k, v in zip(keys, values)},
                  "it_s": self._count / elapsed if elapsed > 0 else float("nan")}
        self._reset_window()
        return record

    # ------------------------------------------------------ evaluation
    def sampling_generator(self) -> torch.nn.Module:
        """The generator that samples and evaluations use: the EMA generator when --g-ema is on."""
        return self.ema.module if self.ema is not None else self.G

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 net: Optional[torch.nn.Module] = None) -> torch.Tensor:
        """Samples of the sampling generator, or of `net`, in eval mode, for noise z (and class labels, conditional),
        on the CPU."""
        net = self.sampling_generator() if net is None else net
        chunks = z.split(4096)
        label_chunks = labels.split(4096) if labels is not None else [None] * len(chunks)
        with eval_mode(net):
            return torch.cat([self.call(net, c.to(self.device), None if y is None else y.to(self.device)).float()
                              for c, y in zip(chunks, label_chunks)]).cpu()

    def evaluate(self, final: bool = False) -> Dict[str, Any]:
        """Metrics of the sampling generator on fixed inputs (eval_samples of them): the mode metrics of the ring and
        grid, in the mixture's native units, or the image-quality metrics of labelled images (image_quality.py),
        with Inception FID, where available, at the end (and every time on a GPU). `final` in an EMA run: the raw
        generator's metrics too, under 'raw_generator'. {} where there is nothing to measure."""
        if isinstance(self.data, ToyMixture):
            samples = self.data.to_native(self.generate(self.fixed_noise))
            return mode_metrics(samples, self.data.centers, self.data.std)
        if self.quality is None or self.quality.evaluator is None:
            return {}
        fid = final or self.device.type == "cuda"
        metrics: Dict[str, Any] = self.quality.score(self.generate, fid, self.device)
        if final and self.ema is not None:
            metrics["raw_generator"] = self.quality.score(
                lambda z, y: self.generate(z, y, net=self.G), fid, self.device)
        return metrics

    def _generator_name(self) -> str:
        return "ema" if self.ema is not None else "raw"

    def _evaluate_and_log(self, final: bool, bar) -> Dict[str, Any]:
        """evaluate(), logged to metrics.jsonl (the raw generator's final metrics in a record of kind 'eval_raw')
        and, for images, printed."""
        metrics = self.evaluate(final)
        if not metrics:
            return metrics
        raw = metrics.get("raw_generator")
        self._log({"kind": "eval", "step": self.step, "generator": self._generator_name(),
                   **{k: v for k, v in metrics.items() if k != "raw_generator"}})
        if raw is not None:
            self._log({"kind": "eval_raw", "step": self.step, "generator": "raw", **raw})
        if "coverage" in metrics and not final:  # the final figures are printed with the summary
            line = f"fastgp-train: step {self.step} ({self._generator_name()} generator): {describe(metrics)}"
            line = line.replace("\n", "\n  ")
            if bar is not None:
                bar.write(line)  # above the progress bar, on stdout
            else:
                print(line, flush=True)
        return metrics

    def pictures(self, final: bool, metrics: Optional[Dict[str, Any]] = None) -> None:
        """Fixed-noise samples as a PNG (samples/step_*.png); at the end samples.png and losses.png too."""
        cfg = self.cfg
        fake = self.generate(self.fixed_noise, self.fixed_labels)
        path = self.files.file(os.path.join("samples", f"step_{self.step:07d}.png"))
        title = f"{cfg.name}: step {self.step}"
        if metrics and "modes" in metrics:
            title += f", {metrics['modes']}/{metrics['n_modes']} modes, {metrics['hq_percent']:.1f}% HQ"
        from . import plots

        finals = [path, self.files.file("samples.png")] if final else [path]
        if cfg.model == "dcgan":
            if self.classes is not None:  # one row per class, real and generated
                plots.image_grid(path, fake, SAMPLES_PER_CLASS)
                if final:
                    plots.image_picture(finals[1], self.real_ref, fake, SAMPLES_PER_CLASS, row_labels=self.classes)
            else:
                plots.image_grid(path, fake[:N_IMAGES])
                if final:
                    plots.image_picture(finals[1], self.real_ref[:N_IMAGES], fake[:N_IMAGES])
        elif self.data.shape[0] == 2:
            critic = None
            if self.classes is None:  # a conditional critic has one landscape per class: no contour lines
                def critic(points):  # in eval mode: a picture must not run spectral norm's power iteration
                    x = self.data.from_native(points.float()).to(self.device)
                    with eval_mode(self.D):
                        return torch.cat([self.D(c).float() for c in x.split(8192)]).cpu()

            real, gen = self.data.to_native(self.real_ref), self.data.to_native(fake)
            columns = getattr(self.data, "columns", ("x", "y"))
            for p in finals:
                plots.toy_picture(p, real, gen, critic, title, columns)
        else:
            real, gen = self.data.to_native(self.real_ref), self.data.to_native(fake)
            for p in finals:
                plots.table_picture(p, real, gen, self.data.columns, title)
        if final:
            plots.loss_picture(self.files.file("losses.png"), self.records, cfg.name)
            if isinstance(self.data, TableDataset):
                self._write_csv(self.files.file("samples.csv"), self.data.to_native(fake))

    def _write_csv(self, path: str, x: torch.Tensor) -> None:
        """Generated rows in the CSV's units; conditional: with the label column, the class each row was drawn for."""
        import csv

        header, rows = list(self.data.columns), [[f"{v:.6g}" for v in row] for row in x.tolist()]
        if self.classes is not None:
            header.append(self.cfg.label_column)
            rows = [row + [self.classes[int(y)]] for row, y in zip(rows, self.fixed_labels)]
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)

    # ------------------------------------------------------------- loop
    def fit(self) -> Dict[str, Any]:
        cfg, main = self.cfg, self.info.main
        start, t_start, cpu_start = self.step, time.perf_counter(), time.process_time()
        bar = None
        if main and cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.steps, initial=start, desc=cfg.name, dynamic_ncols=True, unit="step",
                       file=sys.stderr)
        try:
            for step in range(start, cfg.steps):
                stats = self.train_step(step)
                self.step = step + 1
                self._accumulate(stats)
                last = self.step == cfg.steps
                if self.step % cfg.log_every == 0 or last:
                    self._check_finite()
                    record = self._flush_window()
                    self._log(record)
                    if bar is not None:
                        bar.set_postfix({"D": f"{record['loss_d']:.3g}", "G": f"{record['loss_g']:.3g}",
                                         "pen": f"{record.get('penalty', 0):.3g}",
                                         "|grad|": f"{record.get('grad_norm', 0):.3g}"}, refresh=False)
                evaluating = (cfg.eval_every and self.step % cfg.eval_every == 0) or last
                drawing = (cfg.sample_every and self.step % cfg.sample_every == 0) or last
                if evaluating or drawing:
                    self._check_finite()
                if main:
                    metrics = self._evaluate_and_log(last, bar) if evaluating else None
                    if last:
                        self.final_metrics = metrics
                    if drawing:
                        self.pictures(final=last, metrics=metrics)
                if (cfg.ckpt_every and self.step % cfg.ckpt_every == 0) or last:
                    self.save()
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if start >= cfg.steps:  # nothing to do (resumed a finished run): still write the pictures
            self._check_finite()
            if main:
                self.final_metrics = self.evaluate(final=True)
                self.pictures(final=True, metrics=self.final_metrics)
        distributed.barrier(self.info)
        return self._summary(start, time.perf_counter() - t_start, time.process_time() - cpu_start)

    def _summary(self, start: int, seconds: float, cpu_seconds: float) -> Dict[str, Any]:
        cfg = self.cfg
        summary: Dict[str, Any] = {"name": cfg.name, "run_dir": self.dir, "steps": self.step,
                                   "steps_this_run": self.step - start, "seconds": round(seconds, 2),
                                   "cpu_seconds": round(cpu_seconds, 2),
                                   "device": str(self.device), "backend": self.backend, "processes": self.info.world}
        if not self.info.main:
            return summary
        summary.update(self.final_metrics)
        if "coverage" in summary:
            summary["generator"] = self._generator_name()
        if self.quality is not None and self.quality.evaluator is None:
            summary["image_metrics_unavailable"] = self.quality.reason
        elif self.quality is not None and self.quality.evaluator.fid_reason:
            summary["fid_unavailable"] = self.quality.evaluator.fid_reason
        trained = summary["steps_this_run"] > 0
        previous = os.path.join(self.dir, "summary.json")
        if not trained and os.path.isfile(previous):  # a finished run resumed: keep the timing of its training
            with contextlib.suppress(ValueError, OSError):
                with open(previous, encoding="utf-8") as f:
                    old = json.load(f)
                summary.update({k: old[k] for k in ("steps_this_run", "seconds", "cpu_seconds", "device", "backend",
                                                    "processes") if k in old})
        self.files.write_json("summary.json", summary)
        if trained:
            rate = summary["steps_this_run"] / seconds if seconds > 0 else float("nan")
            print(f"fastgp-train: {cfg.name}: {summary['steps_this_run']} steps in {seconds:.1f} s ({rate:.1f} "
                  f"step/s) on {self.device} x{self.info.world}, penalty backend {self.backend!r}, "
                  f"step {self.step}/{cfg.steps}")
        else:
            print(f"fastgp-train: {cfg.name}: nothing to train, the run is at step {self.step}/{cfg.steps} (raise "
                  "--steps to continue it); pictures and metrics rewritten")
        if "modes" in summary:
            print(f"  {cfg.data}: {summary['modes']}/{summary['n_modes']} modes captured, "
                  f"{summary['hq_percent']:.1f}% high-quality samples "
                  f"(VEEGAN protocol: {cfg.eval_samples} samples, within 3 std of a mode)")
        elif cfg.data in TOY_DATA:
            print(f"  {cfg.data}: no mode metric for this dataset")
        if "coverage" in summary:
            what = "EMA generator" if self.ema is not None else "generator"
            print(f"  {cfg.data} quality ({what}, {summary['samples']} samples): "
                  + describe(summary).replace("\n", "\n    "))
            if "raw_generator" in summary:
                print("  raw generator (no EMA): " + describe(summary["raw_generator"]).replace("\n", "\n    "))
        print(f"  run directory: {self.dir}")
        print(f"  files written: {self.files.listing()}")
        return summary
