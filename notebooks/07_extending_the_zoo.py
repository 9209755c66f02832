# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Extending the zoo: a new model and a new method, without touching a file
#
# The zoo and the harness are driven by two registries: models (`zoo.register_model`) and
# methods (`inference_comparisons.methods.register_method`). Everything else (the
# conformance checks, the sweep, the report) reads them. So a model or a method defined
# right here, in a notebook, takes part in a comparison exactly as a built-in one does.
#
# We add:
#
# 1. **a model**: a mixture of Poisson distributions for count data, whose `latent` target
#    (which component each count came from, the weights and rates known) has an exact
#    answer, the responsibilities;
# 2. **a method**: independent Metropolis–Hastings with the prior as its proposal, the MCMC
#    twin of prior importance sampling;
#
# then check both with the same functions the project's own tests use
# (`inference_comparisons.testing.check_model` and `check_method`), and run a small sweep in
# which they appear. CONTRIBUTING.md has the same two steps as file templates, for when the
# new model or method should join the repository.

# %%
import os

SMALL = os.environ.get("ZOO_NOTEBOOK_SMALL") == "1"  # tiny sizes for the tests

# %%
from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

import inference_comparisons as ic
import zoo
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.particles import importance_log_weights, prior_proposal
from inference_comparisons.estimators.sampler_stats import effective_sample_size
from inference_comparisons.methods import register_method
from inference_comparisons.testing import check_method, check_model
from zoo.base import (SIMULATED, Draws, LatentTarget, ModelInfo, Reference, Simulation, Target, ZooModel,
                      as_probabilities, generative_process)
from zoo.validation import check_num_datapoints, validate_data

F64 = torch.float64

# %% [markdown]
# ## The model
#
# A model is a frozen dataclass subclassing `zoo.base.ZooModel`. Its fields are its
# hyperparameters and true values; its docstring states the generative process, which
# `ModelInfo` shows. Its target, here `latent` only, is what a method sees: a
# `zoo.base.Target` with a hand-written log density that takes S draws at once (rule 1 of
# the contract), probability vectors for its discrete site (rule 3, for mean-field SVI's
# exact ELBO), and its exact answer.

# %%
@dataclass(frozen=True)
class PoissonMixture(ZooModel):
    """A mixture of K Poisson distributions for counts, its weights and rates known.

    Generative process::

        for n in 1..N:
            z_n ~ Categorical(weights)
            x_n ~ Poisson(rates[z_n])

    The ``latent`` target infers the z_n; its exact posterior is the responsibilities,
    w_k Poisson(x_n | r_k) / sum_j w_j Poisson(x_n | r_j). (A ``posterior`` target over the
    weights and rates would need a stored gold standard: ``python -m inference_comparisons
    reference``.) Reference: McLachlan & Peel (2000) Finite Mixture Models, section 1.
    """

    weights: tuple[float, ...] = (0.6, 0.4)
    rates: tuple[float, ...] = (2.0, 9.0)

    name = "poisson_mixture"
    true_parameter_fields = ("weights", "rates")
    info = ModelInfo(generative_process=generative_process(__doc__), global_sites=(), local_sites=("assignment",),
                     datasets=SIMULATED, literature=("McLachlan & Peel (2000) Finite Mixture Models",),
                     targets=("latent",))

    def __post_init__(self) -> None:
        self.true_params()  # bad values are refused at construction

    def true_params(self) -> dict[str, torch.Tensor]:
        weights, rates = torch.tensor(self.weights, dtype=F64), torch.tensor(self.rates, dtype=F64)
        if weights.shape != rates.shape or (weights <= 0).any() or abs(float(weights.sum()) - 1) > 1e-9:
            raise ValueError(f"poisson_mixture: weights must be positive and sum to 1, one per rate; got "
                             f"weights={self.weights}, rates={self.rates}")
        if (rates <= 0).any():
            raise ValueError(f"poisson_mixture: rates must be positive, got {self.rates}")
        return {"weights": weights, "rates": rates}

    def priors(self) -> dict[str, dist.Distribution]:
        return {}  # no global latent: the weights and rates are known

    def validate(self, data: Any) -> torch.Tensor:
        data = validate_data(data, name=self.name, ndim=(1,))
        if (data < 0).any() or (data != data.round()).any():
            raise ValueError("poisson_mixture: data must be counts (non-negative integers)")
        return data

    def load_dataset(self, name: str) -> torch.Tensor:
        raise ValueError(f"{self.name}: unknown dataset {name!r}; it ships none (use 'simulated')")

    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        check_num_datapoints(self.name, num_datapoints)
        params = self.true_params()
        generator = torch.Generator().manual_seed(seed)
        z = torch.multinomial(params["weights"], num_datapoints, replacement=True, generator=generator)
        x = torch.poisson(params["rates"][z], generator=generator)
        return Simulation(data=x, true_params=params, true_latents={"assignment": z})

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        weights, rates = self.true_params().values()
        with pyro.plate("data", data.shape[0], dim=-1):
            z = pyro.sample("assignment", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Poisson(rates[z]), obs=data)

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        weights, rates = self.true_params().values()
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("obs", dist.MixtureSameFamily(dist.Categorical(weights), dist.Poisson(rates)), obs=data)

    def guide(self, data: torch.Tensor) -> None:
        K = len(self.weights)
        probs = pyro.param("assignment_probs", torch.full((data.shape[0], K), 1.0 / K, dtype=F64),
                           constraint=constraints.simplex)
        with pyro.plate("data", data.shape[0], dim=-1):
            pyro.sample("assignment", dist.Categorical(probs))

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        return PoissonMixtureLatent(self, self.validate(data))


