"""Linear-Gaussian state-space model: the continuous-state sibling of the HMM.

Generative process::

    state_variance       ~ LogNormal(variance_prior_loc, variance_prior_scale), shape (D,)
    observation_variance ~ LogNormal(variance_prior_loc, variance_prior_scale), shape (P,)
    z_1 ~ Normal(initial_loc * 1_D, initial_scale^2 I_D)                # integrated out
    for t in 2..T:
        z_t ~ Normal(A z_{t-1}, diag(state_variance))                  # integrated out
    for t in 1..T:
        x_t ~ Normal(C z_t, diag(observation_variance))

``A`` (``transition_matrix``, D x D) and ``C`` (``emission_matrix``, P x D) are known
hyperparameters. The default, A = C = 1, is the local-level model (a random walk observed
with noise; Durbin & Koopman 2012, ch. 2); ``A = ((1, 1), (0, 1))``, ``C = ((1, 0),)`` is the
local linear trend. ``posterior`` infers the two variance vectors with the states
integrated out; ``latent`` fixes them at the instance's values and infers the state path
``states`` (T x D), whose exact posterior is the Rauch-Tung-Striebel smoother's.

Three implementations of one density. ``model`` is the textbook ``pyro.markov`` loop, one
sample site a state; ``collapsed_model`` is Pyro's ``GaussianHMM``, which integrates the
states out by a parallel scan over time (the ``posterior`` target's); ``path_model`` draws
the whole path as one site (``zoo.distributions.LinearGaussianChain``, the ``latent``
target's: with T sites, Pyro's per-site overhead made a 1000-step SVI fit on T = 200 take
minutes). ``GaussianHMM`` starts from a state
*before* the first observation, so its first transition matrix is zero and its first
transition noise is the law of z_1: the earlier state is then irrelevant. The exact
algorithms (Kalman filter, smoother, backward sampling) are in :mod:`zoo.exact.kalman`.

The first state has a proper prior here, so that the model can simulate and the
posterior is proper. Durbin & Koopman's maximum-likelihood table for the Nile uses an
*exact diffuse* first state instead; :func:`zoo.exact.kalman.kalman_filter` offers that
treatment (``diffuse=True``) and the tests reproduce their table with it.

References: Durbin & Koopman (2012) *Time Series Analysis by State Space Methods*, 2nd ed.
(the local-level model and the Nile, ch. 2); West & Harrison (1997) *Bayesian Forecasting
and Dynamic Models*; Frühwirth-Schnatter (1994) J. Time Series Analysis 15:183.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from zoo.base import (SIMULATED, Draws, LatentTarget, ModelInfo, Moments, PosteriorTarget, Reference, Simulation,
                      Target, ZooModel, generative_process)
from zoo.datasets import load_csv, standardise
from zoo.distributions import LinearGaussianChain
from zoo.exact.kalman import KalmanFilter, kalman_filter, rts_smoother, sample_states
from zoo.validation import check_num_datapoints, check_positive, validate_data

__all__ = ["StateSpaceModel"]

_F64 = torch.float64
_PROCESS = generative_process(__doc__)
_SITES = ("state_variance", "observation_variance")
#: The largest state or observation dimension: "a small D-dimensional version".
MAX_DIM = 10
#: Below this ratio of the smallest to the largest variance (the first state's included),
#: the posterior's likelihood leaves GaussianHMM's information form for the Kalman filter.
STIFF_VARIANCE_RATIO = 1e-7
#: Default true variances: roughly the Nile's on standardised data (Durbin & Koopman's
#: 1469.1 and 15099 over its sample variance, 28638).
_DEFAULT_STATE_VARIANCE, _DEFAULT_OBSERVATION_VARIANCE = 0.05, 0.5


def _state_site(t: int) -> str:
    return f"state_{t}"


def _matrix(key: str, rows: Any) -> torch.Tensor:
    """A hyperparameter matrix given as rows of numbers, or ``ValueError`` saying what is accepted."""
    try:
        out = torch.tensor(rows, dtype=_F64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"state_space: {key} must be rows of numbers, e.g. ((1.0,),), got {rows!r}") from error
    if out.dim() != 2 or not 1 <= min(out.shape) <= max(out.shape) <= MAX_DIM or not torch.isfinite(out).all():
        raise ValueError(f"state_space: {key} must be a matrix of finite numbers with 1..{MAX_DIM} rows and "
                         f"columns, given as rows, e.g. ((1.0,),); got {rows!r}")
    return out


@dataclass(frozen=True)
class StateSpaceModel(ZooModel):
    """Bayesian linear-Gaussian state-space model (see the module docstring for the
    generative process). True variances default to 0.05 for every state and 0.5 for every
    observed coordinate."""

    transition_matrix: tuple[tuple[float, ...], ...] = ((1.0,),)
    emission_matrix: tuple[tuple[float, ...], ...] = ((1.0,),)
    state_variance: tuple[float, ...] | None = None
    observation_variance: tuple[float, ...] | None = None
    initial_loc: float = 0.0
    initial_scale: float = 2.0
    variance_prior_loc: float = -1.0
    variance_prior_scale: float = 1.5

    name = "state_space"
    true_parameter_fields = _SITES
    info = ModelInfo(
        generative_process=_PROCESS,
        global_sites=_SITES,
        local_sites=("states",),
        datasets={**SIMULATED, "nile": "100 annual flows of the Nile at Aswan, 1871-1970 (T x 1, standardised)"},
        literature=(
            "Durbin & Koopman (2012) Time Series Analysis by State Space Methods, 2nd edition, chapters 2 and 4",
            "Rauch, Tung & Striebel (1965) AIAA Journal 3:1445-1450",
            "Fruhwirth-Schnatter (1994) Journal of Time Series Analysis 15:183-202",
        ),
    )

    def __post_init__(self) -> None:
        transition, emission = self.matrices()
        if transition.shape[0] != transition.shape[1]:
            raise ValueError(f"state_space: transition_matrix must be square (D x D), got shape "
                             f"{tuple(transition.shape)}")
        if emission.shape[1] != transition.shape[0]:
            raise ValueError(f"state_space: emission_matrix must have one column per state ({transition.shape[0]}), "
                             f"got shape {tuple(emission.shape)}")
        for key in ("initial_scale", "variance_prior_scale"):
            check_positive(self.name, key, getattr(self, key))
        for key in ("initial_loc", "variance_prior_loc"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"state_space: {key} must be a finite number, got {value!r}")
        self.true_params()  # validates user-given variances

    # --- parameters ------------------------------------------------------------------
    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, C) as float64 tensors."""
        return _matrix("transition_matrix", self.transition_matrix), _matrix("emission_matrix", self.emission_matrix)

    @property
    def state_dim(self) -> int:
        return len(self.transition_matrix)

    @property
    def observation_dim(self) -> int:
        return len(self.emission_matrix)

    def true_params(self) -> dict[str, torch.Tensor]:
        params = {}
        for key, size, default in (("state_variance", self.state_dim, _DEFAULT_STATE_VARIANCE),
                                   ("observation_variance", self.observation_dim, _DEFAULT_OBSERVATION_VARIANCE)):
            given = getattr(self, key)
            try:
                value = torch.full((size,), default, dtype=_F64) if given is None else torch.tensor(given, dtype=_F64)
            except (TypeError, ValueError) as error:
                raise ValueError(f"state_space: {key} must be {size} positive numbers, got {given!r}") from error
            if value.shape != (size,) or not (torch.isfinite(value) & (value > 0)).all():
                raise ValueError(f"state_space: {key} must be {size} positive numbers, got {given!r}")
            params[key] = value
        return params

    def validate(self, data: Any) -> torch.Tensor:
        """A (T, P) sequence of finite numbers; a 1-D sequence is one series (T, 1)."""
        x = validate_data(data, name=self.name, ndim=(1, 2), width=self.observation_dim)
        x = x.unsqueeze(-1) if x.dim() == 1 else x
        if x.shape[1] != self.observation_dim:
            raise ValueError(f"state_space: data must have {self.observation_dim} column(s) to match "
                             f"emission_matrix, got shape {tuple(x.shape)}")
        return x

    def load_dataset(self, name: str) -> torch.Tensor:
        if name != "nile":
            raise ValueError(f"state_space: unknown dataset {name!r}; accepted: nile")
        if self.observation_dim != 1:
            raise ValueError(f"state_space: the Nile is one series, but emission_matrix has {self.observation_dim} rows")
        return standardise(load_csv("nile")["flow_1e8_m3"]).unsqueeze(-1)

    # --- generative model ------------------------------------------------------------
    def simulate(self, num_datapoints: int, seed: int) -> Simulation:
        check_num_datapoints(self.name, num_datapoints)
        params = self.true_params()
        transition, emission = self.matrices()
        generator = torch.Generator().manual_seed(seed)

        def noise(size: int, variance: torch.Tensor) -> torch.Tensor:
            return variance.sqrt() * torch.randn(size, generator=generator, dtype=_F64)

        states = [self.initial_loc + self.initial_scale * torch.randn(self.state_dim, generator=generator, dtype=_F64)]
        for _ in range(1, num_datapoints):
            states.append(transition @ states[-1] + noise(self.state_dim, params["state_variance"]))
        path = torch.stack(states)
        data = path @ emission.T + torch.stack([noise(self.observation_dim, params["observation_variance"])
                                                for _ in range(num_datapoints)])
        return Simulation(data=data, true_params=params, true_latents={"states": path})

    def priors(self) -> dict[str, dist.Distribution]:
        def prior(size: int) -> dist.Distribution:
            # Built by expand, as zoo.components does: an expanded distribution keeps the
            # validation setting it was built under (PosteriorTarget builds priors unvalidated).
            return dist.LogNormal(torch.tensor(float(self.variance_prior_loc), dtype=_F64),
                                  torch.tensor(float(self.variance_prior_scale), dtype=_F64)).expand((size,)).to_event(1)

        return {"state_variance": prior(self.state_dim), "observation_variance": prior(self.observation_dim)}

    def initial_law(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(m_0, P_0) of the first state."""
        return (torch.full((self.state_dim,), float(self.initial_loc), dtype=_F64),
                self.initial_scale ** 2 * torch.eye(self.state_dim, dtype=_F64))

    def model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """Textbook form: a ``pyro.markov`` chain of continuous states, each a sample site.
        Under an outer particle plate at dim -1 a state is (S, D), the variances (S, D) and
        (S, P): row vectors, so A z is ``z @ A^T``."""
        state_variance, observation_variance = self.sample_globals(params).values()
        transition, emission = self.matrices()
        state = None
        for t in pyro.markov(range(data.shape[0])):
            if state is None:
                law = dist.Normal(torch.full((self.state_dim,), float(self.initial_loc), dtype=_F64),
                                  self.initial_scale)
            else:
                law = dist.Normal(state @ transition.T, state_variance.sqrt())
            state = pyro.sample(_state_site(t), law.to_event(1))
            pyro.sample(f"obs_{t}", dist.Normal(state @ emission.T, observation_variance.sqrt()).to_event(1),
                        obs=data[t])

    def path_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """The same density with the whole state path one sample site, ``states`` (T, D)."""
        state_variance, observation_variance = self.sample_globals(params).values()
        transition, emission = self.matrices()
        first_loc, first_cov = self.initial_law()
        states = pyro.sample("states", LinearGaussianChain(first_loc, first_cov.diagonal().sqrt(), transition,
                                                           state_variance.sqrt(), data.shape[0]))
        # Under an outer particle plate at dim -1 the path is (S, T, D) and the variance (S, P).
        pyro.sample("obs", dist.Normal(states @ emission.T, observation_variance.sqrt().unsqueeze(-2)).to_event(2),
                    obs=data)

    def collapsed_model(self, data: torch.Tensor, params: Mapping[str, torch.Tensor] | None = None) -> None:
        """The same density with the states integrated out by ``GaussianHMM``."""
        state_variance, observation_variance = self.sample_globals(params).values()
        pyro.sample("obs", self.gaussian_hmm(state_variance, observation_variance, data.shape[0]), obs=data)

    def gaussian_hmm(self, state_variance: torch.Tensor, observation_variance: torch.Tensor,
                     num_steps: int) -> dist.GaussianHMM:
        """Pyro's ``GaussianHMM`` of this model, batched over the variances' leading shape
        (Pyro's convention is row vectors: its matrices are A^T and C^T)."""
        transition, emission = self.matrices()
        D = self.state_dim
        batch = torch.broadcast_shapes(state_variance.shape[:-1], observation_variance.shape[:-1])
        first_loc, first_cov = self.initial_law()
        # Step 1's "transition" ignores the (irrelevant) state before it: zero matrix, z_1's law as noise.
        matrices = torch.cat([torch.zeros(1, D, D, dtype=_F64), transition.T.expand(num_steps - 1, D, D)])
        locs = torch.cat([first_loc[None], torch.zeros(num_steps - 1, D, dtype=_F64)]).expand(batch + (num_steps, D))
        scales = torch.cat([first_cov.diagonal().sqrt().expand(batch + (1, D)),
                            state_variance.sqrt().unsqueeze(-2).expand(batch + (num_steps - 1, D))], -2)
        return dist.GaussianHMM(
            dist.Normal(torch.zeros(batch + (D,), dtype=_F64), 1.0).to_event(1),
            matrices, dist.Normal(locs, scales).to_event(1),
            emission.T, dist.Normal(0.0, observation_variance.sqrt().unsqueeze(-2)).to_event(1), duration=num_steps)

    def guide(self, data: torch.Tensor) -> None:
        """Mean-field log-normal guide over the two variance vectors."""
        x = self.validate(data)
        # Start both at a share of the data's variance: the noise around a smooth level.
        log_variance = math.log(max(float(x.var(0).mean()), 1e-6)) if len(x) > 1 else 0.0
        for site, size, share in (("state_variance", self.state_dim, 0.1),
                                  ("observation_variance", self.observation_dim, 0.5)):
            loc = pyro.param(f"{site}_loc", torch.full((size,), log_variance + math.log(share), dtype=_F64))
            scale = pyro.param(f"{site}_scale", torch.full((size,), 0.5, dtype=_F64), constraint=constraints.positive)
            pyro.sample(site, dist.LogNormal(loc, scale).to_event(1))

    def target(self, data: Any, target: str) -> Target:
        self.check_target(target)
        data = self.validate(data)
        return StateSpacePosterior(self, data) if target == "posterior" else StateSpaceLatent(self, data)

    def filter(self, data: torch.Tensor, draws: Draws) -> KalmanFilter:
        """The Kalman filter of ``data`` at variance draws ``(..., D)`` and ``(..., P)``."""
        transition, emission = self.matrices()
        return kalman_filter(data, transition, emission, torch.diag_embed(draws["state_variance"]),
                             torch.diag_embed(draws["observation_variance"]), *self.initial_law())


class StateSpacePosterior(PosteriorTarget):
    """The variances, the states integrated out (by ``GaussianHMM``'s parallel scan; the
    one-step predictive densities by the Kalman filter)."""

    max_plate_nesting = 0
    observation_dim = "time"
    dims = {"state_variance": ("state_component",), "observation_variance": ("observed_component",)}

    def model(self) -> None:
        self.zoo_model.collapsed_model(self.data)  # the states are continuous: integrated out, not enumerated

    def log_likelihood(self, draws: Draws) -> torch.Tensor:
        state_variance, observation_variance = draws["state_variance"], draws["observation_variance"]
        # Unvalidated, here and inside GaussianHMM's algebra: a sampler's draw with a zero
        # variance must get a non-finite density (Target rule 1), not a ValueError.
        with pyro.validation_enabled(False):
            out = self.zoo_model.gaussian_hmm(state_variance, observation_variance,
                                              self.data.shape[0]).log_prob(self.data)
        # GaussianHMM works in information form, which loses digits as one noise precision
        # dwarfs the others: its error is ~1e-10 nats at a variance ratio of 1e-7 but ~1e286 at
        # 1e-17 (Nile, float64), where a Student-t proposal's tail or a sampler's wild
        # trajectory can land. Such draws go to the covariance-form Kalman filter, exact there.
        variances = torch.cat([state_variance, observation_variance,
                               torch.tensor([self.zoo_model.initial_scale ** 2], dtype=_F64).expand(
                                   state_variance.shape[:-1] + (1,))], -1)
        stiff = variances.amin(-1) < STIFF_VARIANCE_RATIO * variances.amax(-1)
        if bool(stiff.any()):
            out = out.clone()
            out[stiff] = self.zoo_model.filter(self.data, {"state_variance": state_variance[stiff],
                                                           "observation_variance": observation_variance[stiff]}
                                               ).step_log_likelihood.sum(-1)
        return out

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        # log p(x_t | x_{<t}, theta), the one-step-ahead predictive densities (see the HMM).
        return self.zoo_model.filter(self.data, draws).step_log_likelihood


class StateSpaceLatent(LatentTarget):
    """The state path ``states`` (T, D), the variances fixed at the model's true values;
    exact by the Kalman filter and the Rauch-Tung-Striebel smoother."""

    latent_sites = ("states",)
    max_plate_nesting = 0
    observation_dim = "time"
    dims = {"states": ("time", "state_component")}
    has_exact = True

    def __init__(self, zoo_model: StateSpaceModel, data: torch.Tensor) -> None:
        super().__init__(zoo_model, data)
        self.transition, self.emission = zoo_model.matrices()
        self.filtered = zoo_model.filter(data, self.params)
        first_loc, first_cov = zoo_model.initial_law()
        self.chain = LinearGaussianChain(first_loc, first_cov.diagonal().sqrt(), self.transition,
                                         self.params["state_variance"].sqrt(), data.shape[0])

    def model(self) -> None:
        self.zoo_model.path_model(self.data, self.params)

    def pointwise_log_likelihood(self, draws: Draws) -> torch.Tensor:
        emitted = draws["states"] @ self.emission.T
        return dist.Normal(emitted, self.params["observation_variance"].sqrt()).log_prob(self.data).sum(-1)

    def log_density(self, draws: Draws) -> torch.Tensor:
        return self.chain.log_prob(draws["states"]) + self.pointwise_log_likelihood(draws).sum(-1)

    def quantities(self, draws: Draws) -> Draws:
        return {"states": draws["states"]}

    def exact_draws(self, num_draws: int) -> Draws:
        """Whole state paths by forward filtering, backward sampling."""
        return {"states": sample_states(self.filtered, self.transition, num_draws)}

    def exact(self) -> Reference:
        locs, covs = rts_smoother(self.filtered, self.transition)
        sd = covs.diagonal(dim1=-2, dim2=-1).sqrt()
        return Reference(
            log_evidence=float(self.filtered.step_log_likelihood.sum()),
            log_evidence_se=0.0,
            exact=True,
            moments={"states": Moments(locs, sd, torch.zeros_like(sd))},
            local_marginals={},
            provenance={"method": "exact: log p(x|theta) by the Kalman filter, p(z_t|x,theta) by the "
                                  "Rauch-Tung-Striebel smoother (float64)",
                        "model": self.zoo_model.name, "config": self.zoo_model.config()},
        )
