"""fastgp: fast, correct gradient penalties for GAN critics.

    loss_D = D(fake).mean() - D(real).mean() + fastgp.gradient_penalty(D, real, fake, weight=10.0)
"""

from . import reference
from ._ext import FallbackWarning
from .audit import AuditReport, audit
from .backends import available_backends, select_backend
from .family import dragan_penalty, r1_penalty, r2_penalty
from .functional import gradient_penalty, grad_norms, input_gradients, interpolate, penalty_from_grads
from .info import __version__, info
from .lazy import LazyRegularizer, lazy_adam_hparams

__all__ = [
    "gradient_penalty",
    "r1_penalty",
    "r2_penalty",
    "dragan_penalty",
    "interpolate",
    "penalty_from_grads",
    "grad_norms",
    "input_gradients",
    "LazyRegularizer",
    "lazy_adam_hparams",
    "info",
    "available_backends",
    "select_backend",
    "FallbackWarning",
    "audit",
    "AuditReport",
    "reference",
    "__version__",
]
