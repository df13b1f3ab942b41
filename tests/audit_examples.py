"""Hand-written gradient penalties in the styles GAN codebases use, correct and buggy,
for tests/test_audit.py. Each buggy one has exactly one bug, named in its docstring
by the code the audit must report."""

import numpy as np
import torch

import fastgp


def _alpha(real):
    """One alpha per sample, shaped to broadcast: (B, 1, ..., 1)."""
    return torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)


def _input_grad(critic, x):
    out = critic(x)
    (g,) = torch.autograd.grad(outputs=out, inputs=x, grad_outputs=torch.ones_like(out), create_graph=True,
                               retain_graph=True)
    return g


# ------------------------------------------------------------------ correct
def wgan_gp(critic, real, fake):
    """Two-sided, lambda 10, mean: the WGAN-GP paper's penalty (flatten, then norm per sample)."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x)
    g = g.view(g.size(0), -1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def wgan_gp_expand(critic, real, fake):
    """Two-sided, lambda 1: alpha expanded to the sample and viewed back (improved-WGAN ports)."""
    b = real.size(0)
    alpha = torch.rand(b, 1, device=real.device)
    alpha = alpha.expand(b, real.nelement() // b).contiguous().view(real.size())
    interpolates = alpha * real.detach() + (1 - alpha) * fake.detach()
    interpolates.requires_grad_(True)
    disc = critic(interpolates)
    gradients = torch.autograd.grad(outputs=disc, inputs=interpolates, grad_outputs=torch.ones(disc.size()),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    return ((gradients.norm(2, dim=1) - 1) ** 2).mean()


def wgan_gp_eps_sqrt(critic, real, fake):
    """Two-sided, lambda 10: the norm as sqrt(sum(g^2) + 1e-12), safe at zero."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).view(real.size(0), -1)
    norms = torch.sqrt(torch.sum(g ** 2, dim=1) + 1e-12)
    return 10.0 * ((norms - 1) ** 2).mean()


def wgan_gp_image_only(critic, real, fake):
    """Two-sided, lambda 10, with alpha hard-wired to image batches (B, 1, 1, 1)."""
    alpha = torch.tensor(np.random.random((real.size(0), 1, 1, 1)), dtype=real.dtype)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def wgan_lp(critic, real, fake):
    """One-sided (WGAN-LP), lambda 10, mean; interpolated with torch.lerp."""
    x = torch.lerp(fake.detach(), real.detach(), _alpha(real)).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * torch.clamp(g.norm(2, dim=1) - 1, min=0).pow(2).mean()


def zero_centered(critic, real, fake):
    """Zero-centered on interpolates, gamma/2 = 5, written as a sum of squares."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x)
    return 5.0 * g.pow(2).reshape(g.shape[0], -1).sum(1).mean()


def wgan_div(critic, real, fake):
    """Zero-centered, power 6, weight 2 (the WGAN-div form k * ||g||^p)."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x)
    return 2.0 * (g.view(g.size(0), -1).pow(2).sum(1) ** 3).mean()


def wgan_gp_sum(critic, real, fake):
    """Two-sided, lambda 10, summed over the batch."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).sum()


def fastgp_penalty(critic, real, fake):
    """fastgp itself, lambda 10."""
    return fastgp.gradient_penalty(critic, real, fake, weight=10.0)


# ------------------------------------------------------------------- buggy
def whole_batch_norm(critic, real, fake):
    """whole-batch-norm: gradients.norm(2) without dim, one norm for the batch."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x)
    return 10.0 * ((g.norm(2) - 1) ** 2).mean()


def norm_dim1(critic, real, fake):
    """partial-norm: norm(2, dim=1) straight on the 4-D gradient (a norm per pixel)."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def squares_mean(critic, real, fake):
    """partial-norm: a zero-centered penalty as the mean of g^2 over all elements,
    so the weight silently shrinks with the sample's size."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x)
    return 10.0 * g.pow(2).mean()


def one_alpha(critic, real, fake):
    """shared-alpha: torch.rand(1), one alpha for the whole batch."""
    alpha = torch.rand(1, device=real.device)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def fixed_alpha(critic, real, fake):
    """shared-alpha: the midpoint, alpha = 0.5 for every sample."""
    x = (0.5 * real + 0.5 * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def gaussian_alpha(critic, real, fake):
    """not-interpolated: alpha ~ N(0, 1) per sample, often outside [0, 1]."""
    alpha = torch.randn(real.shape[0], *([1] * (real.dim() - 1)))
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def alpha_per_element(critic, real, fake):
    """not-interpolated: torch.rand_like(real), one alpha per element (points off the segments)."""
    alpha = torch.rand_like(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def sqrt_sum_squares(critic, real, fake):
    """nan-at-zero: torch.sqrt(torch.sum(g ** 2, dim=1)), infinite slope at 0."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).view(real.size(0), -1)
    return 10.0 * ((torch.sqrt(torch.sum(g ** 2, dim=1)) - 1) ** 2).mean()


def no_create_graph(critic, real, fake):
    """no-graph: torch.autograd.grad without create_graph."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return 10.0 * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def detached_grad(critic, real, fake):
    """no-graph: the gradient detached (e.g. to log it) before the penalty."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    g = _input_grad(critic, x).detach()
    return 10.0 * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def fake_not_detached(critic, real, fake):
    """gradient-leak: fake used as given (correct only if every caller passes fake.detach())."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def grad_of_mean(critic, real, fake):
    """unrecognized: the gradient of critic(x).mean(), i.e. each sample's gradient divided by B."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x).mean(), x, create_graph=True)
    return 10.0 * ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


# ------------------------------------------------------ cannot be audited
def needs_cuda(critic, real, fake):
    """Hard-wired to the GPU."""
    alpha = torch.rand(real.size(0), 1, 1, 1).cuda()
    x = (alpha * real.cuda() + (1 - alpha) * fake.cuda()).requires_grad_(True)
    g = _input_grad(critic, x).flatten(1)
    return 10.0 * ((g.norm(2, dim=1) - 1) ** 2).mean()


def calc_gradient_penalty(netD, real_data, fake_data, device, lambda_gp=10.0):
    """Needs a fourth argument: the audit cannot call it as fn(critic, real, fake)."""
    return lambda_gp * wgan_gp_expand(netD, real_data.to(device), fake_data.to(device))


def returns_tuple(critic, real, fake):
    """Returns (penalty, norms)."""
    alpha = _alpha(real)
    x = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    norms = _input_grad(critic, x).flatten(1).norm(2, dim=1)
    return ((norms - 1) ** 2).mean(), norms.detach()
