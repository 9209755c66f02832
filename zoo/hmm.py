"""Bayesian hidden Markov model with K states and 1-D Gaussian emissions.

Generative process::

    initial       ~ Dirichlet(initial_concentration * 1_K)
    transition[k] ~ Dirichlet(transition_concentration * 1_K)     for each row k = 1..K
    locs          ~ K i.i.d. Normal(mean_prior_loc, mean_prior_scale^2), sorted increasingly
                    (their order statistics); with K prior means mean_prior_loc or
                    positive_means: K normals conditioned on being increasing (and positive)
    scales        ~ LogNormal(scale_prior_loc, scale_prior_scale), shape (K,)   (scale_prior = "lognormal")
                    or HalfNormal(scale_prior_scale)                        (scale_prior = "half_normal")
                    or all equal to emission_scale, known                   (emission_scale given)
    z_1 ~ Categorical(initial)                                     # summed out
    for t in 2..T:
        z_t ~ Categorical(transition[z_{t-1}])                     # summed out
    for t in 1..T:
        x_t ~ Normal(locs[z_t], scales[z_t]^2)

Ordering the emission means removes label switching by construction (``zoo.distributions``); since
the unordered prior is exchangeable over state labels, the ordered model has the same
marginal likelihood as the textbook one. ``posterior`` infers (initial, transition, locs,
scales) with the states summed out; ``latent`` fixes the globals at the instance's values
and infers the states ``state_0 .. state_{T-1}``, whose exact posterior is given by the
forward-backward algorithm.

Two implementations of one density: ``model`` is the textbook ``pyro.markov`` loop with
every state marked for parallel enumeration (``TraceEnum_ELBO`` sums them out in
O(T K^2)); ``collapsed_model`` is ``dist.DiscreteHMM``, vectorised over time. Pyro's
``DiscreteHMM`` draws its first *observed* state by a transition from ``initial_logits``
(checked against hmmlearn, whose ``startprob_`` is p(z_1) as here), so the collapsed model uses a time-dependent transition matrix whose first
slice has every row equal to ``initial``: the state before the first transition is then
irrelevant, and ``z_1 ~ initial`` exactly.

On the ``latent`` target every latent is discrete, so the harness's ``svi`` fits its
per-step categorical mean-field guide by the exact mean-field ELBO (``Target.log_density``
given probability vectors returns E_q[log p]), which has no limit on T. (Pyro's
``AutoDiscreteParallel`` under ``TraceEnum_ELBO`` would take one tensor dimension per state
and fail beyond 63 steps.)

The exact algorithms (forward-backward, Viterbi, forward filtering, backward sampling) are
in :mod:`zoo.exact.hmm`.

References: Rabiner (1989) Proc. IEEE 77:257 (forward-backward, Viterbi, scaling);
Frühwirth-Schnatter (2006) *Finite Mixture and Markov Switching Models* §10-11 (Bayesian
HMMs, label switching); Chib (1996) J. Econometrics 75:79 (forward filtering, backward
sampling); Scott (2002) JASA 97:337; Pyro's HMM example (``pyro.markov`` enumeration).
The Nile data: Cobb (1978) Biometrika 65:243; Durbin & Koopman (2012) *Time Series
Analysis by State Space Methods*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex

from zoo.base import (SIMULATED, Draws, LatentTarget, ModelInfo, PosteriorTarget, Reference, Simulation, Target,
                      ZooModel, as_probabilities, generative_process)
from zoo.datasets import POSTERIORDB, load_csv, load_posteriordb, standardise
from zoo.components import GaussianComponents
from zoo.augmentation import DataAugmentation, TemperedGibbs
from zoo.em import EMSteps, dirichlet_mode, dirichlet_without_mode
from zoo.exact.hmm import (emission_log_prob, expected_counts, forward_log_evidence, one_step_log_likelihood,
                           sample_paths, smoothed_marginals, viterbi)
from zoo.validation import check_integer, check_num_datapoints, check_positive, validate_data

__all__ = ["HiddenMarkovModel"]

#: Supported numbers of states. One state is not a hidden Markov model; above 10 the
#: O(K^2) transition rows outgrow anything the zoo's sequence lengths can identify.
MIN_STATES, MAX_STATES = 2, 10

#: The literal block of the module docstring (inside a class body ``__doc__`` is the class's).
_PROCESS = generative_process(__doc__)
#: Default K=2: a sticky two-regime chain (expected dwell times 20 and 10 steps) with
#: well-separated means, the shape of the Nile's level shift after 1898 on standardised data.
_DEFAULT_2 = {"initial": (0.5, 0.5), "transition": ((0.95, 0.05), (0.10, 0.90)),
              "locs": (-1.0, 1.0), "scales": (0.5, 0.7)}
_SITES = ("initial", "transition", "locs", "scales")
#: posteriordb's hmm_example (zoo/datasets/posteriordb/README.md). Its Stan program has
#: ``simplex[K] theta1, theta2`` (the transition rows, flat priors), ``positive_ordered[K] mu``
#: with mu[1] ~ N(3, 1) and mu[2] ~ N(10, 1), emission sd 1, and a forward algorithm that
#: starts from gamma[1, k] = normal_lpdf(y[1] | mu[k], 1): a uniform initial distribution,
#: up to the constant K. Here ``initial`` is a site with a flat Dirichlet prior, and as the
#: likelihood is linear in it, integrating it out gives E[initial] = uniform: the posterior of
#: the other sites is Stan's exactly.
_POSTERIORDB_HMM = POSTERIORDB + "hmm_example"


def _state_site(t: int) -> str:
    return f"state_{t}"


@dataclass(frozen=True)
class HiddenMarkovModel(GaussianComponents, ZooModel):
    """Bayesian Gaussian HMM (see the module docstring for the generative process).

    True parameters default to the documented K=2 chain (initial 0.5/0.5, transition rows
    0.95/0.05 and 0.10/0.90, means -1/+1, standard deviations 0.5/0.7). For other K they
    default to a uniform initial distribution, self-transition 0.9 with the rest spread
    evenly, means spaced 2 apart and centred on 0, and standard deviations 0.5. ``transition``
    is given as K rows of K numbers, each row summing to 1. The prior hyperparameters of the
    emissions are :class:`~zoo.components.GaussianComponents`'.
    """

    num_states: int = 2
    initial: tuple[float, ...] | None = None
    transition: tuple[tuple[float, ...], ...] | None = None
    locs: tuple[float, ...] | None = None
    scales: tuple[float, ...] | None = None
    initial_concentration: float = 1.0
    transition_concentration: float = 1.0
    emission_scale: float | None = None

    name = "hmm"
    true_parameter_fields = _SITES
    backward_compatible = {"emission_scale": None}
    info = ModelInfo(
        generative_process=_PROCESS,
        global_sites=_SITES,
        local_sites=("states",),
        datasets={
            **SIMULATED,
            "nile": "100 annual flows of the Nile at Aswan, 1871-1970 (1-D sequence, standardised)",
            _POSTERIORDB_HMM: "posteriordb's hmm_example: 100 steps of a 2-state Gaussian HMM (raw), with its Stan "
                              "program's priors (emission sd known, 1; positive ordered means with priors N(3,1) "
                              "and N(10,1); uniform transition rows) and its Stan reference posterior",
        },
        dataset_configs={_POSTERIORDB_HMM: {"num_states": 2, "emission_scale": 1.0, "mean_prior_loc": (3.0, 10.0),
                                            "mean_prior_scale": 1.0, "positive_means": True,
                                            "transition_concentration": 1.0, "initial_concentration": 1.0}},
        literature=(
            "Rabiner (1989) Proceedings of the IEEE 77:257-286",
            "Fruhwirth-Schnatter (2006) Finite Mixture and Markov Switching Models, chapters 10-11",
            "Chib (1996) Journal of Econometrics 75:79-97",
            "Scott (2002) JASA 97:337-351",
        ),
    )

    def __post_init__(self) -> None:
        check_integer("hmm", "num_states", self.num_states, MIN_STATES, MAX_STATES)
        for key in ("initial_concentration", "transition_concentration"):
            check_positive("hmm", key, getattr(self, key))
        if self.emission_scale is not None:
            check_positive("hmm", "emission_scale", self.emission_scale)
        self.check_components("hmm", self.num_states)
        known = self.known_scales()
        if known is not None and self.scales is not None and not torch.equal(self.true_params()["scales"], known):
            raise ValueError(f"hmm: scales {self.scales} contradict the known emission_scale {self.emission_scale}; "
                             f"give one of them")
        self.true_params()  # validates user-given parameters

    def known_scales(self) -> torch.Tensor | None:
        """The emissions' standard deviations when they are known (``emission_scale``): then
        ``scales`` is not a latent site. ``None`` when they are inferred."""
        if self.emission_scale is None:
            return None
        return torch.full((self.num_states,), float(self.emission_scale), dtype=torch.float64)

    # --- parameters ------------------------------------------------------------------
    def _tensor(self, key: str, value: Any, shape: tuple[int, ...]) -> torch.Tensor:
        try:
            out = torch.tensor(value, dtype=torch.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"hmm: {key} must be numbers of shape {shape}, got {value!r}") from error
        if out.shape != shape or not torch.isfinite(out).all():
            raise ValueError(f"hmm: {key} must be finite numbers of shape {shape}, got {value!r}")
        return out

    def true_params(self) -> dict[str, torch.Tensor]:
        K = self.num_states
        default = _DEFAULT_2 if K == 2 else {
            "initial": [1.0 / K] * K,
            "transition": [[0.9 if i == j else 0.1 / (K - 1) for j in range(K)] for i in range(K)],
            "locs": [2.0 * (k - (K - 1) / 2) for k in range(K)],
            "scales": [0.5] * K,
        }
        if self.emission_scale is not None:
            default = {**default, "scales": [float(self.emission_scale)] * K}
        given = {key: getattr(self, key) for key in _SITES}
        shapes = {"initial": (K,), "transition": (K, K), "locs": (K,), "scales": (K,)}
        params = {key: self._tensor(key, default[key] if given[key] is None else given[key], shapes[key])
                  for key in _SITES}
        initial, transition = params["initial"], params["transition"]
        if (initial < 0).any() or abs(initial.sum().item() - 1) > 1e-6:
            raise ValueError(f"hmm: initial must be {K} non-negative numbers summing to 1, got {self.initial} "
                             f"(sum {initial.sum().item():.6g})")
        if (transition < 0).any():
            raise ValueError(f"hmm: transition probabilities must be non-negative, got {self.transition}")
        for k, row in enumerate(transition):
            if abs(row.sum().item() - 1) > 1e-6:
                raise ValueError(f"hmm: transition row {k} must sum to 1, got {row.tolist()} "
                                 f"(sum {row.sum().item():.6g})")
        if not bool(constraints.ordered_vector.check(params["locs"])):
            raise ValueError(f"hmm: locs must be {K} strictly increasing numbers (the model orders its "
                             f"states by mean), got {self.locs}")
        if (params["scales"] <= 0).any():
            raise ValueError(f"hmm: scales must be {K} positive numbers, got {self.scales}")
        return params

    def validate(self, data: Any) -> torch.Tensor:
        return validate_data(data, name="hmm", ndim=(1,))

    def load_dataset(self, name: str) -> torch.Tensor:
        if name == _POSTERIORDB_HMM:
            self.check_dataset_config(name)
            return load_posteriordb("hmm_example")["y"]
        if name != "nile":
            raise ValueError(f"hmm: unknown dataset {name!r}; accepted: nile, {_POSTERIORDB_HMM}")
        return standardise(load_csv("nile")["flow_1e8_m3"])

    # --- generative model ------------------------------------------------------------
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        check_num_datapoints("hmm", num_datapoints)
        params = self.true_params()
        generator = torch.Generator().manual_seed(seed)
        states = torch.empty(num_datapoints, dtype=torch.long)
        states[0] = torch.multinomial(params["initial"], 1, generator=generator)
        for t in range(1, num_datapoints):
            states[t] = torch.multinomial(params["transition"][states[t - 1]], 1, generator=generator)
        noise = torch.randn(num_datapoints, generator=generator, dtype=torch.float64)
        data = params["locs"][states] + params["scales"][states] * noise
        return Simulation(data=data, true_params=params, true_latents={"states": states})

    def priors(self) -> dict[str, dist.Distribution]:
        """The prior of each global site."""
        K = self.num_states
        f64 = dict(dtype=torch.float64)
        priors = {
            "initial": dist.Dirichlet(torch.full((K,), float(self.initial_concentration), **f64)),
            "transition": dist.Dirichlet(torch.full((K, K), float(self.transition_concentration), **f64)).to_event(1),
            **self.component_priors(K),
        }
        if self.emission_scale is not None:
            del priors["scales"]
        return priors

    def sample_globals(self, params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """As :meth:`ZooModel.sample_globals`, with the known scales when they are known."""
        values = super().sample_globals(params)
        return values if "scales" in values else {**values, "scales": self.known_scales()}

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Textbook form: a ``pyro.markov`` chain of states, each marked for parallel
        enumeration (two enumeration dims suffice: each state depends on the last only)."""
        initial, transition, locs, scales = self.sample_globals(params).values()
        # Under an outer particle plate at dim -1 the globals are (S, K), (S, K, K), ...;
        # a state is (S,) there, or an enumeration dim of size K under TraceEnum_ELBO.
        state = None
        for t in pyro.markov(range(data.shape[0])):
            probs = initial if state is None else Vindex(transition)[..., state, :]
            state = pyro.sample(_state_site(t), dist.Categorical(probs), infer={"enumerate": "parallel"})
            pyro.sample(f"obs_{t}", dist.Normal(Vindex(locs)[..., state], Vindex(scales)[..., state]),
                        obs=data[t])

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Same density with the states summed out by ``DiscreteHMM`` (see module docstring)."""
        initial, transition, locs, scales = self.sample_globals(params).values()
        pyro.sample("obs", self._discrete_hmm(initial, transition, locs, scales, data.shape[0]), obs=data)

    @staticmethod
    def _discrete_hmm(initial: torch.Tensor, transition: torch.Tensor, locs: torch.Tensor,
                      scales: torch.Tensor, num_steps: int) -> dist.DiscreteHMM:
        K = initial.shape[-1]
        batch = torch.broadcast_shapes(initial.shape[:-1], transition.shape[:-2])
        # Step 1's "transition" ignores the (irrelevant) state before it: every row is `initial`.
        first = initial.log()[..., None, None, :].expand(batch + (1, K, K))
        rest = transition.log().unsqueeze(-3).expand(batch + (num_steps - 1, K, K))
        return dist.DiscreteHMM(torch.zeros(batch + (K,), dtype=initial.dtype), torch.cat([first, rest], -3),
                                dist.Normal(locs.unsqueeze(-2), scales.unsqueeze(-2)))

    def guide(self, data: torch.Tensor) -> None:
        """Mean-field guide over the globals in their natural parameterisations."""
        K = self.num_states
        f64 = dict(dtype=torch.float64)
        x = self.validate(data)
        initial = pyro.param("initial_concentration", torch.full((K,), 10.0, **f64), constraint=constraints.positive)
        pyro.sample("initial", dist.Dirichlet(initial))
        rows = pyro.param("transition_concentration", torch.full((K, K), 10.0, **f64) + 30.0 * torch.eye(K, **f64),
                          constraint=constraints.positive)
        pyro.sample("transition", dist.Dirichlet(rows).to_event(1))
        self.component_guide(self.start_locs(x), scales=self.emission_scale is None)

    def start_locs(self, data: torch.Tensor) -> torch.Tensor:
        """K strictly increasing means to start from: evenly spaced quantiles of the data."""
        K, f64 = self.num_states, dict(dtype=torch.float64)
        return data.quantile(torch.linspace(0.5 / K, 1 - 0.5 / K, K, **f64)) + 1e-3 * torch.arange(K, **f64)

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        data = self.validate(data)
        return ChainPosterior(self, data) if target == "posterior" else ChainLatent(self, data)


def _log_factors(data: torch.Tensor, draws: Mapping[str, torch.Tensor],
                 known_scales: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """(log initial, log transition, log emission) of parameter draws, the exact algorithms'
    input; ``known_scales`` stand for a ``scales`` the draws do not have (it is known)."""
    scales = draws["scales"] if known_scales is None else known_scales
    return draws["initial"].log(), draws["transition"].log(), emission_log_prob(data, draws["locs"], scales)


class ChainPosterior(EMSteps, DataAugmentation, PosteriorTarget):
    """The globals (initial, transition, locs, scales), the states summed out. EM is
    Baum-Welch (Rabiner 1989 §III.C) with the priors: expected counts by forward-backward,
    then the Dirichlet modes of the initial and transition probabilities and the emissions'
    conditional modes."""

    max_plate_nesting = 0
    observation_dim = "time"

    @property
    def dims(self) -> Mapping[str, tuple[str, ...]]:
        axes = {"initial": ("state",), "transition": ("state", "next_state"), "locs": ("state",), "scales": ("state",)}
        return {site: axes[site] for site in self.latent_sites}

    def _factors(self, draws: Draws) -> tuple[torch.Tensor, ...]:
        return _log_factors(self.data, draws, self.zoo_model.known_scales())

    def _chunked(self, algorithm: Any, draws: Draws) -> torch.Tensor:
        """``algorithm`` over the draws in chunks: the pairwise scan holds (S, T/2, K, K, K)
        tensors and its autograd graph, ~0.5 GB for S = 2048, T = 1000, K = 3 at once."""
        num_steps, K = self.data.shape[0], self.zoo_model.num_states
        size = max(1, 2 ** 22 // (num_steps * K ** 3))
        num = next(iter(draws.values())).shape[0]
        return torch.cat([algorithm(*self._factors({k: v[i:i + size] for k, v in draws.items()}))
                          for i in range(0, num, size)])

    def log_likelihood(self, draws: Draws) -> torch.Tensor:
        return forward_log_evidence(*self._factors(draws))

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        # log p(x_t | x_{<t}, theta): the sequence's likelihood does not factor over t once the
        # states are summed out, so pointwise terms are the one-step-ahead predictive densities
        # (they sum to log p(x | theta); PSIS-LOO on them is leave-future-out flavoured,
        # Bürkner, Gabry & Vehtari 2020).
        return self._chunked(one_step_log_likelihood, draws)

    def local_marginals(self, draws: Draws) -> Draws:
        return {"states": self._chunked(smoothed_marginals, draws)}

    def draw_locals(self, draws: Draws) -> torch.Tensor:
        # One path per point: FFBS batched over the points (its sample axis of 1 dropped).
        return self._chunked(lambda *factors: sample_paths(*factors, num_samples=1)[0], draws)

    def complete_log_likelihood(self, draws: Draws, locals_: torch.Tensor) -> torch.Tensor:
        log_initial, log_transition, log_emission = self._factors(draws)
        points = torch.arange(len(locals_)).unsqueeze(-1)
        return (log_initial.gather(-1, locals_[:, :1]).squeeze(-1)
                + log_transition[points, locals_[:, :-1], locals_[:, 1:]].sum(-1)
                + log_emission.gather(-1, locals_.unsqueeze(-1)).sum((-1, -2)))

    def em_not_applicable(self) -> str | None:
        chain = self.zoo_model
        return (dirichlet_without_mode(initial_concentration=chain.initial_concentration,
                                       transition_concentration=chain.transition_concentration)
                or chain.components_without_mode())

    def data_start(self) -> Draws:
        chain, x = self.zoo_model, self.data
        K = chain.num_states
        sticky = torch.ones(K, K, dtype=torch.float64) + 3 * torch.eye(K, dtype=torch.float64)
        start = {"initial": torch.full((1, K), 1.0 / K, dtype=torch.float64),
                 "transition": (sticky / sticky.sum(-1, keepdim=True))[None],
                 "locs": chain.start_locs(x)[None], "scales": x.std().expand(1, K).clone()}
        return {site: start[site] for site in self.latent_sites}

    def em_step(self, params: Draws) -> Draws:
        chain = self.zoo_model
        point = {site: value[0] for site, value in params.items()}
        initial, transitions, marginals = expected_counts(*self._factors(point))
        known = chain.known_scales()
        locs, scales = chain.component_mode(self.data, marginals, point["scales"] if known is None else known)
        order = locs.argsort()  # relabel the states: the log joint is invariant, the prior's order kept
        step = {"initial": dirichlet_mode(initial, chain.initial_concentration)[order][None],
                "transition": dirichlet_mode(transitions, chain.transition_concentration)[order][:, order][None],
                "locs": locs[order][None], "scales": scales[order][None]}
        return {site: step[site] for site in self.latent_sites}


class ChainLatent(TemperedGibbs, LatentTarget):
    """The states ``state_0 .. state_{T-1}``, the globals fixed at the model's true values;
    exact by forward-backward."""

    max_plate_nesting = 0
    observation_dim = "time"
    has_exact = True

    def __init__(self, chain: HiddenMarkovModel, data: torch.Tensor) -> None:
        super().__init__(chain, data)
        self.num_states = chain.num_states
        self.latent_sites = self.discrete_sites = tuple(_state_site(t) for t in range(data.shape[0]))
        self.log_initial, self.log_transition, self.log_emission = _log_factors(data, self.params)

    @property
    def dims(self) -> Mapping[str, tuple[str, ...]]:
        return {site: () for site in self.latent_sites}

    def truth(self, simulation: Simulation) -> Draws:
        return {site: simulation.true_latents["states"][t][None] for t, site in enumerate(self.latent_sites)}

    def _states(self, draws: Draws) -> torch.Tensor:
        """(S, T) integer draws, or (S, T, K) probability vectors."""
        values = [draws[s] for s in self.latent_sites]
        if all(not v.is_floating_point() for v in values):
            return torch.stack(values, 1)
        return torch.stack([as_probabilities(v, self.num_states) for v in values], 1)

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        states = self._states(draws)
        if not states.is_floating_point():
            return self.log_emission.expand(states.shape + self.log_emission.shape[-1:]).gather(
                -1, states.unsqueeze(-1)).squeeze(-1)
        return (states * self.log_emission).sum(-1)

    def log_density(self, draws: Draws) -> torch.Tensor:
        """log p(x, z | theta); for probability vectors, its expectation under them."""
        states = self._states(draws)
        emitted = self.pointwise_log_likelihood(draws).sum(-1)
        if not states.is_floating_point():
            moves = self.log_transition[states[:, :-1], states[:, 1:]].sum(-1)
            return self.log_initial[states[:, 0]] + moves + emitted

        def expect(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            # 0 * log 0 counts as 0: a zero-probability move nobody takes costs nothing.
            return torch.where(weights > 0, weights * values, torch.zeros_like(values))

        pairs = states[:, :-1, :, None] * states[:, 1:, None, :]
        return (expect(states[:, 0], self.log_initial).sum(-1) + expect(pairs, self.log_transition).sum((-1, -2, -3))
                + emitted)

    def quantities(self, draws: Draws) -> Draws:
        return {}

    def local_marginals(self, draws: Draws) -> Draws:
        return {"states": torch.stack([as_probabilities(draws[s], self.num_states) for s in self.latent_sites], 1)}

    def prior_locals(self, num_draws: int) -> Draws:
        # The chain's own law: FFBS with every emission log-factor 0.
        paths = sample_paths(self.log_initial, self.log_transition, torch.zeros_like(self.log_emission), num_draws)
        return {site: paths[:, t] for t, site in enumerate(self.latent_sites)}

    def gibbs_sweep(self, draws: Draws, beta: torch.Tensor) -> Draws:
        """Single-site Gibbs in two half-sweeps: the even times given the odd ones, then the
        odd given the even (each state depends on its neighbours alone, so a half-sweep's
        states are conditionally independent and drawn at once): p(z_t = k | rest) ∝
        A[z_{t-1}, k] A[k, z_{t+1}] p(x_t | k)^beta, the initial distribution at t = 0."""
        states = self._states(draws).clone()
        num_steps = states.shape[1]
        for parity in (0, 1):
            times = torch.arange(parity, num_steps, 2)
            logits = beta[:, None, None] * self.log_emission[times]  # (S, |times|, K)
            previous = self.log_transition[states[:, (times - 1).clamp_min(0)]]  # rows A[z_{t-1}, :]
            logits = logits + torch.where((times > 0)[:, None], previous, self.log_initial)
            following = self.log_transition[:, states[:, (times + 1).clamp_max(num_steps - 1)]].permute(1, 2, 0)
            logits = logits + torch.where((times < num_steps - 1)[:, None], following, torch.zeros_like(following))
            states[:, times] = dist.Categorical(logits=logits).sample()
        return {site: states[:, t] for t, site in enumerate(self.latent_sites)}

    def exact_draws(self, num_draws: int) -> Draws:
        """Whole state paths by forward filtering, backward sampling."""
        paths = sample_paths(self.log_initial, self.log_transition, self.log_emission, num_draws)  # (S, T)
        return {site: paths[:, t] for t, site in enumerate(self.latent_sites)}

    def exact(self) -> Reference:
        factors = (self.log_initial, self.log_transition, self.log_emission)
        path, path_log_density = viterbi(*factors)
        return Reference(
            log_evidence=float(forward_log_evidence(*factors)),
            log_evidence_se=0.0,
            exact=True,
            moments={},
            local_marginals={"states": smoothed_marginals(*factors)},
            provenance={"method": "exact: log p(x|theta) by the forward algorithm, p(z_t|x,theta) by "
                                  "forward-backward (gradient of log Z), MAP path by Viterbi (float64)",
                        "model": self.zoo_model.name, "config": self.zoo_model.config(),
                        "viterbi_path": path.tolist(), "viterbi_log_density": float(path_log_density)},
        )
