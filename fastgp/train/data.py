"""Training data: toy 2-D mixtures, CSV tables, image folders, scikit-learn digits.

A dataset hands out global batch number ``index`` deterministically
(``batch(index, batch_size)``), so processes under torchrun slice the same
global batch and a resumed run sees the batches a straight run would.
Nothing is downloaded.
"""

from __future__ import annotations

import csv
import math
import os
from typing import List, Optional, Tuple

import torch

from .config import ConfigError, TrainConfig
from .seeding import DATA, stream

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class Dataset:
    """Base: `shape` of one sample; `to_native` undoes the training-time normalization."""

    kind: str
    shape: Tuple[int, ...]

    def batch(self, index: int, batch_size: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def to_native(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def from_native(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ------------------------------------------------------------------ toys
class ToyMixture(Dataset):
    """Isotropic Gaussians at `centers` (native units); trained on centers / scale.

    ring: 8 modes on the unit circle, std 0.01; grid: 25 modes on {-4,-2,0,2,4}^2,
    std 0.05 -- the geometry of the VEEGAN/PacGAN evaluations. The grid is
    trained divided by 2.828 as in the WGAN-GP toy code.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.shape = (2,)
        if kind == "ring":
            angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)  # 8 distinct modes, no endpoint
            self.centers = torch.stack([angles.cos(), angles.sin()], dim=1)
            self.std, self.scale = 0.01, 1.0
        elif kind == "grid":
            axis = torch.arange(-4, 5, 2, dtype=torch.float64)
            self.centers = torch.cartesian_prod(axis, axis)
            self.std, self.scale = 0.05, 2.828
        else:
            raise ValueError(kind)

    def batch(self, index, batch_size, seed):
        g = stream(seed, DATA, index)
        which = torch.randint(len(self.centers), (batch_size,), generator=g)
        x = self.centers[which] + self.std * torch.randn(batch_size, 2, generator=g, dtype=torch.float64)
        return (x / self.scale).float()

    def to_native(self, x):
        return x * self.scale

    def from_native(self, x):
        return x / self.scale


class SwissRoll(Dataset):
    """scikit-learn's make_swiss_roll (noise 0.25) on dims (0, 2), divided by 7.5 as in the WGAN-GP toy code."""

    kind, shape, noise, scale = "swissroll", (2,), 0.25, 7.5

    def batch(self, index, batch_size, seed):
        g = stream(seed, DATA, index)
        t = 1.5 * math.pi * (1 + 2 * torch.rand(batch_size, generator=g, dtype=torch.float64))
        x = torch.stack([t * t.cos(), t * t.sin()], dim=1)
        x = x + self.noise * torch.randn(batch_size, 2, generator=g, dtype=torch.float64)
        return (x / self.scale).float()

    def to_native(self, x):
        return x * self.scale

    def from_native(self, x):
        return x / self.scale


# ----------------------------------------------------------- finite sets
class TensorDataset(Dataset):
    """A finite dataset in memory; each epoch is a seeded permutation, the last partial batch dropped.

    A labelled one also holds `labels` (int64, one per sample) and `classes` (their names in label order); an
    unlabelled one may say why it has none in `unlabelled_reason`."""

    def __init__(self, kind: str, data: torch.Tensor, labels: Optional[torch.Tensor] = None,
                 classes: Optional[List[str]] = None, unlabelled_reason: Optional[str] = None):
        self.kind, self.data, self.shape = kind, data, tuple(data.shape[1:])
        self.labels, self.classes, self.unlabelled_reason = labels, classes, unlabelled_reason
        self._perm: Optional[Tuple[int, torch.Tensor]] = None

    def __len__(self):
        return self.data.shape[0]

    def check_batch_size(self, batch_size: int) -> None:
        if len(self) < batch_size:
            raise ConfigError(f"the {self.kind} dataset has {len(self)} samples, fewer than batch_size={batch_size}; "
                              "lower --batch-size")

    def indices(self, index: int, batch_size: int, seed: int) -> torch.Tensor:
        per_epoch = len(self) // batch_size
        epoch, pos = divmod(index, per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, torch.randperm(len(self), generator=stream(seed, DATA, epoch)))
        return self._perm[1][pos * batch_size:(pos + 1) * batch_size]

    def batch(self, index, batch_size, seed):
        return self.data[self.indices(index, batch_size, seed)]

    def batch_labels(self, index: int, batch_size: int, seed: int) -> torch.Tensor:
        """The labels of batch(index, ...), sample for sample."""
        return self.labels[self.indices(index, batch_size, seed)]

    def class_examples(self, per_class: int, seed: int) -> torch.Tensor:
        """per_class samples of each class, class after class (fewer than per_class repeat), for pictures."""
        order = torch.randperm(len(self), generator=stream(seed, DATA, -1))
        rows = []
        for c in range(len(self.classes)):
            members = order[self.labels[order] == c]
            rows.append(self.data[members[torch.arange(per_class) % len(members)]])
        return torch.cat(rows)


class TableDataset(TensorDataset):
    """Numeric CSV columns, standardized per column; `to_native` restores the units."""

    def __init__(self, data: torch.Tensor, columns: List[str], mean: torch.Tensor, std: torch.Tensor,
                 labels: Optional[torch.Tensor] = None, classes: Optional[List[str]] = None):
        super().__init__("csv", data, labels, classes)
        self.columns, self.mean, self.std = columns, mean, std

    def to_native(self, x):
        return x * self.std.to(x) + self.mean.to(x)

    def from_native(self, x):
        return (x - self.mean.to(x)) / self.std.to(x)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_rows(path: str) -> List[Tuple[int, List[str]]]:
    """(line number, cells) of every non-blank row; any unreadable file becomes a ConfigError naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            return [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise ConfigError(f"the CSV file {path!r} is not UTF-8 text (byte {e.object[e.start:e.start + 1]!r} at "
                          f"offset {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise ConfigError(f"the CSV file {path!r} has a field longer than the csv module's limit "
                              f"({csv.field_size_limit()} characters): not a table of numbers") from None
        raise ConfigError(f"the CSV file {path!r} cannot be parsed as CSV: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read the CSV file {path!r}: {e.strerror or e}") from None


def _class_order(names) -> List[str]:
    """Class names sorted as numbers when they all are numbers (2 before 10), else as text."""
    names = sorted(set(names))
    return sorted(names, key=float) if all(_is_number(n) for n in names) else names


def load_csv(path: str, label_column: Optional[str] = None) -> TableDataset:
    """Keeps the columns whose every non-empty cell is a number; rows with an empty kept cell are dropped.
    With `label_column`, that column holds each row's class (any text) and is not a feature."""
    if not os.path.isfile(path):
        raise ConfigError(f"data_path {path!r} is not a file (data=csv needs a CSV file)")
    numbered = _read_rows(path)
    if not numbered:
        raise ConfigError(f"the CSV file {path!r} is empty")
    lines, rows = [n for n, _ in numbered], [r for _, r in numbered]
    has_header = not all(_is_number(c) for c in rows[0] if c.strip())
    header = [c.strip() or f"column{i}" for i, c in enumerate(rows[0])] if has_header else \
        [f"column{i}" for i in range(len(rows[0]))]
    body, lines = (rows[1:], lines[1:]) if has_header else (rows, lines)
    width = len(header)
    if any(len(r) != width for r in body):
        bad = next(i for i, r in enumerate(body) if len(r) != width)
        raise ConfigError(f"the CSV file {path!r} has {width} columns in its first row but {len(body[bad])} in "
                          f"line {lines[bad]}")
    label = None
    if label_column is not None:
        if label_column not in header:
            raise ConfigError(f"--label-column {label_column!r} is not a column of {path!r}; its columns are "
                              f"{', '.join(map(repr, header))}" + ("" if has_header else " (it has no header row)"))
        label = header.index(label_column)
    keep = [j for j in range(width) if j != label and all(_is_number(r[j]) or not r[j].strip() for r in body)
            and any(r[j].strip() for r in body)]
    if not keep:
        raise ConfigError(f"the CSV file {path!r} has no numeric column" +
                          (f" besides the label column {label_column!r}" if label is not None else ""))
    values, names = [], []
    for line, r in zip(lines, body):
        if not all(r[j].strip() for j in keep) or (label is not None and not r[label].strip()):
            continue
        row = [float(r[j]) for j in keep]
        bad = next((j for j, v in zip(keep, row) if not math.isfinite(v)), None)
        if bad is not None:  # NaN or inf would surface later as a "non-finite loss"
            raise ConfigError(f"the CSV file {path!r} has a non-finite value {r[bad].strip()!r} in line {line}, "
                              f"column {header[bad]!r}; remove or fill it")
        values.append(row)
        if label is not None:
            names.append(r[label].strip())
    if len(values) < 2:
        raise ConfigError(f"the CSV file {path!r} has fewer than 2 complete numeric rows")
    x = torch.tensor(values, dtype=torch.float64)
    mean, std = x.mean(0), x.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant column stays constant
    labels, classes = None, None
    if label is not None:
        classes = _class_order(names)
        if len(classes) > len(names) // 2:  # most rows alone in their class: a measurement, not a label
            raise ConfigError(f"--label-column {label_column!r} has {len(classes)} distinct values in {len(names)} "
                              "rows: a class label repeats (is it a continuous column?)")
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[n] for n in names], dtype=torch.int64)
    return TableDataset(((x - mean) / std).float(), [header[j] for j in keep], mean.float(), std.float(), labels,
                        classes)


def _image_files(folder: str) -> List[str]:
    files = []
    for root, _, names in os.walk(folder):
        files += [os.path.join(root, n) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(files)


# Pillow modes whose samples are not 8-bit, with the value that means full intensity. convert("L"/"RGB") clips
# them to 0..255 (a 16-bit image turns almost white, a float one black), so they are rescaled here instead.
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def _unit_range(im, path: str):
    """A high-bit-depth grayscale image as a float32 mode-F image in [0, 1], or None for an 8-bit mode."""
    import numpy as np
    from PIL import Image

    mode = im.mode
    if mode in SIXTEEN_BIT:
        scale = 65535.0
    elif mode == "I":  # 32-bit integers: a 16-bit source (older Pillow, 16-bit TIFF) has a known range
        bits = (getattr(im, "tag_v2", None) or {}).get(258, (16,) if im.format == "PNG" else None)
        if not bits or tuple(bits)[0] != 16:
            raise ConfigError(f"image {path!r} has 32-bit integer samples (Pillow mode 'I') whose full-scale value "
                              "is not defined; save it with 8 or 16 bits per sample")
        scale = 65535.0
    elif mode == "F":
        scale = 1.0
    elif mode.startswith(("I;", "F;")):
        raise ConfigError(f"image {path!r} has Pillow mode {mode!r}, which fastgp-train cannot rescale; save it "
                          "with 8 or 16 unsigned bits per sample")
    else:
        return None
    a = np.asarray(im, dtype=np.float64) / scale
    finite = np.isfinite(a)
    if not finite.all() or a.min() < 0 or a.max() > 1:
        seen = f"values in [{a[finite].min() * scale:g}, {a[finite].max() * scale:g}]" if finite.any() else "no value"
        raise ConfigError(f"image {path!r} (Pillow mode {mode!r}) has {seen}"
                          f"{'' if finite.all() else ' and NaN or inf'}; float images are read as [0, 1] and 16-bit "
                          "ones as [0, 65535]")
    return Image.fromarray(a.astype(np.float32), mode="F")


def _square(im, size: int):
    from PIL import Image

    w, h = im.size
    side = min(w, h)
    im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return im.resize((size, size), Image.BICUBIC)


def _load_image(path: str, size: int, channels: int) -> torch.Tensor:
    """One file as a (channels, size, size) float32 tensor in [-1, 1]."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        unit = _unit_range(im, path)
        if unit is None:  # 8-bit: Pillow converts the mode (palette, alpha, CMYK ...)
            im = _square(im.convert("RGB" if channels == 3 else "L"), size)
            t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(size, size, channels)
            return t.permute(2, 0, 1).float() / 127.5 - 1
        a = torch.from_numpy(np.array(_square(unit, size), dtype=np.float32)).clamp(0, 1)  # bicubic overshoots
        return (a * 2 - 1).unsqueeze(0).expand(channels, size, size)


def _class_folders(folder: str) -> Tuple[List[str], List[str], List[int]]:
    """(class names, image files, their labels) of a folder with one sub-folder of images per class."""
    loose = [n for n in sorted(os.listdir(folder)) if n.lower().endswith(IMAGE_SUFFIXES)
             and os.path.isfile(os.path.join(folder, n))]
    if loose:
        raise ConfigError(f"--conditional: {folder!r} holds images outside any class folder ({loose[0]!r}, ...); "
                          "put every image in the sub-folder of its class")
    classes = sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)) and not n.startswith("."))
    if len(classes) < 2:
        raise ConfigError(f"--conditional: {folder!r} has {len(classes)} class folder(s) "
                          f"{classes if classes else ''}; a conditional GAN needs one sub-folder of images per "
                          "class and at least 2 classes")
    files, labels = [], []
    for i, name in enumerate(classes):
        found = _image_files(os.path.join(folder, name))
        if not found:
            raise ConfigError(f"--conditional: the class folder {os.path.join(folder, name)!r} has no image files "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [i] * len(found)
    return classes, files, labels


def _folder_labels(folder: str, files: List[str]):
    """(classes, labels, None) when every image lies under one of >= 2 sub-folders of `folder` (the classes, sorted
    like a conditional run's), else (None, None, why not). The labels of an unconditional run, for evaluation."""
    tops = [os.path.relpath(f, folder).split(os.sep, 1) for f in files]
    loose = [t[0] for t in tops if len(t) == 1]
    if loose:
        return None, None, (f"{len(loose)} of its {len(files)} images lie outside class sub-folders ({loose[0]!r}"
                            f"{', ...' if len(loose) > 1 else ''}); labelled images need one sub-folder per class")
    classes = sorted({t[0] for t in tops})
    if len(classes) < 2:
        return None, None, f"all its images are in one sub-folder ({classes[0]!r}): a single class"
    index = {c: i for i, c in enumerate(classes)}
    return classes, torch.tensor([index[t[0]] for t in tops], dtype=torch.int64), None


def load_image_folder(folder: str, size: int, channels: int, conditional: bool = False) -> TensorDataset:
    """Every image file under `folder` (recursively), center-cropped square, resized, scaled to [-1, 1].
    Conditional: one sub-folder per class, the folder names are the classes. Unconditional: the same labels when
    the folder is laid out that way (the image-quality metrics use them), in the order of the sorted file paths."""
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError("data=images needs Pillow: pip install 'fastgp[train]'") from None
    if not os.path.isdir(folder):
        raise ConfigError(f"data_path {folder!r} is not a folder (data=images needs a folder of image files)")
    classes, labels, why = None, None, None
    if conditional:
        classes, files, found = _class_folders(folder)
        labels = torch.tensor(found, dtype=torch.int64)
    else:
        files = _image_files(folder)
    if not files:
        raise ConfigError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {folder!r}")
    if not conditional:
        classes, labels, why = _folder_labels(folder, files)
    out = torch.empty(len(files), channels, size, size)
    for i, path in enumerate(files):
        try:
            out[i] = _load_image(path, size, channels)
        except ConfigError:
            raise
        except Image.DecompressionBombError as e:
            raise ConfigError(f"image {path!r} is refused by Pillow's decompression-bomb guard ({e}); shrink it, "
                              "or raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted") from None
        except Exception as e:  # any decoder failure (OSError, SyntaxError, ValueError ...) is a bad file
            raise ConfigError(f"cannot read image {path!r}: {type(e).__name__}: {e}") from None
    return TensorDataset("images", out, labels, classes, why)


def load_digits() -> TensorDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, shipped inside the package)."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise ConfigError("data=digits needs scikit-learn: pip install 'fastgp[train]'") from None
    digits = sk_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)  # values 0..16
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    return TensorDataset("digits", (images / 8 - 1).unsqueeze(1), labels, [str(d) for d in range(10)])


def build_dataset(cfg: TrainConfig) -> Dataset:
    if cfg.data in ("ring", "grid"):
        return ToyMixture(cfg.data)
    if cfg.data == "swissroll":
        return SwissRoll()
    if cfg.data == "csv":
        ds = load_csv(cfg.data_path, cfg.label_column)
    elif cfg.data == "images":
        ds = load_image_folder(cfg.data_path, cfg.image_size, cfg.channels, cfg.conditional)
    else:
        ds = load_digits()
    ds.check_batch_size(cfg.batch_size)
    if cfg.conditional and cfg.classes is not None and cfg.classes != ds.classes:
        raise ConfigError(f"the data's classes {ds.classes} are not the run's classes {cfg.classes} (option "
                          "'classes', from the checkpoint when resuming): the labels would mean other classes")
    return ds


def shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's contiguous part of a global batch."""
    n = x.shape[0] // world
    return x[rank * n:(rank + 1) * n]


def real_samples(ds: Dataset, n: int, seed: int) -> torch.Tensor:
    """n real samples for pictures and metrics (from an unused batch range; finite sets: the first n of a pass)."""
    if isinstance(ds, TensorDataset):
        return ds.data[torch.randperm(len(ds), generator=stream(seed, DATA, -1))[:n]]
    return ds.batch(-1, n, seed)

