"""Bayesian hidden Markov model with K states and 1-D Gaussian emissions.

Generative process::

    initial       ~ Dirichlet(initial_concentration * 1_K)
    transition[k] ~ Dirichlet(transition_concentration * 1_K)     for each row k = 1..K
    locs          ~ K i.i.d. Normal(mean_prior_loc, mean_prior_scale^2), sorted increasingly
                    (their order statistics)
    scales        ~ LogNormal(scale_prior_loc, scale_prior_scale), shape (K,)
    z_1 ~ Categorical(initial)                                     # summed out
    for t in 2..T:
        z_t ~ Categorical(transition[z_{t-1}])                     # summed out
    for t in 1..T:
        x_t ~ Normal(locs[z_t], scales[z_t]^2)

Ordering the emission means removes label switching by construction (DESIGN.md §6); since
the unordered prior is exchangeable over state labels, the ordered model has the same
marginal likelihood as the textbook one. ``posterior`` infers (initial, transition, locs,
scales) with the states summed out; ``latent`` fixes the globals at the instance's values
and infers the states ``state_0 .. state_{T-1}``, whose exact posterior is given by the
forward-backward algorithm.

Two implementations of one density: ``model`` is the textbook ``pyro.markov`` loop with
every state marked for parallel enumeration (``TraceEnum_ELBO`` sums them out in
O(T K^2)); ``collapsed_model`` is ``dist.DiscreteHMM``, vectorised over time. Pyro's
``DiscreteHMM`` draws its first *observed* state by a transition from ``initial_logits``
(DESIGN.md §7), so the collapsed model uses a time-dependent transition matrix whose first
slice has every row equal to ``initial``: the state before the first transition is then
irrelevant, and ``z_1 ~ initial`` exactly.

On the ``latent`` target every latent is discrete, so the harness's ``svi`` fits its
per-step categorical mean-field guide by the exact mean-field ELBO (``Target.log_density``
given probability vectors returns E_q[log p]), which has no limit on T. (Pyro's
``AutoDiscreteParallel`` under ``TraceEnum_ELBO`` would take one tensor dimension per state
and fail beyond 63 steps.)

Exact algorithms (public, vectorised over any leading batch of parameter draws):
:func:`forward_log_evidence`, :func:`one_step_log_likelihood`, :func:`smoothed_marginals`,
:func:`viterbi` and :func:`sample_paths` (forward filtering, backward sampling).

References: Rabiner (1989) Proc. IEEE 77:257 (forward-backward, Viterbi, scaling);
Frühwirth-Schnatter (2006) *Finite Mixture and Markov Switching Models* §10-11 (Bayesian
HMMs, label switching); Chib (1996) J. Econometrics 75:79 (forward filtering, backward
sampling); Scott (2002) JASA 97:337; Pyro's HMM example (``pyro.markov`` enumeration).
The Nile data: Cobb (1978) Biometrika 65:243; Durbin & Koopman (2012) *Time Series
Analysis by State Space Methods*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.transforms import OrderedTransform
from pyro.ops.indexing import Vindex

from zoo import register_model
from zoo.base import (ModelInfo, Reference, Simulation, Target, ZooModel, as_probabilities, check_integer,
                      check_positive, validate_data)
from zoo.datasets import load_csv, standardise

__all__ = [
    "HiddenMarkovModel",
    "OrderedNormal",
    "emission_log_prob",
    "forward_log_evidence",
    "one_step_log_likelihood",
    "sample_paths",
    "smoothed_marginals",
    "viterbi",
]

#: Supported numbers of states. One state is not a hidden Markov model; above 10 the
#: O(K^2) transition rows outgrow anything the zoo's sequence lengths can identify.
MIN_STATES, MAX_STATES = 2, 10


# --- the ordered prior on emission means ----------------------------------------------
class OrderedNormal(dist.TorchDistribution):
    """Order statistics of K i.i.d. Normal(loc, scale^2) numbers: density
    ``K! prod_k Normal(mu_k)`` on increasing vectors (the 1-D case of ``zoo.gmm.OrderedMeans``,
    kept as a (K,) vector so that the HMM's means are not (K, 1) matrices)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, num_states: int,
                 validate_args: bool | None = None) -> None:
        self.loc, self.scale, self.num_states = loc, scale, num_states
        super().__init__(torch.Size(), torch.Size([num_states]), validate_args=validate_args)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        with torch.no_grad():
            return (self.loc + self.scale * torch.randn(shape, dtype=self.loc.dtype)).sort(-1).values

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return dist.Normal(self.loc, self.scale).log_prob(value).sum(-1) + math.lgamma(self.num_states + 1)


