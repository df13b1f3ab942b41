"""Mode-collapse metrics on 2-D Gaussian mixtures (VEEGAN protocol, Srivastava et al. 2017).

A sample is high quality (HQ) if it lies within 3 standard deviations of its
nearest mode; a mode is captured if it is the nearest mode of at least one HQ
sample. Evaluated on 2500 samples in the native geometry (ring: radius 1,
std 0.01; grid: {-4,-2,0,2,4}^2, std 0.05).
"""

from __future__ import annotations

from typing import Dict

import torch


def mode_metrics(samples: torch.Tensor, centers: torch.Tensor, std: float, n_std: float = 3.0) -> Dict[str, float]:
    samples = samples.detach().to("cpu", torch.float64)
    dist = torch.cdist(samples, centers.to(torch.float64))
    nearest_dist, nearest = dist.min(dim=1)
    hq = nearest_dist <= n_std * std
    return {"modes": int(nearest[hq].unique().numel()), "n_modes": int(centers.shape[0]),
            "hq_percent": float(hq.double().mean() * 100) if len(samples) else 0.0}
