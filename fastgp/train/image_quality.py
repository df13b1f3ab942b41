"""Measured image quality during training: the offline evaluator (evaluator.py) of the run's labelled images, and
the fixed inputs every evaluation scores.

Digits and image folders laid out with one sub-folder per class have labels (conditional run or not), so a small
classifier of the real images is trained once (seed EVALUATOR_SEED, whatever the run's seed: every run on the same
images is measured by the same classifier) and cached in `--eval-cache`, keyed by the images and labels: a resume,
or any later run on the same data, loads it. An evaluation scores `eval_samples` images generated from fixed noise
drawn from the EVAL stream (seeding.py), and in a conditional run from labels drawn as often as the data has them;
no training stream is consumed and the generators run in eval mode, so evaluating never changes the training.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Union

import torch

from .config import TrainConfig
from .data import Dataset, TensorDataset
from .evaluator import ImageEvaluator
from .seeding import EVAL, stream

EVALUATOR_SEED = 0

Metrics = Dict[str, Union[int, float]]


class ImageQuality:
    """What a run's image evaluations need. `evaluator` is None when the images have no labels; `reason` then says
    why, and `note` is the line the run prints once at the start (how the evaluator was obtained, or why there is
    no metric, and why there is no FID)."""

    def __init__(self, cfg: TrainConfig, data: TensorDataset, conditional: bool, fit: bool):
        n = cfg.eval_samples
        self.noise = torch.randn(n, cfg.z_dim, generator=stream(cfg.seed, EVAL))
        self.labels: Optional[torch.Tensor] = None
        if conditional:  # classes as often as the data has them: the KL then measures whether G follows its labels
            self.labels = data.labels[torch.randint(len(data), (n,), generator=stream(cfg.seed, EVAL, 1))]
        self.evaluator: Optional[ImageEvaluator] = None
        self.reason: Optional[str] = None
        self.note = ""
        if fit:  # the main process only: the others never evaluate
            self._fit(cfg, data)

    def _fit(self, cfg: TrainConfig, data: TensorDataset) -> None:
        if data.labels is None:
            self.reason = data.unlabelled_reason or "the images have no class labels"
            self.note = (f"no image-quality metric: the metrics need labelled images (digits, or a folder with one "
                         f"sub-folder per class) and {cfg.data_path!r} is not: {self.reason}")
            return
        cpu = time.process_time()
        self.evaluator, self.reason = ImageEvaluator.try_fit(data.data, data.labels, seed=EVALUATOR_SEED,
                                                            cache_dir=cfg.eval_cache)
        ev = self.evaluator
        if ev is None:
            self.note = f"no image-quality metric: {self.reason}"
            return
        where = (f"loaded from {ev.cache_path}" if ev.from_cache else
                 f"trained in {time.process_time() - cpu:.1f} s CPU" +
                 (f", cached at {ev.cache_path}" if ev.cache_path else ", not cached"))
        self.note = (f"image evaluator: a classifier of the {len(data)} labelled images in {len(ev.classes)} classes "
                     f"({ev.n_train} to train, {ev.n_holdout} held out; held-out accuracy "
                     f"{100 * ev.holdout_accuracy:.1f}%), {where}")
        if ev.fid_reason:
            self.note += f"\n  {ev.fid_reason}"

    def score(self, generate: Callable[[torch.Tensor, Optional[torch.Tensor]], torch.Tensor], fid: bool,
              device: torch.device) -> Metrics:
        """The evaluator's metrics of the images `generate(noise, labels)` draws from the fixed inputs; Inception
        FID (where available) only when `fid`."""
        images = generate(self.noise, self.labels)
        return self.evaluator.evaluate(images.to(device), self.labels, fid=fid)


def prepare(cfg: TrainConfig, data: Dataset, conditional: bool, main: bool) -> Optional[ImageQuality]:
    """The run's ImageQuality (image data only; None for toy and CSV data)."""
    if cfg.model != "dcgan" or not isinstance(data, TensorDataset):
        return None
    return ImageQuality(cfg, data, conditional, fit=main)
