"""Fréchet distance between two sets of feature vectors, and the optional Inception FID.

The Fréchet distance between the Gaussians fitted to two feature sets,

    FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

(Dowson & Landau 1982; with Inception-v3 pool features it is the FID of
Heusel et al. 2017), computed in float64 with torch only: tr (S1 S2)^(1/2) is
the sum of the square roots of the eigenvalues of A S2 A with A = S1^(1/2),
a symmetric positive semi-definite matrix similar to S1 S2, so two symmetric
eigendecompositions replace a general matrix square root and no complex
round-off appears. FD is biased upwards by finite sample sizes: compare only
distances computed from equal sample sizes.

FID needs torch-fidelity's Inception-v3 (``pip install torch-fidelity``;
torchmetrics' FID uses the same extractor, so ``torchmetrics[image]`` brings it
too) and its weights file present locally. Nothing here downloads: the
weights path is always passed explicitly, which makes torch-fidelity load that
file instead of fetching its URL; `fid_status` says why FID is unavailable.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from typing import Optional, Tuple, Union

import torch

# torch-fidelity's file name for the converted TF Inception weights (the tail of its URL_INCEPTION_V3); without an
# explicit path it downloads them to torch.hub.get_dir()/checkpoints/ under this name, where we look for them.
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_WEIGHTS_ENV = "FASTGP_INCEPTION_WEIGHTS"
_INCEPTION_FEATURES = "2048"  # the pool features FID is defined on


def feature_moments(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean, unbiased covariance) of `features` (N, d), N >= 2, in float64."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"features must have shape (N, d) with N >= 2, got {tuple(features.shape)}")
    x = features.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    mu = x.mean(0)
    centered = x - mu
    return mu, centered.T @ centered / (x.shape[0] - 1)


def _sym_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix; eigenvalues below 0 (round-off) count as 0."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance_from_moments(mu1: torch.Tensor, cov1: torch.Tensor,
                                  mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """FD between N(mu1, cov1) and N(mu2, cov2); covariances symmetric positive semi-definite."""
    mu1, mu2 = mu1.to("cpu", torch.float64), mu2.to("cpu", torch.float64)
    cov1, cov2 = cov1.to("cpu", torch.float64), cov2.to("cpu", torch.float64)
    d = mu1.shape[0] if mu1.dim() == 1 else -1
    if d < 1 or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"expected means of shape (d,) and covariances (d, d) with one d, got {tuple(mu1.shape)}, "
                         f"{tuple(cov1.shape)}, {tuple(mu2.shape)}, {tuple(cov2.shape)}")
    cov1, cov2 = (cov1 + cov1.T) / 2, (cov2 + cov2.T) / 2
    a = _sym_sqrt(cov1)
    m = a @ cov2 @ a
    eig = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0)
    diff = mu1 - mu2
    return float(diff @ diff + cov1.trace() + cov2.trace() - 2 * eig.sqrt().sum())


def frechet_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """FD between the Gaussians fitted to feature sets `x` (N, d) and `y` (M, d)."""
    return frechet_distance_from_moments(*feature_moments(x), *feature_moments(y))


# ------------------------------------------------------------- Inception FID
def inception_weights_path(weights_path: Optional[str] = None) -> str:
    """Where the Inception weights are looked for: the argument, $FASTGP_INCEPTION_WEIGHTS, or torch-fidelity's
    download location (``torch.hub.get_dir()/checkpoints``)."""
    return weights_path or os.environ.get(INCEPTION_WEIGHTS_ENV) or \
        os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_WEIGHTS_FILE)


def fid_status(weights_path: Optional[str] = None) -> Optional[str]:
    """None when FID can be computed offline, otherwise why not (one sentence). Imports nothing that downloads."""
    if importlib.util.find_spec("torch_fidelity") is None:
        if importlib.util.find_spec("torchmetrics") is not None:
            return ("FID not computed: torchmetrics is installed without torch-fidelity, whose Inception-v3 its FID "
                    "uses (pip install 'torchmetrics[image]')")
        return ("FID not computed: neither torch-fidelity nor torchmetrics[image] is installed "
                "(pip install torch-fidelity)")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception as e:  # a broken install must not stop the run
        return f"FID not computed: torch-fidelity failed to import ({type(e).__name__}: {e})"
    if "feature_extractor_weights_path" not in inspect.signature(FeatureExtractorInceptionV3.__init__).parameters:
        return ("FID not computed: this torch-fidelity cannot load local Inception weights (it would download "
                "them); upgrade torch-fidelity")
    path = inception_weights_path(weights_path)
    if not os.path.isfile(path):
        return (f"FID not computed: no Inception weights at {path} (place torch-fidelity's {INCEPTION_WEIGHTS_FILE} "
                f"there or set {INCEPTION_WEIGHTS_ENV}; nothing is downloaded)")
    return None


class InceptionFID:
    """FID of generated images against fixed real images, with torch-fidelity's Inception-v3 and local weights.

    Images are (N, C, H, W) floats in [-1, 1] with C = 1 or 3; they are turned into the uint8 RGB the extractor
    expects (it resizes to 299x299 itself). Build it only when `fid_status(weights_path)` is None.
    """

    def __init__(self, real_images: torch.Tensor, weights_path: Optional[str] = None, batch_size: int = 64,
                 device: Union[str, torch.device] = "cpu"):
        reason = fid_status(weights_path)
        if reason is not None:
            raise RuntimeError(reason)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        # an explicit path: torch-fidelity then calls torch.load on it and never load_state_dict_from_url
        path = inception_weights_path(weights_path)
        self.extractor = FeatureExtractorInceptionV3("inception-v3-compat", [_INCEPTION_FEATURES],
                                                     feature_extractor_weights_path=path)
        self.extractor.eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        self.real = feature_moments(self.features(real_images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for chunk in images.split(self.batch_size):
                rgb = chunk.expand(-1, 3, -1, -1) if chunk.shape[1] == 1 else chunk
                u8 = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
                out.append(self.extractor(u8.to(self.device))[0].to("cpu", torch.float64))
        return torch.cat(out)

    def score(self, generated: torch.Tensor) -> float:
        return frechet_distance_from_moments(*feature_moments(self.features(generated)), *self.real)