# --- exact algorithms -----------------------------------------------------------------
# Conventions: log_initial (..., K), log_transition (..., K, K) with rows "from" and
# columns "to", log_emission (..., T, K) = log p(x_t | z_t = k). Leading dims broadcast.
# Two forms of the forward pass: the log evidence and smoothed marginals use a pairwise
# (parallel-scan) product of T - 1 log matrices, O(T K^3) arithmetic but vectorised over
# time, which beats a Python loop of T O(K^2) steps by 15-30x for the zoo's K <= 10; the
# per-step quantities (one-step-ahead likelihoods, FFBS) use the step-by-step filter.


def emission_log_prob(data: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(..., T, K): log Normal(x_t | locs_k, scales_k) for parameters of shape (..., K)."""
    return dist.Normal(locs.unsqueeze(-2), scales.unsqueeze(-2)).log_prob(data.unsqueeze(-1))


def _filter(log_initial: torch.Tensor, log_transition: torch.Tensor,
            log_emission: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Step-by-step forward filter in probability space with per-step rescaling (Rabiner
    1989 §V.A; shifting by each step's largest emission log density keeps float64 far from
    underflow). Returns ``filtered`` (..., T, K) = p(z_t | x_{1..t}) and ``log_steps``
    (..., T) = log p(x_t | x_{1..t-1})."""
    batch = torch.broadcast_shapes(log_initial.shape[:-1], log_transition.shape[:-2], log_emission.shape[:-2])
    num_steps, K = log_emission.shape[-2], log_emission.shape[-1]
    transition = log_transition.exp().expand(batch + (K, K))
    shift = log_emission.max(-1, keepdim=True).values
    emission = (log_emission - shift).exp().expand(batch + (num_steps, K))  # max entry 1 per step
    predicted = log_initial.exp().expand(batch + (K,))
    filtered, norms = [], []
    for t in range(num_steps):
        if t > 0:
            predicted = (filtered[-1].unsqueeze(-2) @ transition).squeeze(-2)
        joint = predicted * emission[..., t, :]
        norm = joint.sum(-1, keepdim=True)
        filtered.append(joint / norm)
        norms.append(norm)
    norms_t = torch.cat(norms, -1)
    log_steps = norms_t.log() + shift.squeeze(-1)
    return torch.stack(filtered, -2), log_steps


#: Log-probabilities below this are treated as impossible moves: clamping -inf to a finite
#: number keeps autograd through logsumexp free of NaNs (exp(-inf - -inf)), while exp() of
#: it, or of a sum of up to ~1e50 of them, is still exactly 0 in float64.
_LOG_ZERO = -1e250


def _log_matmul_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(exp(a) @ exp(b)) for (..., K, K) matrices."""
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).logsumexp(-2)


def _log_chain_product(matrices: torch.Tensor) -> torch.Tensor:
    """log of the product exp(M_1) @ ... @ exp(M_n) of (..., n, K, K) log matrices, by
    pairwise (parallel-scan) reduction: O(n K^3) work in O(log n) vectorised rounds."""
    while matrices.shape[-3] > 1:
        num = matrices.shape[-3]
        even = num - num % 2
        paired = _log_matmul_exp(matrices[..., 0:even:2, :, :], matrices[..., 1:even:2, :, :])
        matrices = torch.cat([paired, matrices[..., even:, :, :]], -3) if num % 2 else paired
    return matrices.squeeze(-3)


def forward_log_evidence(log_initial: torch.Tensor, log_transition: torch.Tensor,
                         log_emission: torch.Tensor) -> torch.Tensor:
    """log p(x_{1..T} | theta), shape (...): the forward algorithm written as a product of
    T - 1 matrices M_t[i, j] = log A[i, j] + log p(x_t | j), reduced pairwise (as Pyro's
    ``DiscreteHMM`` does). Vectorised over time, it is ~20x faster than a step-by-step
    forward loop at T = 1000, with its gradient ~30x (benchmarks/bench_hmm.py)."""
    log_initial, log_transition = log_initial.clamp_min(_LOG_ZERO), log_transition.clamp_min(_LOG_ZERO)
    first = log_initial + log_emission[..., 0, :]
    if log_emission.shape[-2] == 1:
        return first.logsumexp(-1)
    matrices = log_transition.unsqueeze(-3) + log_emission[..., 1:, None, :]
    return (first.unsqueeze(-1) + _log_chain_product(matrices)).logsumexp((-1, -2))


def one_step_log_likelihood(log_initial: torch.Tensor, log_transition: torch.Tensor,
                            log_emission: torch.Tensor) -> torch.Tensor:
    """(..., T): the one-step-ahead predictive log densities log p(x_t | x_{1..t-1}, theta),
    which sum to log p(x | theta) (the prediction-error decomposition)."""
    return _filter(log_initial, log_transition, log_emission)[1]


def smoothed_marginals(log_initial: torch.Tensor, log_transition: torch.Tensor,
                       log_emission: torch.Tensor) -> torch.Tensor:
    """(..., T, K): p(z_t = k | x_{1..T}, theta), the forward-backward marginals, computed as
    the gradient of log Z with respect to the per-step emission log-factors (d log Z / d
    log p(x_t | z_t = k) = p(z_t = k | x); Eisner 2016, DESIGN.md §7). Backpropagating
    through the parallel-scan forward pass is the backward pass, and ~15x faster than
    a step-by-step forward-backward loop at T = 1000. Never differentiable itself."""
    batch = torch.broadcast_shapes(log_initial.shape[:-1], log_transition.shape[:-2], log_emission.shape[:-2])
    with torch.enable_grad():
        # A leaf of the full batch shape: a broadcast emission would sum the batch's gradients.
        log_emission = log_emission.detach().expand(batch + log_emission.shape[-2:]).clone().requires_grad_()
        log_z = forward_log_evidence(log_initial.detach(), log_transition.detach(), log_emission)
        (marginals,) = torch.autograd.grad(log_z.sum(), log_emission)
    return marginals


def _viterbi_sequential(log_initial: torch.Tensor, log_transition: torch.Tensor,
            log_emission: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Viterbi by the textbook max-product recursion with back-pointers (Rabiner 1989)."""
    num_steps = log_emission.shape[-2]
    score = log_initial + log_emission[..., 0, :]
    pointers = []
    for t in range(1, num_steps):
        candidates = score.unsqueeze(-1) + log_transition  # (..., from, to)
        score, best = candidates.max(-2)
        score = score + log_emission[..., t, :]
        pointers.append(best)
    best_score, last = score.max(-1)
    path = [last]
    for best in reversed(pointers):
        path.append(best.gather(-1, path[-1].unsqueeze(-1)).squeeze(-1))
    return torch.stack(path[::-1], -1), best_score


def _max_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Max-plus product of (..., K, K) matrices. ``max`` (not ``amax``) routes the gradient
    to one maximiser, so the gradient of a chain of these picks out one path."""
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).max(-2).values


def _path_log_density(log_initial: torch.Tensor, log_transition: torch.Tensor, log_emission: torch.Tensor,
                      path: torch.Tensor) -> torch.Tensor:
    """log p(x, z = path | theta), (...), for paths (..., T)."""
    K = log_emission.shape[-1]
    batch = path.shape[:-1]
    start = log_initial.expand(batch + (K,)).gather(-1, path[..., :1]).squeeze(-1)
    previous = path[..., :-1, None].expand(batch + (path.shape[-1] - 1, K))
    rows = log_transition.expand(batch + (K, K)).gather(-2, previous)  # rows A[z_{t-1}, :]
    moves = rows.gather(-1, path[..., 1:, None]).squeeze(-1).sum(-1)
    emitted = log_emission.expand(batch + log_emission.shape[-2:]).gather(-1, path.unsqueeze(-1)).squeeze(-1).sum(-1)
    return start + moves + emitted


def viterbi(log_initial: torch.Tensor, log_transition: torch.Tensor,
            log_emission: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The most probable state path argmax_z p(z | x, theta), (..., T) int64, and its
    joint log density log p(x, z* | theta), (...).

    The max-product recursion runs as a pairwise max-plus matrix product (vectorised over
    time, like :func:`forward_log_evidence`), and the path is the gradient of the best
    score with respect to the emission log-factors, which is one-hot on the maximising path
    (the max-plus analogue of the marginals-as-gradient identity; ~20x faster than the
    step-by-step recursion with back-pointers at T = 1000). The path is checked against
    the score it must attain, with the textbook recursion as the fallback.
    """
    log_initial, log_transition = log_initial.clamp_min(_LOG_ZERO), log_transition.clamp_min(_LOG_ZERO)
    batch = torch.broadcast_shapes(log_initial.shape[:-1], log_transition.shape[:-2], log_emission.shape[:-2])
    num_steps, K = log_emission.shape[-2:]
    if num_steps == 1:
        score, last = (log_initial + log_emission[..., 0, :]).max(-1)
        return last.unsqueeze(-1).expand(batch + (1,)), score.expand(batch)
    with torch.enable_grad():
        leaf = log_emission.detach().expand(batch + (num_steps, K)).clone().requires_grad_()
        first = log_initial.detach() + leaf[..., 0, :]
        matrices = log_transition.detach().unsqueeze(-3) + leaf[..., 1:, None, :]
        while matrices.shape[-3] > 1:
            num = matrices.shape[-3]
            even = num - num % 2
            paired = _max_matmul(matrices[..., 0:even:2, :, :], matrices[..., 1:even:2, :, :])
            matrices = torch.cat([paired, matrices[..., even:, :, :]], -3) if num % 2 else paired
        score = (first.unsqueeze(-1) + matrices.squeeze(-3)).flatten(-2).max(-1).values
        (indicator,) = torch.autograd.grad(score.sum(), leaf)
    path = indicator.argmax(-1)
    score = score.detach()
    attained = _path_log_density(log_initial, log_transition, log_emission, path)
    one_hot = (indicator.sum(-1) == 1).all() and ((indicator == 0) | (indicator == 1)).all()
    if not (one_hot and torch.allclose(attained, score, rtol=1e-12, atol=1e-9)):
        return _viterbi_sequential(log_initial, log_transition, log_emission)
    return path, score


def sample_paths(log_initial: torch.Tensor, log_transition: torch.Tensor, log_emission: torch.Tensor,
                 num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(num_samples, ..., T) exact draws z ~ p(z | x, theta) by forward filtering,
    backward sampling: z_T ~ p(z_T | x), then z_t ~ p(z_t | x_{1..t}) A[z_t, z_{t+1}]."""
    filtered, _ = _filter(log_initial, log_transition, log_emission)
    num_steps, K = filtered.shape[-2], filtered.shape[-1]
    filtered = filtered.expand((num_samples,) + filtered.shape)
    transition = log_transition.exp().expand(filtered.shape[:-2] + (K, K))

    def draw(probs: torch.Tensor) -> torch.Tensor:  # inverse CDF, batched over any shape
        u = torch.rand(probs.shape[:-1] + (1,), generator=generator, dtype=probs.dtype)
        cdf = probs.cumsum(-1)
        return (cdf < u * cdf[..., -1:]).sum(-1).clamp_max(K - 1)

    state = draw(filtered[..., -1, :])
    path = [state]
    for t in range(num_steps - 2, -1, -1):
        column = transition.gather(-1, state[..., None, None].expand(state.shape + (K, 1))).squeeze(-1)
        state = draw(filtered[..., t, :] * column)
        path.append(state)
    return torch.stack(path[::-1], -1)


# --- the model -----------------------------------------------------------------------
_PROCESS = __doc__.split("Generative process::")[1].split("Ordering")[0].strip("\n")
#: Default K=2: a sticky two-regime chain (expected dwell times 20 and 10 steps) with
#: well-separated means, the shape of the Nile's level shift after 1898 on standardised data.
_DEFAULT_2 = {"initial": (0.5, 0.5), "transition": ((0.95, 0.05), (0.10, 0.90)),
              "locs": (-1.0, 1.0), "scales": (0.5, 0.7)}
_SITES = ("initial", "transition", "locs", "scales")


def _state_site(t: int) -> str:
    return f"state_{t}"


@register_model
@dataclass(frozen=True)
class HiddenMarkovModel(ZooModel):
    """Bayesian Gaussian HMM (see the module docstring for the generative process).

    True parameters default to the documented K=2 chain (initial 0.5/0.5, transition rows
    0.95/0.05 and 0.10/0.90, means -1/+1, standard deviations 0.5/0.7). For other K they
    default to a uniform initial distribution, self-transition 0.9 with the rest spread
    evenly, means spaced 2 apart and centred on 0, and standard deviations 0.5. ``transition``
    is given as K rows of K numbers, each row summing to 1.
    """

    num_states: int = 2
    initial: tuple[float, ...] | None = None
    transition: tuple[tuple[float, ...], ...] | None = None
    locs: tuple[float, ...] | None = None
    scales: tuple[float, ...] | None = None
    initial_concentration: float = 1.0
    transition_concentration: float = 1.0
    mean_prior_loc: float = 0.0
    mean_prior_scale: float = 5.0
    scale_prior_loc: float = 0.0
    scale_prior_scale: float = 1.0

    name = "hmm"
    info = ModelInfo(
        generative_process=_PROCESS,
        global_sites=_SITES,
        local_sites=("states",),
        targets=("posterior", "latent"),
        datasets={
            "simulated": "draws from the instance's true parameters (simulate)",
            "nile": "100 annual flows of the Nile at Aswan, 1871-1970 (1-D sequence, standardised)",
        },
        literature=(
            "Rabiner (1989) Proceedings of the IEEE 77:257-286",
            "Fruhwirth-Schnatter (2006) Finite Mixture and Markov Switching Models, chapters 10-11",
            "Chib (1996) Journal of Econometrics 75:79-97",
            "Scott (2002) JASA 97:337-351",
        ),
    )

    def __post_init__(self) -> None:
        check_integer("hmm", "num_states", self.num_states, MIN_STATES, MAX_STATES)
        for key in ("initial_concentration", "transition_concentration", "mean_prior_scale", "scale_prior_scale"):
            check_positive("hmm", key, getattr(self, key))
        self.true_params()  # validates user-given parameters

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
        if name != "nile":
            raise ValueError(f"hmm: unknown dataset {name!r}; accepted: nile")
        return standardise(load_csv("nile")["flow_1e8_m3"])

    # --- generative model ------------------------------------------------------------
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        if isinstance(num_datapoints, bool) or not isinstance(num_datapoints, int) or num_datapoints < 1:
            raise ValueError(f"hmm: num_datapoints must be a positive integer, got {num_datapoints!r}")
        params = self.true_params()
        generator = torch.Generator().manual_seed(seed)
        states = torch.empty(num_datapoints, dtype=torch.long)
        states[0] = torch.multinomial(params["initial"], 1, generator=generator)
        for t in range(1, num_datapoints):
            states[t] = torch.multinomial(params["transition"][states[t - 1]], 1, generator=generator)
        noise = torch.randn(num_datapoints, generator=generator, dtype=torch.float64)
        data = params["locs"][states] + params["scales"][states] * noise
        return Simulation(data=data, true_params=params, true_latents={"states": states})

    def _priors(self) -> dict[str, dist.Distribution]:
        K = self.num_states
        f64 = dict(dtype=torch.float64)
        return {
            "initial": dist.Dirichlet(torch.full((K,), float(self.initial_concentration), **f64)),
            "transition": dist.Dirichlet(torch.full((K, K), float(self.transition_concentration), **f64)).to_event(1),
            "locs": OrderedNormal(torch.tensor(float(self.mean_prior_loc), **f64),
                                  torch.tensor(float(self.mean_prior_scale), **f64), K),
            "scales": dist.LogNormal(torch.tensor(float(self.scale_prior_loc), **f64),
                                     torch.tensor(float(self.scale_prior_scale), **f64)).expand([K]).to_event(1),
        }

    def _globals(self, params: Mapping[str, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        if params is not None:
            return tuple(params[site] for site in _SITES)
        priors = self._priors()
        return tuple(pyro.sample(site, priors[site]) for site in _SITES)

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Textbook form: a ``pyro.markov`` chain of states, each marked for parallel
        enumeration (two enumeration dims suffice: each state depends on the last only)."""
        initial, transition, locs, scales = self._globals(params)
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
        initial, transition, locs, scales = self._globals(params)
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
        # Start the means at evenly spaced quantiles of the data (strictly increasing).
        start = x.quantile(torch.linspace(0.5 / K, 1 - 0.5 / K, K, **f64)) + 1e-3 * torch.arange(K, **f64)
        locs_loc = pyro.param("locs_loc", OrderedTransform().inv(start))
        locs_scale = pyro.param("locs_scale", torch.full((K,), 0.1, **f64), constraint=constraints.positive)
        pyro.sample("locs", dist.TransformedDistribution(dist.Normal(locs_loc, locs_scale).to_event(1),
                                                         [OrderedTransform()]))
        scales_loc = pyro.param("scales_loc", torch.zeros(K, **f64))
        scales_scale = pyro.param("scales_scale", torch.full((K,), 0.1, **f64), constraint=constraints.positive)
        pyro.sample("scales", dist.LogNormal(scales_loc, scales_scale).to_event(1))

    # --- targets ---------------------------------------------------------------------
    def _prior_log_prob(self, draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(prior.log_prob(draws[site]) for site, prior in self._priors().items())

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        data = self.validate(data)
        num_steps, K = data.shape[0], self.num_states
        sites = tuple(_state_site(t) for t in range(num_steps))

        def logs(draws: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return (draws["initial"].log(), draws["transition"].log(),
                    emission_log_prob(data, draws["locs"], draws["scales"]))

        def chunked(algorithm: Any, draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
            """``algorithm`` over the draws in chunks: the pairwise scan holds (S, T/2, K, K, K)
            tensors and its autograd graph, ~0.5 GB for S = 2048, T = 1000, K = 3 at once."""
            size = max(1, 2 ** 22 // (num_steps * K ** 3))
            num = next(iter(draws.values())).shape[0]
            return torch.cat([algorithm(*logs({k: v[i:i + size] for k, v in draws.items()}))
                              for i in range(0, num, size)])

        if target == "posterior":
            return Target(
                name="posterior",
                model=lambda: self.model(data),
                collapsed_model=lambda: self.collapsed_model(data),
                latent_sites=_SITES,
                discrete_sites=(),
                max_plate_nesting=0,
                quantities=lambda draws: {k: draws[k] for k in _SITES},
                local_marginals=lambda draws: {"states": chunked(smoothed_marginals, draws)},
                # log p(x_t | x_{<t}, theta): the sequence's likelihood does not factor over t
                # once the states are summed out, so pointwise terms are the one-step-ahead
                # predictive densities (they sum to log p(x | theta); PSIS-LOO on them is
                # leave-future-out flavoured, Bürkner, Gabry & Vehtari 2020).
                pointwise_log_likelihood=lambda draws: chunked(one_step_log_likelihood, draws),
                log_density=lambda draws: self._prior_log_prob(draws) + forward_log_evidence(*logs(draws)),
            )

        params = self.true_params()
        log_initial, log_transition, log_emission = logs(params)

        def states_of(draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
            """(S, T) integer draws, or (S, T, K) probability vectors."""
            values = [draws[s] for s in sites]
            if all(not v.is_floating_point() for v in values):
                return torch.stack(values, 1)
            return torch.stack([as_probabilities(v, K) for v in values], 1)

        def pointwise(draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
            states = states_of(draws)
            if not states.is_floating_point():
                return log_emission.expand(states.shape + (K,)).gather(-1, states.unsqueeze(-1)).squeeze(-1)
            return (states * log_emission).sum(-1)

        def log_density(draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
            """log p(x, z | theta); for probability vectors, its expectation under them."""
            states = states_of(draws)
            if not states.is_floating_point():
                return (log_initial[states[:, 0]] + log_transition[states[:, :-1], states[:, 1:]].sum(-1)
                        + pointwise(draws).sum(-1))

            def expect(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
                # 0 * log 0 counts as 0: a zero-probability move nobody takes costs nothing.
                return torch.where(weights > 0, weights * values, torch.zeros_like(values))

            pairs = states[:, :-1, :, None] * states[:, 1:, None, :]
            return (expect(states[:, 0], log_initial).sum(-1) + expect(pairs, log_transition).sum((-1, -2, -3))
                    + pointwise(draws).sum(-1))

        def exact() -> Reference:
            path, path_log_density = viterbi(log_initial, log_transition, log_emission)
            return Reference(
                log_evidence=float(forward_log_evidence(log_initial, log_transition, log_emission)),
                log_evidence_se=0.0,
                exact=True,
                moments={},
                local_marginals={"states": smoothed_marginals(log_initial, log_transition, log_emission)},
                provenance={"method": "exact: log p(x|theta) by the forward algorithm, p(z_t|x,theta) by "
                                      "forward-backward (gradient of log Z), MAP path by Viterbi (float64)",
                            "model": self.name, "config": self.config(),
                            "viterbi_path": path.tolist(), "viterbi_log_density": float(path_log_density)},
            )

        return Target(
            name="latent",
            model=lambda: self.model(data, params),
            # The inferred states are supplied by the method, so nothing is enumerated here.
            collapsed_model=lambda: self.model(data, params),
            latent_sites=sites,
            discrete_sites=sites,
            max_plate_nesting=0,
            quantities=lambda draws: {},
            local_marginals=lambda draws: {"states": torch.stack([as_probabilities(draws[s], K) for s in sites], 1)},
            pointwise_log_likelihood=pointwise,
            log_density=log_density,
            exact=exact,
        )
