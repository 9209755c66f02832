"""Data-augmentation Gibbs (``gibbs``): the two pieces a target gives it, checked against
enumeration, and the sampler against the stored gold standards (in test_convergence.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

import zoo
from inference_comparisons.methods import get_method
from zoo.augmentation import DataAugmentation

F64 = torch.float64
#: Standard errors a Monte Carlo frequency may stray from its probability.
Z = 5.0


def _augmented(name: str, num_datapoints: int, num_points: int) -> tuple[DataAugmentation, dict[str, torch.Tensor]]:
    """A tiny posterior target and ``num_points`` parameter points from its prior."""
    model = zoo.get_model(name)
    target = model.target(model.simulate(num_datapoints, seed=0).data, "posterior")
    torch.manual_seed(1)
    return target, {site: prior.sample((num_points,)) for site, prior in target.priors.items()}


@pytest.mark.parametrize("name", ["gmm", "hmm"])
def test_the_complete_likelihood_sums_over_every_local_to_the_collapsed_one(name):
    target, points = _augmented(name, num_datapoints=4, num_points=3)
    K = points["weights" if name == "gmm" else "initial"].shape[-1]
    paths = torch.tensor(list(itertools.product(range(K), repeat=4)))  # (K^4, 4)
    complete = torch.stack([target.complete_log_likelihood(points, path.expand(3, 4)) for path in paths])
    torch.testing.assert_close(complete.logsumexp(0), target.log_likelihood(points), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gmm", "hmm"])
def test_drawn_locals_follow_their_exact_posterior(name):
    target, points = _augmented(name, num_datapoints=4, num_points=1)
    K = points["weights" if name == "gmm" else "initial"].shape[-1]
    paths = torch.tensor(list(itertools.product(range(K), repeat=4)))
    exact = torch.stack([target.complete_log_likelihood(points, path[None]) for path in paths]).squeeze(-1).softmax(0)
    num = 20_000
    torch.manual_seed(2)
    drawn = target.draw_locals({site: value.expand((num,) + value.shape[1:]) for site, value in points.items()})
    codes = (drawn * K ** torch.arange(3, -1, -1)).sum(-1)  # each path's index in `paths`
    frequency = torch.bincount(codes, minlength=len(paths)).to(F64) / num
    assert ((frequency - exact).abs() <= Z * (exact * (1 - exact) / num).sqrt() + 1 / num).all()


def test_gibbs_says_where_it_does_not_apply():
    gibbs = get_method("gibbs")
    for name, target, words in [("gmm", "latent", "exact"), ("factor_analysis", "posterior", "no discrete locals")]:
        model = zoo.get_model(name)
        assert words in gibbs.not_applicable(model.target(model.simulate(10, seed=0).data, target))


def test_the_hmm_gibbs_sweep_keeps_its_tempered_posterior():
    """Paths drawn exactly from pi_beta on 4 time steps (enumerated), swept once, keep the
    frequencies of pi_beta."""
    model = zoo.get_model("hmm")
    target = model.target(model.simulate(4, seed=0).data, "latent")
    beta, num = 0.5, 20_000
    paths = torch.tensor(list(itertools.product(range(2), repeat=4)))
    tempered = torch.stack([target.log_initial[p[0]] + target.log_transition[p[:-1], p[1:]].sum()
                            + beta * target.log_emission[torch.arange(4), p].sum() for p in paths]).softmax(0)
    torch.manual_seed(3)
    start = paths[torch.multinomial(tempered, num, replacement=True)]
    swept = target.gibbs_sweep({site: start[:, t] for t, site in enumerate(target.latent_sites)},
                               torch.full((num,), beta, dtype=F64))
    codes = (torch.stack([swept[site] for site in target.latent_sites], 1) * 2 ** torch.arange(3, -1, -1)).sum(-1)
    frequency = torch.bincount(codes, minlength=16).to(F64) / num
    assert ((frequency - tempered).abs() <= Z * (tempered * (1 - tempered) / num).sqrt() + 1 / num).all()
