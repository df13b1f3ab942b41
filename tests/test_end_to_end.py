"""A whole critic loss with the penalty: the critic's parameter gradients
(through PyTorch's double backward) match the reference implementation."""

import copy

import pytest
import torch

import fastgp
from fastgp import reference


def mlp_critic():
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.LeakyReLU(0.2), torch.nn.Linear(64, 64),
                               torch.nn.Tanh(), torch.nn.Linear(64, 1))


def conv_critic():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, 2, 1), torch.nn.LeakyReLU(0.2),
        torch.nn.Conv2d(8, 16, 4, 2, 1), torch.nn.GroupNorm(4, 16), torch.nn.LeakyReLU(0.2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 1))


CASES = {"mlp": (mlp_critic, (32, 2)), "conv": (conv_critic, (6, 3, 16, 16))}


def _loss_grads(critic, real, fake, alpha, penalty_fn):
    critic.zero_grad()
    loss = critic(fake).mean() - critic(real).mean() + penalty_fn(critic, real, fake, alpha)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in critic.parameters()]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kw", [dict(weight=10.0), dict(weight=10.0, one_sided=True), dict(weight=5.0, center=0.0)],
                         ids=str)
def test_critic_parameter_gradients_match_reference(backend, case, kw):
    make, shape = CASES[case]
    torch.manual_seed(0)
    critic = make().double()
    real, fake = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    alpha = torch.rand(shape[0], dtype=torch.float64)
    ref_critic = copy.deepcopy(critic)

    got_loss, got = _loss_grads(critic, real, fake, alpha, lambda c, r, f, a: fastgp.gradient_penalty(
        c, r, f, alpha=a, backend=backend, **kw))
    exp_loss, exp = _loss_grads(ref_critic, real, fake, alpha, lambda c, r, f, a: reference.gradient_penalty(
        c, r, f, alpha=a, **kw))
    torch.testing.assert_close(got_loss, exp_loss)
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e)


def test_float32_conv_critic_channels_last(backend):
    torch.manual_seed(0)
    critic = conv_critic().to(memory_format=torch.channels_last)
    real = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    fake = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    alpha = torch.rand(4)
    ref_critic = copy.deepcopy(critic)
    _, got = _loss_grads(critic, real, fake, alpha,
                         lambda c, r, f, a: fastgp.gradient_penalty(c, r, f, alpha=a, weight=10.0, backend=backend))
    _, exp = _loss_grads(ref_critic, real, fake, alpha,
                         lambda c, r, f, a: reference.gradient_penalty(c, r, f, alpha=a, weight=10.0))
    for g, e in zip(got, exp):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_return_norms_and_generator(backend):
    critic = mlp_critic()
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    p1, n1 = fastgp.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3),
                                     return_norms=True, backend=backend)
    p2 = fastgp.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3), backend=backend)
    torch.testing.assert_close(p1, p2)
    assert n1.shape == (16,) and not n1.requires_grad and (n1 > 0).all()


def test_penalty_does_not_train_the_generator(backend):
    critic = mlp_critic()
    gen = torch.nn.Linear(2, 2)
    fake = gen(torch.randn(8, 2))
    fastgp.gradient_penalty(critic, torch.randn(8, 2), fake, backend=backend).backward()
    assert gen.weight.grad is None
