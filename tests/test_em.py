"""Expectation-maximisation (``em``): its E-step against brute force, its M-steps' closed
forms, and its fixed point, which must be a local maximum of the log joint: the gradient
vanishes there and the Hessian is negative definite, in every model that provides EM steps."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.distributions import biject_to

from inference_comparisons.methods import get_method
from inference_comparisons.runner import run_on_target
from zoo import available_models, get_model
from zoo.em import EMSteps, half_normal_scale_mode, lognormal_scale_mode
from zoo.exact.hmm import expected_counts

F64 = torch.float64


#: Hyperparameters that put the mode inside the parameter space, where its gradient must
#: vanish: under a flat Dirichlet the HMM's initial distribution peaks at a corner (the one
#: first state is all its data), and so does a transition row whose state never moved.
INTERIOR = {"hmm": dict(initial_concentration=2.0, transition_concentration=2.0)}
#: Other prior families whose M-steps differ: the half-normal scales of posteriordb's mixture.
FAMILIES = {"gmm-half_normal": ("gmm", dict(scale_prior="half_normal", scale_prior_scale=2.0))}


def _em_targets() -> dict[str, EMSteps]:
    """The posterior target of every registered model whose posterior has EM steps, and of
    the prior families in FAMILIES."""
    targets = {}
    configurations = {**{name: (name, INTERIOR.get(name, {})) for name in available_models()}, **FAMILIES}
    for key, (name, hyperparameters) in configurations.items():
        model = get_model(name, **hyperparameters)
        if "posterior" not in model.info.targets:
            continue
        target = model.target(model.simulate(40, 0).data, "posterior")
        if isinstance(target, EMSteps):
            targets[key] = target
    return targets


EM_TARGETS = _em_targets()


def test_the_mixture_the_hmm_and_both_factor_models_have_em_steps():
    assert {"gmm", "hmm", "factor_analysis", "ppca"} <= set(EM_TARGETS)


def test_expected_counts_match_enumerating_every_path():
    generator = torch.Generator().manual_seed(0)
    K, T = 3, 5
    log_initial = torch.randn(K, generator=generator, dtype=F64).log_softmax(-1)
    log_transition = torch.randn(K, K, generator=generator, dtype=F64).log_softmax(-1)
    log_emission = torch.randn(T, K, generator=generator, dtype=F64)
    initial, transitions, marginals = torch.zeros(K, dtype=F64), torch.zeros(K, K, dtype=F64), torch.zeros(T, K, dtype=F64)
    paths = list(itertools.product(range(K), repeat=T))
    log_weights = torch.stack([log_initial[p[0]] + sum(log_transition[a, b] for a, b in zip(p, p[1:]))
                               + sum(log_emission[t, z] for t, z in enumerate(p)) for p in paths])
    for path, weight in zip(paths, log_weights.softmax(0)):
        initial[path[0]] += weight
        for a, b in zip(path, path[1:]):
            transitions[a, b] += weight
        marginals[range(T), list(path)] += weight
    got = expected_counts(log_initial, log_transition, log_emission)
    for value, expected in zip(got, (initial, transitions, marginals)):
        torch.testing.assert_close(value, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("count, sum_squares", [(0.0, 0.0), (1.0, 0.01), (50.0, 30.0), (1e4, 1e-6)])
def test_the_lognormal_scale_mode_is_where_its_objective_peaks(count, sum_squares):
    loc, scale = -1.0, 0.7
    mode = lognormal_scale_mode(torch.tensor(count, dtype=F64), torch.tensor(sum_squares, dtype=F64), loc, scale)
    if count == 0 and sum_squares == 0:  # the prior alone: the log-normal's own mode
        torch.testing.assert_close(mode, torch.tensor(loc - scale ** 2, dtype=F64).exp(), rtol=1e-14, atol=0)

    def objective(sigma: torch.Tensor) -> torch.Tensor:
        return (-count * sigma.log() - sum_squares / (2 * sigma ** 2)
                + torch.distributions.LogNormal(torch.tensor(loc, dtype=F64), scale).log_prob(sigma))

    sigma = mode.clone().requires_grad_()
    (slope,) = torch.autograd.grad(objective(sigma), sigma)
    assert abs(slope.item()) * mode.item() < 1e-9 * (count + 1 + sum_squares / mode.item() ** 2)
    nearby = mode * torch.tensor([1 - 1e-4, 1 + 1e-4], dtype=F64)
    assert (objective(nearby) < objective(mode)).all()


@pytest.mark.parametrize("count, sum_squares", [(0.5, 1e-8), (1.0, 0.01), (50.0, 30.0), (1e4, 1e-6), (1.0, 1e6)])
def test_the_half_normal_scale_mode_is_where_its_objective_peaks(count, sum_squares):
    scale = 2.0
    mode = half_normal_scale_mode(torch.tensor(count, dtype=F64), torch.tensor(sum_squares, dtype=F64), scale)

    def objective(sigma: torch.Tensor) -> torch.Tensor:
        return (-count * sigma.log() - sum_squares / (2 * sigma ** 2)
                + torch.distributions.HalfNormal(torch.tensor(scale, dtype=F64)).log_prob(sigma))

    sigma = mode.clone().requires_grad_()
    (slope,) = torch.autograd.grad(objective(sigma), sigma)
    assert abs(slope.item()) * mode.item() < 1e-9 * (count + sum_squares / mode.item() ** 2 + mode.item() ** 2)
    nearby = mode * torch.tensor([1 - 1e-4, 1 + 1e-4], dtype=F64)
    assert (objective(nearby) < objective(mode)).all()


def _unconstrained_log_joint(target: EMSteps, point: dict[str, torch.Tensor]):
    """The log joint at ``point`` as a function of one flat vector of unconstrained
    coordinates (no Jacobian: the density of the natural parameters), and that vector."""
    transforms = {site: biject_to(target.priors[site].support) for site in point}
    pieces = {site: transforms[site].inv(value) for site, value in point.items()}

    def log_joint(flat: torch.Tensor) -> torch.Tensor:
        values, start = {}, 0
        for site, piece in pieces.items():
            values[site] = transforms[site](flat[start:start + piece.numel()].reshape(piece.shape))
            start += piece.numel()
        return target.log_density(values).sum()

    return log_joint, torch.cat([piece.reshape(-1) for piece in pieces.values()])


@pytest.mark.parametrize("name", sorted(EM_TARGETS))
def test_em_climbs_to_a_local_maximum_of_the_log_joint(name):
    target = EM_TARGETS[name]
    result = run_on_target(get_method("em"), target, 50_000)
    log_joint = -torch.tensor(result.losses, dtype=F64)
    assert len(log_joint) < 50_001, "EM stopped by its budget, not by its tolerance"
    assert (log_joint.diff() >= -1e-9 * log_joint.abs()[1:]).all(), "EM lowered the log joint"
    log_density, flat = _unconstrained_log_joint(target, result.draws)
    gradient = torch.autograd.functional.jacobian(log_density, flat)
    hessian = torch.autograd.functional.hessian(log_density, flat)
    assert (torch.linalg.eigvalsh(hessian) < 0).all(), "not a local maximum"
    # The Newton decrement: how far Newton's method says the log joint still is below the peak.
    decrement = 0.5 * gradient @ torch.linalg.solve(-hessian, gradient)
    assert decrement < 1e-6, f"{decrement.item():.3g} nats below the peak"
    assert result.note and result.moments  # a point estimate, with its no-spread note


def test_em_says_why_it_cannot_run():
    em = get_method("em")
    flat_prior = get_model("gmm", concentration=0.5)
    reason = em.not_applicable(flat_prior.target(flat_prior.simulate(20, 0).data, "posterior"))
    assert reason is not None and "concentration=0.5" in reason
    hmm = get_model("hmm")
    assert "fixed" in em.not_applicable(hmm.target(hmm.simulate(20, 0).data, "latent"))
