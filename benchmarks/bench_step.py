"""A full critic step: real/fake losses + gradient penalty + backward + Adam
step, for an MLP critic (toy, tabular) and a DCGAN critic.

Providers:
  floor          no penalty: the step's cost without one
  eager          the reference WGAN-GP penalty every step
  cpp/cuda/triton  fastgp.gradient_penalty on that backend every step
  lazy4, lazy16  StyleGAN2's lazy regularization with fastgp.LazyRegularizer on
                 the fastest fastgp backend: k ordinary steps plus one
                 regularization step (penalty x k, its own Adam step, Adam
                 corrected by lazy_adam_hparams); one timed call is k steps,
                 the report divides by k
  r1-eager, r1-fastgp, r1-lazy16  the same for R1 (gamma/2 ||grad D(real)||^2)
  frac50, frac25 the fastgp penalty every step on the fastest backend with
                 batch_fraction 0.5 / 0.25: only the first half / quarter of
                 the batch goes through the penalty's double backward
                 (fastgp-train --gp-batch-fraction)
  arith-*        the penalty arithmetic alone (interpolation + norm + penalty
                 forward and backward, no critic) at the step's shape, so the
                 report can say what share of a step it is

test_step_paired times the eager penalty's step and the fastest fastgp
backend's step in alternating rounds: the providers above are timed one
after another, and a machine whose speed drifts between them (a shared or
virtual machine) can shift their ratio by more than the penalty's cost; the
report judges "no slower than the hand-written penalty" on the paired rounds.
"""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch

import fastgp
from fastgp import reference

from . import providers as P
from .critics import CASES

LR, BETAS = 1e-4, (0.0, 0.9)   # WGAN-GP's Adam
GAMMA = 10.0                   # R1's gamma
STEP_PROVIDERS = ("floor", "eager", "cpp", "cuda", "triton", "lazy4", "lazy16", "r1-eager", "r1-fastgp", "r1-lazy16",
                  "frac50", "frac25", "arith-eager", "arith-cpp", "arith-cuda", "arith-triton")
FRACTIONS = {"frac50": 0.5, "frac25": 0.25}


def _fastest(device):
    fused = P.fused_providers(device)
    if not fused:
        pytest.skip("no fastgp kernel backend on this device")
    return fused[0]


def _need(name):
    if not hasattr(fastgp, name):
        pytest.skip(f"fastgp.{name} is not in this fastgp (the penalty-family issue adds it)")
    return getattr(fastgp, name)


def _reference_r1(critic, real):
    """R1 as written by hand: gradient at the real samples, zero-centered penalty
    with the common eager formula (reference.handwritten_penalty)."""
    x = real.detach().requires_grad_(True)
    out = critic(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out), create_graph=True)
    return reference.handwritten_penalty(g, weight=GAMMA / 2, center=0.0)


def _penalty(provider, device):
    """(name of the fastgp backend or None, penalty(critic, real, fake))."""
    if provider == "eager":
        return None, lambda critic, real, fake: reference.handwritten_gradient_penalty(critic, real, fake,
                                                                                       weight=P.WEIGHT)
    if provider == "r1-eager":
        return None, lambda critic, real, fake: _reference_r1(critic, real)
    if provider.startswith("r1-"):
        r1 = _need("r1_penalty")
        backend = P.BACKEND_OF[_fastest(device)]
        return backend, lambda critic, real, fake: r1(critic, real, gamma=GAMMA, backend=backend)
    if provider in FRACTIONS:
        backend, fraction = P.BACKEND_OF[_fastest(device)], FRACTIONS[provider]
        return backend, lambda critic, real, fake: fastgp.gradient_penalty(critic, real, fake, weight=P.WEIGHT,
                                                                          backend=backend, batch_fraction=fraction)
    name = _fastest(device) if provider.startswith("lazy") else provider
    why = P.unavailable(name, device)
    if why:
        pytest.skip(why)
    backend = P.BACKEND_OF[name]
    return backend, lambda critic, real, fake: fastgp.gradient_penalty(critic, real, fake, weight=P.WEIGHT,
                                                                      backend=backend)


def _critic_step(critic, opt, real, fake):
    opt.zero_grad(set_to_none=True)
    loss = critic(fake).mean() - critic(real).mean()
    return loss


def _every_step(critic, real, fake, penalty):
    opt = torch.optim.Adam(critic.parameters(), lr=LR, betas=BETAS)

    def run():
        loss = _critic_step(critic, opt, real, fake)
        if penalty is not None:
            loss = loss + penalty(critic, real, fake)
        loss.backward()
        opt.step()
        return loss.detach()

    return run


