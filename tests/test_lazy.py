"""Lazy regularization (StyleGAN2): schedule, gain and the Adam correction."""

import math

import pytest
import torch

import fastgp



def make_critic():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Softplus(), torch.nn.Linear(12, 1)).double()


def reg_grad(critic, real, backend, gain=1.0):
    pen = gain * fastgp.r1_penalty(critic, real, backend=backend)
    ps = list(critic.parameters())
    return [torch.zeros_like(p) if g is None else g
            for p, g in zip(ps, torch.autograd.grad(pen, ps, allow_unused=True))]


def accumulate(total, grads):
    return [t + g for t, g in zip(total, grads)] if total is not None else grads


@pytest.mark.parametrize("every", [1, 4, 16])
def test_lazy_accumulated_gradient(backend, every):
    """Over 2k steps: the lazily applied regularizer's accumulated gradient is k times
    the sparse one (regularizer without gain on the due steps), and on a fixed batch
    it equals applying the regularizer at every step."""
    lazy = fastgp.LazyRegularizer(every=every)
    assert lazy.gain == every
    critic = make_critic()
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 6, generator=g, dtype=torch.float64) for _ in range(2 * every)]
    lazy_total = sparse_total = None
    due_steps = []
    for step, real in enumerate(batches):
        if lazy.due(step):
            due_steps.append(step)
            lazy_total = accumulate(lazy_total, reg_grad(critic, real, backend, lazy.gain))
            sparse_total = accumulate(sparse_total, reg_grad(critic, real, backend))
    assert due_steps == [0, every]
    for a, b in zip(lazy_total, sparse_total):
        torch.testing.assert_close(a, every * b)

    fixed = batches[0]
    dense_total = lazy_total = None
    for step in range(2 * every):
        dense_total = accumulate(dense_total, reg_grad(critic, fixed, backend))
        if lazy.due(step):
            lazy_total = accumulate(lazy_total, reg_grad(critic, fixed, backend, lazy.gain))
    for a, b in zip(lazy_total, dense_total):
        torch.testing.assert_close(a, b)


def test_due_schedule():
    lazy = fastgp.LazyRegularizer(every=3)
    assert [s for s in range(10) if lazy.due(s)] == [0, 3, 6, 9]
    assert lazy.due(torch.tensor(6).item()) and not lazy.due(4)
    assert repr(lazy) == "LazyRegularizer(every=3)"
    with pytest.raises(ValueError, match="step"):
        lazy.due(-1)
    with pytest.raises(TypeError, match="step"):
        lazy.due(1.0)


@pytest.mark.parametrize("every,lr,betas", [(16, 0.0025, (0.0, 0.99)), (4, 1e-4, (0.5, 0.9)), (1, 2e-3, (0.9, 0.999))])
def test_adam_correction(every, lr, betas):
    ratio = every / (every + 1)
    want_lr = lr * every / (every + 1)
    want_betas = (math.exp(ratio * math.log(betas[0])) if betas[0] > 0 else 0.0,
                  math.exp(ratio * math.log(betas[1])))
    got_lr, got_betas = fastgp.lazy_adam_hparams(lr, betas, every)
    assert got_lr == pytest.approx(want_lr, rel=1e-12)
    assert got_betas == pytest.approx(want_betas, rel=1e-12)
    assert fastgp.LazyRegularizer(every=every).adam_hparams(lr, betas) == (got_lr, got_betas)
    torch.optim.Adam(make_critic().parameters(), lr=got_lr, betas=got_betas)  # valid Adam settings


def test_adam_correction_stylegan2_values():
    """StyleGAN2's R1 every 16 minibatches with lr 0.0025, betas (0, 0.99)."""
    lr, (b1, b2) = fastgp.lazy_adam_hparams(0.0025, (0.0, 0.99), 16)
    assert lr == pytest.approx(0.0025 * 16 / 17) and lr == pytest.approx(0.00235294117647, rel=1e-10)
    assert b1 == 0.0 and b2 == pytest.approx(0.99058546, rel=1e-7)  # exp(16/17 * ln 0.99)


def test_lazy_errors():
    for bad in (0, -2):
        with pytest.raises(ValueError, match="every"):
            fastgp.LazyRegularizer(every=bad)
    for bad in (2.0, "4", True, None):
        with pytest.raises(TypeError, match="every"):
            fastgp.LazyRegularizer(every=bad)
    with pytest.raises(ValueError, match="lr"):
        fastgp.lazy_adam_hparams(0.0, (0.0, 0.99), 4)
    for betas in ((0.9,), (0.9, 1.0), (-0.1, 0.9)):
        with pytest.raises(ValueError, match="betas"):
            fastgp.lazy_adam_hparams(1e-3, betas, 4)