class PoissonMixtureLatent(LatentTarget):
    """The assignments given the known weights and rates; exact by Bayes' rule per count."""

    latent_sites = discrete_sites = ("assignment",)
    max_plate_nesting = 1
    dims = {"assignment": ("datapoint",)}
    has_exact = True

    def __init__(self, mixture: PoissonMixture, data: torch.Tensor) -> None:
        super().__init__(mixture, data)
        self.emission = dist.Poisson(self.params["rates"]).log_prob(data[:, None])  # (N, K)
        self.component = self.params["weights"].log() + self.emission

    def _probabilities(self, draws: Draws) -> torch.Tensor:
        return as_probabilities(draws["assignment"], len(self.params["weights"]))  # (S, N, K)

    def log_density(self, draws: Draws) -> torch.Tensor:
        return (self.component * self._probabilities(draws)).sum((-1, -2))

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        return (self.emission * self._probabilities(draws)).sum(-1)

    def quantities(self, draws: Draws) -> Draws:
        return {}  # scored on the local marginals

    def local_marginals(self, draws: Draws) -> Draws:
        return {"assignment": self._probabilities(draws)}

    def exact_draws(self, num_draws: int) -> Draws:
        return {"assignment": torch.multinomial(self.component.softmax(-1), num_draws, replacement=True).T}

    def exact(self) -> Reference:
        return Reference(log_evidence=float(self.component.logsumexp(-1).sum()), log_evidence_se=0.0, exact=True,
                         moments={}, local_marginals={"assignment": self.component.softmax(-1)},
                         provenance={"method": "exact: responsibilities by Bayes' rule", "config": self.zoo_model.config()})


# %% [markdown]
# An exact answer is only trusted once brute force agrees with it. On six counts, summing
# the joint over all 2⁶ assignment vectors gives the evidence and each marginal directly:

# %%
import itertools

mixture = PoissonMixture()
tiny = mixture.simulate(6, seed=1).data
latent = mixture.target(tiny, "latent")
paths = torch.tensor(list(itertools.product(range(2), repeat=6)))
log_joint = latent.log_density({"assignment": paths})
brute_evidence = float(log_joint.logsumexp(0))
brute_marginals = torch.stack([(log_joint.softmax(0)[:, None] * (paths == k)).sum(0) for k in range(2)], -1)
exact = latent.exact()
print(f"log evidence: exact {exact.log_evidence:.12f}, brute force {brute_evidence:.12f}")
print("largest marginal difference:", float((exact.local_marginals["assignment"] - brute_marginals).abs().max()))
assert abs(exact.log_evidence - brute_evidence) < 1e-10
assert torch.allclose(exact.local_marginals["assignment"], brute_marginals, atol=1e-12)

# %% [markdown]
# Registered, the model is in the zoo, and `check_model` runs every conformance check on it
# (its declarations, the guide's sites, a reproducible simulator, the density against
# Pyro's under a particle plate, enumeration against the collapsed twin, probability
# vectors, the exact draws, and every registered method at its smoke budget). It raises,
# naming the check, when something is wrong.

# %%
zoo.register_model(PoissonMixture)
check_model(zoo.get_model("poisson_mixture"))
print("poisson_mixture passes the conformance checks;", "registered models:", ", ".join(zoo.available_models()))

