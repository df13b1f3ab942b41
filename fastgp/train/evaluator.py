"""Image quality measured offline, by a small classifier learned from the labelled real images.

No Inception weights can be downloaded, so the feature extractor is learned from the data itself: a small
convnet is trained on a stratified training split of the real labelled images and judged on the held-out rest.
Generated images are then scored by it::

    evaluator, reason = ImageEvaluator.try_fit(images, labels, seed=0, cache_dir=run_dir)
    if evaluator is None:
        print(f"no image-quality metric: {reason}")      # e.g. an image folder without class sub-folders
    else:
        metrics = evaluator.evaluate(generated)             # flat dict of numbers, JSON-ready
        print(describe(metrics))

`images` are (N, C, H, W) floats scaled like the trainer's data (in [-1, 1]); `labels` are N integer classes,
each with at least 2 images. See `ImageEvaluator.evaluate` for the exact definition of every metric.

Determinism: fitting is a pure function of (images, labels, holdout_fraction, seed, steps). It runs on the CPU with
one intra-op thread (restored afterwards) and seeded generators, without touching the global RNG state, so the
weights are bitwise identical across fits on one machine and torch build, whatever torch.get_num_threads() the
caller set. They are not bitwise identical across CPU instruction sets (oneDNN/MKL choose kernels by CPU) or torch
versions; a cached classifier is reused as is wherever the cache folder is shared.

Cache: the weights are saved as ``evaluator-<key>.pt`` in `cache_dir` (default ``$XDG_CACHE_HOME/fastgp`` or
``~/.cache/fastgp``; pass a run directory to keep it next to the run, or False for none), keyed by a SHA-256 of the
images, labels, split, seed, step count and `CLASSIFIER_VERSION`. An entry that does not load, does not match its
key or whose weights fail their stored digest is retrained and overwritten, with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import save_atomic
from .frechet import InceptionFID, feature_moments, fid_status, frechet_distance_from_moments
from .seeding import stream

__all__ = ["ImageEvaluator", "describe", "fid_status", "default_cache_dir", "CLASSIFIER_VERSION"]

CLASSIFIER_VERSION = 1  # bump on any change to the network or its training: old cache entries then miss
CONFIDENCE = 0.9  # a sample counts towards coverage when its top class probability is at least this
MIN_CLASS_SHARE = 0.01  # ... and its class holds at least this share of the samples
FEATURES = 64  # width of the penultimate layer, the space of the Fréchet distance
BATCH = 64
LEARNING_RATE = 3e-3
_FORMAT = "fastgp-image-evaluator"
_STREAM = 0x45564C  # keeps the evaluator's random streams apart from the trainer's (seeding.py)
_SPLIT, _INIT, _BATCHES, _BASELINE = range(4)
_CHUNK = 256  # images per forward pass when extracting features (fixed: results do not depend on N)


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "fastgp")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One intra-op thread: CPU reductions then split the same way whatever the caller's thread count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _Classifier(nn.Module):
    """conv-conv-pool stages down to at most 4x4 (one stage for 8x8, four for 64x64), a last conv, 2x2 average
    pooling, a FEATURES-wide ReLU layer (the penultimate features), and the class logits."""

    def __init__(self, channels: int, height: int, width: int, n_classes: int):
        super().__init__()
        layers, c_in, side, w = [], channels, min(height, width), 16
        while True:
            layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                       nn.MaxPool2d(2)]
            c_in, side = w, side // 2
            if side <= 4:
                break
            w = min(2 * w, FEATURES)
        w = min(2 * w, FEATURES)
        layers += [nn.Conv2d(c_in, w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                   nn.Linear(4 * w, FEATURES), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURES, n_classes)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


# ------------------------------------------------------------------ input checks
def _as_images(images: Any, name: str, shape: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (N, C, H, W), got {images.dtype} of "
                         f"shape {tuple(images.shape)}")
    if shape is None and (min(images.shape[2:]) < 8 or images.shape[1] < 1):
        raise ValueError(f"{name} must have at least 1 channel and H, W >= 8, got shape {tuple(images.shape)}")
    if shape is not None and tuple(images.shape[1:]) != shape:
        raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}) like the real images, got "
                         f"{tuple(images.shape)}")
    x = images.detach().to("cpu", torch.float32).contiguous()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _as_labels(labels: Any, n: int, name: str) -> torch.Tensor:
    try:
        y = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{name} must be a 1-D sequence of {n} integer class labels, got {type(labels).__name__}") \
            from None
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must be a 1-D sequence of {n} integer class labels (one per image), got shape "
                         f"{tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    return y.to("cpu", torch.int64)


def _unavailable_reason(images: torch.Tensor, labels: Any) -> Optional[str]:
    if labels is None:
        return "the images have no class labels (an image folder needs one sub-folder per class)"
    y = _as_labels(labels, images.shape[0], "labels")
    classes, counts = y.unique(return_counts=True)
    if len(classes) < 2:
        return f"the images have a single class ({int(classes[0]) if len(classes) else 'none'}); a classifier needs 2"
    if int(counts.min()) < 2:
        few = [int(c) for c, k in zip(classes, counts) if k < 2]
        return (f"class{'es' if len(few) > 1 else ''} {', '.join(map(str, few))} ha{'ve' if len(few) > 1 else 's'} "
                "a single image; each class needs 2 (one to train on, one held out)")
    return None


# ------------------------------------------------------------------ fitting
def _stratified_split(y: torch.Tensor, n_classes: int, fraction: float, seed: int) -> Tuple[torch.Tensor, ...]:
    """(train, held-out) indices: round(fraction * n_c) of each class held out, at least 1, at most n_c - 1."""
    g = stream(seed, _STREAM, _SPLIT)
    train, hold = [], []
    for c in range(n_classes):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(max(round(fraction * len(idx)), 1), len(idx) - 1)
        hold.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(hold).sort().values


def _cache_key(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int, steps: int) -> str:
    h = hashlib.sha256()
    h.update(f"{_FORMAT} v{CLASSIFIER_VERSION} shape={tuple(x.shape)} fraction={fraction!r} seed={seed} "
             f"steps={steps}\n".encode())
    h.update(x.numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def _state_digest(state: Dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()


def _train(model: _Classifier, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int) -> None:
    """Adam with a cosine decay to 0 over `steps` minibatches drawn epoch by epoch from a seeded permutation."""
    opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    g = stream(seed, _STREAM, _BATCHES)
    batch = min(BATCH, len(x))
    order, pos = torch.randperm(len(x), generator=g), 0
    model.train()
    for _ in range(steps):
        if pos + batch > len(order):
            order, pos = torch.randperm(len(x), generator=g), 0
        idx = order[pos:pos + batch]
        pos += batch
        loss = F.cross_entropy(model(x[idx])[1], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    model.eval()


def _load_cached(path: str, key: str, model: _Classifier) -> Optional[str]:
    """Loads the weights into `model`; returns why not (None when loaded) -- a missing file is not a warning."""
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(entry, dict) or entry.get("format") != _FORMAT or entry.get("key") != key:
            return "not an evaluator cache entry for this data"
        state = entry["state_dict"]
        if entry.get("digest") != _state_digest(state):
            return "the weights do not match their digest"
        model.load_state_dict(state)
    except Exception as e:  # truncated zip, garbage, missing or misshapen tensors
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def _trained_classifier(x: torch.Tensor, raw: torch.Tensor, y: torch.Tensor, n_classes: int,
                        split: Tuple[torch.Tensor, torch.Tensor], seed: int, steps: int, fraction: float,
                        cache_dir: Union[str, os.PathLike, None, bool]) -> Tuple[_Classifier, Optional[str], bool]:
    """(model, cache path or None, loaded from the cache?): the cached weights if usable, else trained and cached."""

    def new_model() -> _Classifier:  # the seeded initialization, without touching the caller's RNG state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream(seed, _STREAM, _INIT).initial_seed())
            return _Classifier(x.shape[1], x.shape[2], x.shape[3], n_classes)

    model = new_model()
    if cache_dir is False:
        _train(model, x[split[0]], y[split[0]], steps, seed)
        return model, None, False
    key = _cache_key(x, raw, fraction, seed, steps)
    folder = default_cache_dir() if cache_dir is None else os.fspath(cache_dir)
    path: Optional[str] = os.path.join(folder, f"evaluator-{key[:32]}.pt")
    if os.path.exists(path):
        why = _load_cached(path, key, model)
        if why is None:
            model.eval()
            return model, path, True
        warnings.warn(f"retraining the image evaluator: its cache entry {path} is unusable ({why})")
        model = new_model()  # load_state_dict may have filled part of it
    _train(model, x[split[0]], y[split[0]], steps, seed)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        save_atomic({"format": _FORMAT, "version": CLASSIFIER_VERSION, "key": key, "state_dict": state,
                     "digest": _state_digest(state)}, path)
    except OSError as e:
        warnings.warn(f"could not cache the image evaluator at {path}: {e}")
        path = None
    return model, path, False


# ------------------------------------------------------------------ the evaluator
class ImageEvaluator:
    """A classifier of the real images and the metrics of generated ones; build it with `fit` or `try_fit`.

    Attributes: `classes` (the label values, sorted), `holdout_accuracy` (the classifier's accuracy on the held-out
    real images), `n_train` / `n_holdout` (split sizes), `cache_path` (None without a cache), `from_cache`,
    `fid_reason` (None when `evaluate` reports FID, else why not).
    """

    def __init__(self, model: _Classifier, x: torch.Tensor, y: torch.Tensor, classes: torch.Tensor,
                 split: Tuple[torch.Tensor, torch.Tensor], seed: int, fid: bool, cache_path: Optional[str],
                 from_cache: bool):
        self._model, self.classes = model, classes
        self._shape = tuple(x.shape[1:])
        self.cache_path, self.from_cache = cache_path, from_cache
        train, hold = split
        self.n_train, self.n_holdout = len(train), len(hold)
        self._real_share = torch.bincount(y, minlength=len(classes)).double() / len(y)
        train_probs, self._train_features = self._run(x[train])
        hold_probs, hold_features = self._run(x[hold])
        self._train_probs = train_probs
        self.holdout_accuracy = float((hold_probs.argmax(1) == y[hold]).double().mean())
        self._holdout_moments = feature_moments(hold_features)
        # a fixed order of the training images: the baseline at n samples uses the first n (nested subsets)
        self._train_order = torch.randperm(len(train), generator=stream(seed, _STREAM, _BASELINE))
        self._baselines: Dict[int, Dict[str, Union[int, float]]] = {}
        self.fid_reason = ("FID not computed: turned off" if not fid else
                           "FID not computed: Inception-v3 takes 1- or 3-channel images" if x.shape[1] not in (1, 3)
                           else fid_status())
        self._fid: Optional[InceptionFID] = None
        self._fid_real = x[hold] if self.fid_reason is None else None

    # ------------------------------------------------------------ construction
    @staticmethod
    def unavailable_reason(images: torch.Tensor, labels: Any) -> Optional[str]:
        """Why these real images cannot get an evaluator (no labels, one class, a class of 1 image), else None."""
        return _unavailable_reason(_as_images(images, "images"), labels)

    @classmethod
    def try_fit(cls, images: torch.Tensor, labels: Any, **kwargs: Any) -> Tuple[Optional["ImageEvaluator"],
                                                                                 Optional[str]]:
        """(evaluator, None), or (None, reason) when the data cannot be evaluated (see `unavailable_reason`).

        Malformed arguments (wrong shape or dtype, NaN) still raise, as in `fit`."""
        reason = cls.unavailable_reason(images, labels)
        return (None, reason) if reason else (cls.fit(images, labels, **kwargs), None)

    @classmethod
    def fit(cls, images: torch.Tensor, labels: Any, *, seed: int = 0,
            cache_dir: Union[str, os.PathLike, None, bool] = None, holdout_fraction: float = 0.25,
            steps: int = 600, fid: bool = True) -> "ImageEvaluator":
        """Trains (or loads from the cache) the classifier of `images` (N, C, H, W) with integer `labels` (N,).

        `holdout_fraction` of each class is held out (at least 1 image per class). `steps` minibatches of 64 train
        the classifier (about 30 epochs of the 8x8 digits' training split). `cache_dir`: a folder, None for
        `default_cache_dir()`, False for no cache. `fid`: report Inception FID when `fid_status()` allows it.
        Raises ValueError for data `unavailable_reason` rejects and for malformed arguments.
        """
        x = _as_images(images, "images")
        reason = _unavailable_reason(x, labels)
        if reason:
            raise ValueError(f"cannot fit an image evaluator: {reason}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not isinstance(holdout_fraction, (int, float)) or not 0 < holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be a number in (0, 1), got {holdout_fraction!r}")
        raw = _as_labels(labels, x.shape[0], "labels")
        classes, y = raw.unique(return_inverse=True)
        split = _stratified_split(y, len(classes), float(holdout_fraction), seed)
        with _one_thread():
            model, path, from_cache = _trained_classifier(x, raw, y, len(classes), split, seed, steps,
                                                          float(holdout_fraction), cache_dir)
        return cls(model, x, y, classes, split, seed, fid, path, from_cache)

    # ------------------------------------------------------------ scoring
    def _run(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(class probabilities float64, penultimate features float32) of checked CPU images."""
        probs, feats = [], []
        with _one_thread(), torch.no_grad():
            for chunk in x.split(_CHUNK):
                f, logits = self._model(chunk)
                probs.append(logits.double().softmax(1))
                feats.append(f)
        return torch.cat(probs), torch.cat(feats)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features (N, FEATURES) of images shaped like the real ones."""
        return self._run(_as_images(images, "images", self._shape))[1]

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, len(classes)), columns in the order of `classes`."""
        return self._run(_as_images(images, "images", self._shape))[0]

    def _score(self, probs: torch.Tensor, feats: torch.Tensor, n_fd: int) -> Dict[str, Union[int, float]]:
        n, k = probs.shape
        confidence, predicted = probs.max(1)
        counts = torch.bincount(predicted[confidence >= CONFIDENCE], minlength=k)
        # integer test of count >= MIN_CLASS_SHARE * n (no float rounding at the boundary), and at least 1 sample
        covered = int(((counts * round(1 / MIN_CLASS_SHARE) >= n) & (counts > 0)).sum())
        share = torch.bincount(predicted, minlength=k).double() / n
        present = share > 0  # 0 log 0 = 0; the real share is > 0 for every class, so the KL is finite
        kl = float((share[present] * (share[present] / self._real_share[present]).log()).sum())
        fd = frechet_distance_from_moments(*feature_moments(feats[:n_fd]), *self._holdout_moments)
        return {"samples": n, "classes": k, "coverage": covered, "confident_fraction": float(
            (confidence >= CONFIDENCE).double().mean()), "kl": max(kl, 0.0), "fd": fd, "fd_samples": n_fd}

    def baseline(self, n_samples: int) -> Dict[str, Union[int, float]]:
        """The metrics of `n_samples` real training-split images (all of them if fewer), scored exactly like
        generated ones; FD uses min(n_samples, n_train) images against the same held-out set as `evaluate`."""
        if not isinstance(n_samples, int) or isinstance(n_samples, bool) or n_samples < 2:
            raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
        n = min(n_samples, self.n_train)
        if n not in self._baselines:
            idx = self._train_order[:n]
            self._baselines[n] = self._score(self._train_probs[idx], self._train_features[idx], n)
        return dict(self._baselines[n])

    def evaluate(self, generated_images: torch.Tensor, labels: Any = None, *,
                 fid: bool = True) -> Dict[str, Union[int, float]]:
        """Metrics of N >= 2 generated images (shaped like the real ones), as a flat dict of JSON numbers.

        A sample's class is the classifier's top class, its confidence that class's probability.

        - ``coverage`` (of ``classes``): classes holding at least 1% of the N samples (and at least 1) among the
          samples of confidence >= 0.9.
        - ``confident_fraction``: share of the samples with confidence >= 0.9.
        - ``kl``: KL(q || p) = sum_c q_c log(q_c / p_c) in nats, q the histogram of the top classes of all N samples
          (every sample counts, whatever its confidence), p the class frequencies of the real labels. Finite (every
          class has real images), 0 when the histograms agree, log(1 / p_c) when every sample falls in class c
          (2.3 for ten balanced classes); dropping one of ten balanced classes evenly gives log(10/9) = 0.105.
        - ``fd``: Fréchet distance in the penultimate features between the first ``fd_samples`` = min(N, n_train)
          generated images and the held-out real images; ``fd_baseline``: the same with ``fd_samples`` real training
          images in place of the generated ones. FD is biased upwards by small samples (on digits the baseline
          falls from about 16 at 100 images to about 2 at 1050), so only these two, at one sample size, compare.
          The baseline is no floor: real digits the classifier never saw scored 0.5-2.2x it at ~400 images.
        - ``classifier_accuracy``: the classifier's held-out accuracy (how far to trust the rest).
        - with `labels` (conditional generation; values among `classes`): ``class_accuracy_<c>``, the share of the
          samples generated for class c that the classifier puts in c, for each c among the labels, and
          ``class_accuracy_mean``, their mean over those classes.
        - ``fid``: Inception FID against the held-out real images, only when `fid_reason` is None and `fid` is true
          (the Inception network runs on the device of `generated_images`; on a CPU it takes minutes).
        """
        x = _as_images(generated_images, "generated_images", self._shape)
        if x.shape[0] < 2:
            raise ValueError(f"generated_images must hold at least 2 images, got {x.shape[0]}")
        probs, feats = self._run(x)
        metrics = self._score(probs, feats, min(x.shape[0], self.n_train))
        metrics["fd_baseline"] = self.baseline(metrics["fd_samples"])["fd"]
        metrics["classifier_accuracy"] = self.holdout_accuracy
        if labels is not None:
            metrics.update(self._class_accuracy(probs, _as_labels(labels, x.shape[0], "labels")))
        if fid and self.fid_reason is None:
            if self._fid is None:
                self._fid = InceptionFID(self._fid_real, device=generated_images.device)
            metrics["fid"] = self._fid.score(generated_images.detach())
        return metrics

    def _class_accuracy(self, probs: torch.Tensor, raw: torch.Tensor) -> Dict[str, float]:
        pos = torch.searchsorted(self.classes, raw).clamp_max(len(self.classes) - 1)
        unknown = self.classes[pos] != raw
        if unknown.any():
            raise ValueError(f"labels has values outside the real classes {self.classes.tolist()}: "
                             f"{sorted(set(raw[unknown].tolist()))}")
        hit = probs.argmax(1) == pos
        out = {f"class_accuracy_{int(self.classes[c])}": float(hit[pos == c].double().mean())
               for c in pos.unique().tolist()}
        out["class_accuracy_mean"] = sum(out.values()) / len(out)
        return out


def describe(metrics: Dict[str, Union[int, float]]) -> str:
    """One or two lines for stdout from `ImageEvaluator.evaluate`'s dict."""
    base = metrics["fd_baseline"]
    ratio = f"{metrics['fd'] / base:.2f}x, " if base > 0 else ""
    line = (f"{metrics['coverage']}/{metrics['classes']} classes covered, KL {metrics['kl']:.3f}, "
            f"FD {metrics['fd']:.3g} vs real-vs-real {base:.3g} ({ratio}{metrics['fd_samples']} images each); "
            f"{100 * metrics['confident_fraction']:.1f}% of {metrics['samples']} confidently classified; "
            f"classifier held-out accuracy {100 * metrics['classifier_accuracy']:.1f}%")
    extra = []
    per_class = {k[len("class_accuracy_"):]: v for k, v in metrics.items()
                 if k.startswith("class_accuracy_") and k != "class_accuracy_mean"}
    if per_class:
        worst = min(per_class, key=per_class.get)
        extra.append(f"conditional accuracy {100 * metrics['class_accuracy_mean']:.1f}% "
                     f"(lowest: class {worst} at {100 * per_class[worst]:.1f}%)")
    if "fid" in metrics:
        extra.append(f"FID {metrics['fid']:.3g}")
    return line + ("\n" + ", ".join(extra) if extra else "")
