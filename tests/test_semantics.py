"""The per-sample semantics that hand-written penalties get wrong."""

import pytest
import torch

import fastgp
from fastgp import reference


def wrong_whole_batch_norm(g):
    return (g.norm() - 1) ** 2


def wrong_dim1_norm(g):
    return ((g.norm(2, dim=1) - 1) ** 2).mean()


def test_norm_is_per_sample_over_all_non_batch_dims(backend):
    g = torch.randn(5, 3, 4, 6, dtype=torch.float64)
    penalty, norms = fastgp.penalty_from_grads(g, return_norms=True, backend=backend)
    expected_norms = torch.stack([g[i].flatten().norm() for i in range(5)])
    torch.testing.assert_close(norms, expected_norms)
    torch.testing.assert_close(penalty, ((expected_norms - 1) ** 2).mean())
    # The two classic bugs give other numbers on the same input.
    assert not torch.allclose(penalty, wrong_whole_batch_norm(g))
    assert not torch.allclose(penalty, wrong_dim1_norm(g))


def test_alpha_is_one_number_per_sample(backend):
    torch.manual_seed(0)
    real, fake = torch.randn(64, 3, 4, 4), torch.randn(64, 3, 4, 4)
    x = fastgp.interpolate(real, fake, generator=torch.Generator().manual_seed(1), backend=backend)
    # Recover each sample's alpha from one element and check it explains the whole sample.
    a = (x - fake) / (real - fake)
    per_sample = a.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample), rtol=1e-3, atol=1e-3)
    assert per_sample[:, 0].std() > 0.1, "one alpha for the whole batch"
    assert ((per_sample[:, 0] >= 0) & (per_sample[:, 0] <= 1)).all()


def test_default_matches_the_hand_written_drop_in(backend):
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    real, fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    alpha = torch.rand(8, 1, 1, 1)

    x = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(x), x, torch.ones(8, 1), create_graph=True)
    hand_written = ((g.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    ours = fastgp.gradient_penalty(critic, real, fake, alpha=alpha, backend=backend)
    torch.testing.assert_close(ours, hand_written)


@pytest.mark.parametrize("center,power,one_sided", [(1.0, 2.0, False), (0.0, 2.0, False), (1.0, 2.0, True),
                                                    (0.0, 6.0, False), (1.0, 1.0, False), (0.5, 3.0, True)])
def test_zero_gradient_rows_are_finite(backend, center, power, one_sided):
    g = torch.randn(4, 7, dtype=torch.float64)
    g[1] = 0
    g[3] = 0
    g.requires_grad_(True)
    penalty, norms = fastgp.penalty_from_grads(g, center=center, power=power, one_sided=one_sided,
                                               return_norms=True, backend=backend)
    (dg,) = torch.autograd.grad(penalty, g)
    assert torch.isfinite(penalty) and torch.isfinite(dg).all()
    assert norms[1] == 0 and norms[3] == 0
    assert (dg[1] == 0).all() and (dg[3] == 0).all()


def test_critic_ignoring_part_of_the_batch(backend):
    class HalfCritic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(6, 1)

        def forward(self, x):
            out = self.lin(x)
            return torch.cat([out[:2], out[2:].detach() * 0])  # samples 2.. have zero gradient

    critic = HalfCritic()
    real, fake = torch.randn(4, 6), torch.randn(4, 6)
    penalty = fastgp.gradient_penalty(critic, real, fake, backend=backend)
    penalty.backward()
    assert torch.isfinite(penalty)
    # The bias does not enter the input gradient of a linear critic, so it gets no gradient.
    assert critic.lin.weight.grad is not None and torch.isfinite(critic.lin.weight.grad).all()


def test_reference_is_nan_free_at_zero():
    g = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    penalty, _ = reference.penalty_from_grads([g])
    (dg,) = torch.autograd.grad(penalty, g)
    assert penalty.item() == 1.0 and (dg == 0).all()