# %% [markdown]
# ## The method
#
# A method subclasses `InferenceMethod`: a name, a budget unit, a ladder of budgets per
# profile, a smoke budget, and `run(target, budget, seed)` returning an `InferenceResult`
# whose `kind` says what its draws are. Independent Metropolis–Hastings proposes a fresh
# prior draw z' at every step and accepts it with probability min(1, w(z') / w(z)), where
# w = p(x, z) / prior(z) is exactly the importance weight of prior importance sampling. So
# one vectorised importance pass gives every chain's proposals and weights, and the
# accept/reject scan is a loop over steps with all chains at once. Its draws are MCMC
# chains: their ESS and R-hat go in the table.

# %%
class IndependentMetropolis(ic.InferenceMethod):
    name = "imh_prior"
    budget_unit = "draws"
    ladders = {"quick": (400,), "default": (400, 4000), "thorough": (4000, 40_000)}
    description = "independent Metropolis-Hastings, the prior as proposal, 4 chains"
    smoke_budget = 40
    num_chains = 4

    def run(self, target: Target, budget: int, seed: int) -> ic.InferenceResult:
        chains, steps = self.num_chains, max(budget // self.num_chains, 2)
        log_weights, proposals = importance_log_weights(
            target.collapsed_model, prior_proposal(target.collapsed_model), chains * steps,
            target.max_plate_nesting, target.latent_sites)
        log_weights = torch.nan_to_num(log_weights, nan=-torch.inf).reshape(chains, steps)
        rows = torch.arange(chains)
        current = torch.zeros(chains, dtype=torch.long)  # each chain starts at its first proposal
        kept = [current]
        for step in range(1, steps):
            accept = torch.rand(chains, dtype=F64).log() < log_weights[:, step] - log_weights[rows, current]
            current = torch.where(accept, step, current)
            kept.append(current)
        index = (rows[:, None] * steps + torch.stack(kept, 1)).reshape(-1)  # chain-major, as the harness expects
        draws = {site: value[index] for site, value in proposals.items()}
        moments, marginals = summarise_draws(target, draws)
        changes = (torch.stack(kept, 1).diff(dim=1) != 0).to(F64).mean()
        log_density = target.log_density(draws).reshape(chains, steps)  # a scalar summary for the ESS
        return ic.InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ic.ResultKind.MCMC, draws=draws, log_evidence=float("nan"), log_evidence_se=float("nan"),
            moments=moments, local_marginals=marginals, num_chains=chains,
            cost=ic.Cost(0.0, chains * steps, 0),
            diagnostics=ic.Diagnostics(ess_min=float(effective_sample_size(log_density.unsqueeze(-1)).min())),
            note=f"acceptance rate {float(changes):.3f}")


register_method(IndependentMetropolis())
check_method(ic.get_method("imh_prior"))
print("imh_prior passes the conformance checks on every registered model")

# %% [markdown]
# ## A sweep with both
#
# `ic.compare` plans the cells from the registries, runs them (here in this process: pool
# workers would not know a model defined in a notebook), scores each against its reference,
# and writes the store and report, on the sweep's default data (200 simulated points). The
# new model's rows and the new method's rows appear next to the built-in ones.

# %%
import tempfile

out = tempfile.mkdtemp(prefix="zoo-07-")
methods = ["exact", "is_prior", "svi", "imh_prior"]
ladders = {"is_prior": (400,), "svi": (100 if SMALL else 300,), "imh_prior": (400,)}
table = ic.compare(models=["poisson_mixture", "gmm"], methods=methods, targets=["latent"], budgets="quick",
                   ladders=ladders, out=out, scheduler="inprocess")
columns = ["model", "method", "budget", "status", "log_evidence_error", "local_tv", "ess_min", "khat", "message"]
print(table[columns].to_string(index=False))
print(f"report: {out}/report.md")
assert set(table.model) == {"poisson_mixture", "gmm"} and "imh_prior" in set(table.method)
assert (table[(table.model == "poisson_mixture") & (table.method == "exact")].local_tv < 1e-12).all()

# %% [markdown]
# Reading the table: `exact` has no error, by construction. `imh_prior` and `is_prior` use the
# same proposals, so both degrade as the data grow, but differently: importance sampling
# reports its weights' k̂, the chains their acceptance rate and ESS. On the mixture the
# `local_tv` column, the distance of each method's assignment marginals from the exact
# responsibilities, puts the two on one scale. The report in `out/report.md` has both models'
# sections and plots. To keep the new model and method, copy them into files as
# CONTRIBUTING.md shows and add one registration line each.