def _lazy_steps(critic, real, fake, penalty, every):
    """`every` ordinary steps and, when due, a regularization step of its own."""
    lazy = _need("LazyRegularizer")(every)
    lr, betas = _need("lazy_adam_hparams")(LR, BETAS, every)
    opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)

    def run():
        for step in range(every):
            loss = _critic_step(critic, opt, real, fake)
            loss.backward()
            opt.step()
            if lazy.due(step):
                opt.zero_grad(set_to_none=True)
                (lazy.gain * penalty(critic, real, fake)).backward()
                opt.step()
        return loss.detach()

    return run


def _arithmetic(provider, real, fake):
    """Interpolation + penalty forward and backward on a gradient-sized tensor."""
    alpha = reference.sample_alpha(real.shape[0], real)
    interp = P.interpolation(provider, real, fake, alpha)
    pen = P.penalty(provider)
    g = (torch.randn_like(real) * (real[0].numel() ** -0.5)).requires_grad_(True)

    def run():
        x_hat = interp()
        p = pen(g)
        return x_hat, torch.autograd.grad(p, g)[0]

    return run


def _check_same_penalty(provider, critic, real, fake):
    """The fastgp penalty equals the reference's at the same alpha."""
    alpha = reference.sample_alpha(real.shape[0], real)
    torch.testing.assert_close(
        fastgp.gradient_penalty(critic, real, fake, weight=P.WEIGHT, alpha=alpha, backend=P.BACKEND_OF[provider]),
        reference.gradient_penalty(critic, real, fake, weight=P.WEIGHT, alpha=alpha), rtol=1e-4, atol=1e-5)


def _case_inputs(case, device, matrix):
    """(batch, critic, real, fake) of a case, the same for every provider (seed 0)."""
    batch = case.batch_for(device.type, matrix)
    torch.manual_seed(0)
    critic = case.make().to(device)
    real = torch.randn(batch, *case.sample, device=device)
    fake = torch.randn(batch, *case.sample, device=device)
    return batch, critic, real, fake


@pytest.mark.parametrize("provider", STEP_PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_step(record, pytestconfig, environment, device, case, provider):
    matrix = environment["matrix"]
    batch, critic, real, fake = _case_inputs(case, device, matrix)

    backend, every, steps = None, 1, 1
    if provider.startswith("arith-"):
        base = provider.removeprefix("arith-")
        why = P.unavailable(base, device)
        if why:
            pytest.skip(why)
        backend = None if base == "eager" else P.BACKEND_OF[base]
        fn, every = _arithmetic(base, real, fake), None
    elif provider == "floor":
        fn, every = _every_step(critic, real, fake, None), 0
    else:
        backend, penalty = _penalty(provider, device)
        if "lazy" in provider:
            every = steps = int(provider.rsplit("lazy", 1)[1])
            fn = _lazy_steps(critic, real, fake, penalty, every)
        else:
            if provider in P.FUSED:
                _check_same_penalty(provider, critic, real, fake)
            fn = _every_step(critic, real, fake, penalty)

    rounds = pytestconfig.getoption("--bench-rounds") or (1 if matrix == "smoke" else 3 if device.type == "cpu" else 10)
    record(fn, group=f"step {case.name} B={batch}", pedantic_rounds=rounds, kind="step", model=case.name,
           batch=batch, sample=list(case.sample), provider=provider, backend=backend, penalty_every=every,
           steps_per_call=steps, params=sum(p.numel() for p in critic.parameters()), dtype="float32",
           batch_fraction=FRACTIONS.get(provider, 1.0))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_step_paired(record, pytestconfig, environment, device, case):
    """One timed call: a step with the eager penalty and a step with fastgp's on
    the fastest backend, in alternating order (eager first, then fastgp first),
    each on its own copy of the critic; every step's time goes to extra_info."""
    fused = _fastest(device)
    matrix = environment["matrix"]
    batch, critic, real, fake = _case_inputs(case, device, matrix)
    runs = {p: _every_step(copy.deepcopy(critic), real, fake, _penalty(p, device)[1]) for p in ("eager", fused)}
    times = {p: [] for p in runs}
    order = ["eager", fused]
    warm = [True]  # the warm-up call's steps are not kept

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def pair():
        for p in order:
            sync()
            t0 = time.perf_counter()
            runs[p]()
            sync()
            if not warm[0]:
                times[p].append(time.perf_counter() - t0)
        order.reverse()
        warm[0] = False

    rounds = pytestconfig.getoption("--bench-rounds") or (1 if matrix == "smoke" else 12 if device.type == "cpu" else 20)
    record(pair, group=f"step {case.name} B={batch} paired", pedantic_rounds=rounds, kind="step_paired",
           model=case.name, batch=batch, sample=list(case.sample), provider=fused, backend=P.BACKEND_OF[fused],
           paired_seconds=times, dtype="float32")
    assert all(len(t) == rounds for t in times.values()), {p: len(t) for p, t in times.items()}
    assert statistics.median(times[fused]) > 0
