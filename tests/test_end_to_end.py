"""A whole critic loss with the penalty, on every (backend, device) of the
matrix: the critic's parameter gradients (through PyTorch's double backward)
match the reference implementation."""

import copy

import pytest
import torch

import fastgp
from fastgp import reference

from conftest import make_alpha, make_tensor


def mlp_critic():
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.LeakyReLU(0.2), torch.nn.Linear(64, 64),
                               torch.nn.Tanh(), torch.nn.Linear(64, 1))


def conv_critic(size=16):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 16, 4, 2, 1), torch.nn.GroupNorm(4, 16), torch.nn.LeakyReLU(0.2),
        torch.nn.Flatten(), torch.nn.Linear(16 * (size // 4) ** 2, 1))


class TwoInputCritic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(12, 8), torch.nn.Linear(5, 8)
        self.out = torch.nn.Linear(8, 1)

    def forward(self, x, y):
        return self.out(torch.tanh(self.a(x.flatten(1)) + self.b(y)))


CASES = {"mlp": (mlp_critic, [(32, 2)]), "conv": (lambda: conv_critic(8), [(6, 3, 8, 8)]),
         "two_inputs": (TwoInputCritic, [(5, 3, 2, 2), (5, 5)])}


def _loss_grads(critic, real, fake, alpha, penalty_fn):
    critic.zero_grad()
    loss = penalty_fn(critic, real, fake, alpha)
    if not isinstance(real, tuple):
        loss = loss + critic(fake).mean() - critic(real).mean()
    loss.backward()
    return loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in critic.parameters()]


def _reference_penalty(critic, real, fake, alpha, **kw):
    """reference.gradient_penalty, extended to a multi-input critic (one alpha, one norm)."""
    if not isinstance(real, tuple):
        return reference.gradient_penalty(critic, real, fake, alpha=alpha, **kw)
    xs = tuple(reference.interpolate(r, f, alpha).requires_grad_(True) for r, f in zip(real, fake))
    out = critic(*xs)
    grads = torch.autograd.grad(out, xs, torch.ones_like(out), create_graph=True)
    return reference.penalty_from_grads(list(grads), **kw)[0]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kw", [dict(weight=10.0), dict(weight=10.0, one_sided=True), dict(weight=5.0, center=0.0)],
                         ids=str)
def test_critic_parameter_gradients_match_reference(backend, device, case, kw):
    make, shapes = CASES[case]
    torch.manual_seed(0)
    critic = make().double().to(device)
    real = tuple(make_tensor(s, torch.float64, seed=1 + k, device=device) for k, s in enumerate(shapes))
    fake = tuple(make_tensor(s, torch.float64, seed=11 + k, device=device) for k, s in enumerate(shapes))
    real, fake = (real, fake) if len(shapes) > 1 else (real[0], fake[0])
    alpha = make_alpha(shapes[0][0], torch.float64, device)
    ref_critic = copy.deepcopy(critic)

    got_loss, got = _loss_grads(critic, real, fake, alpha, lambda c, r, f, a: fastgp.gradient_penalty(
        c, r, f, alpha=a, backend=backend, **kw))
    exp_loss, exp = _loss_grads(ref_critic, real, fake, alpha, lambda c, r, f, a: _reference_penalty(c, r, f, a, **kw))
    torch.testing.assert_close(got_loss, exp_loss)
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_float32_conv_critic(backend, device, memory_format):
    """float32: the critic's own arithmetic is the same on both sides, so only the
    penalty's differs: norms of 768-element rows (float32 accumulation, any order)."""
    torch.manual_seed(0)
    critic = conv_critic().to(device=device, memory_format=memory_format)
    real = make_tensor((4, 3, 16, 16), seed=1, device=device).contiguous(memory_format=memory_format)
    fake = make_tensor((4, 3, 16, 16), seed=2, device=device).contiguous(memory_format=memory_format)
    alpha = make_alpha(4, device=device)
    ref_critic = copy.deepcopy(critic)
    got_loss, got = _loss_grads(critic, real, fake, alpha,
                                lambda c, r, f, a: fastgp.gradient_penalty(c, r, f, alpha=a, weight=10.0,
                                                                           backend=backend))
    exp_loss, exp = _loss_grads(ref_critic, real, fake, alpha,
                                lambda c, r, f, a: reference.gradient_penalty(c, r, f, alpha=a, weight=10.0))
    torch.testing.assert_close(got_loss, exp_loss, rtol=1e-5, atol=1e-5)
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_return_norms_and_generator(backend, device):
    critic = mlp_critic().to(device)
    real, fake = make_tensor((16, 2), seed=1, device=device), make_tensor((16, 2), seed=2, device=device)
    gen = lambda: torch.Generator(device).manual_seed(3)  # noqa: E731
    p1, n1 = fastgp.gradient_penalty(critic, real, fake, generator=gen(), return_norms=True, backend=backend)
    p2 = fastgp.gradient_penalty(critic, real, fake, generator=gen(), backend=backend)
    torch.testing.assert_close(p1, p2)
    assert n1.shape == (16,) and not n1.requires_grad and (n1 > 0).all()


def test_penalty_does_not_train_the_generator(backend, device):
    critic = mlp_critic().to(device)
    gen = torch.nn.Linear(2, 2).to(device)
    fake = gen(make_tensor((8, 2), device=device))
    fastgp.gradient_penalty(critic, make_tensor((8, 2), seed=1, device=device), fake, backend=backend).backward()
    assert gen.weight.grad is None
