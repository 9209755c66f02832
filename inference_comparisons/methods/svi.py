"""Stochastic variational inference with automatic guides, in three families.

The guide of ``svi`` is mean-field: ``AutoNormal`` over the target's continuous latent sites
and, on targets whose discrete locals are themselves inferred (``latent``), ``AutoDiscreteParallel``
over them. Discrete sites that are *not* inferred are enumerated by ``TraceEnum_ELBO``.
``svi_lowrank`` and ``svi_fullrank`` replace ``AutoNormal`` over the continuous sites by a
richer family (a :data:`GuideFamily`): a Gaussian with a low-rank-plus-diagonal covariance,
and a Gaussian with a full covariance. Each is fitted by the same ELBO, step-size schedule and
budget, and reports the same evidence estimate, so their rows differ only by the family;
``svi_fullrank``'s gradient is the path derivative alone
(:mod:`~inference_comparisons.estimators.path_derivative`), without which its dim²/2
Cholesky entries random-walk in the noise.
``TraceMeanField_ELBO`` is avoided on purpose: with autoguides it drops the Jacobian of
constrained sites (checked by running it: its ELBO exceeded log p(x)).

The reported evidence is the final ELBO, estimated with many guide draws in one vectorised
pass; the same draws, used as importance weights, give the PSIS k̂ of the guide as a
proposal (Yao et al. 2018, "Yes, but did it work?").
"""

from __future__ import annotations

import math
from typing import Callable, ClassVar

import pyro
import pyro.optim
import pyro.poutine as poutine
import torch
from pyro.infer import SVI as PyroSVI
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.distributions import constraints
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from pyro.distributions.transforms import affine_autoregressive
from pyro.infer.autoguide import (AutoDiscreteParallel, AutoGuide, AutoGuideList, AutoLowRankMultivariateNormal,
                                  AutoMultivariateNormal, AutoNormal, AutoNormalizingFlow)

from zoo.base import Target

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.particles import importance_log_weights
from inference_comparisons.estimators.path_derivative import PathDerivativeELBO
from inference_comparisons.estimators.weights import psis_khat

__all__ = ["CHOLESKY_STEP_FACTOR", "SVI", "FittedGuide", "GuideFamily", "SVIFlow", "SVIFullRank", "SVILowRank",
           "fit_guide", "flow", "guide_draws", "mean_field", "needs_continuous_latents", "optimiser", "run_steps"]

#: Guide draws used to estimate the final ELBO and k̂: its Monte Carlo standard error is
#: sd(log w) / 64, small next to the gaps being measured.
NUM_EVAL_PARTICLES = 4096
#: Adam's initial step size: large enough to converge in ~10^3 steps on the zoo's models.
LEARNING_RATE = 0.02
#: Over the last quarter of a run the step size decays geometrically to this fraction of
#: LEARNING_RATE. At a constant step size a Monte Carlo ELBO settles into a noise floor set
#: by the step size, not at the guide family's optimum, and the table would report optimiser
#: noise as the method's bias. Measured over seeds 1-3 (simulated data, ELBO error in nats at
#: 1,000 / 3,000 steps), constant -> this schedule: factor analysis' latent target -37.0 /
#: -37.4 -> -30.1 / -29.3, PPCA's -60.6 / -61.0 -> -53.2 / -52.4, the mixture's posterior
#: -2.3 / -2.0 -> -2.1 / -1.4. Decaying over the second half instead stalled the mixture at
#: 1,000 steps (-16 nats: it leaves its initial mode late); from the first step, it costs
#: small budgets progress.
FINAL_LEARNING_RATE_FRACTION = 0.1
#: The guides' initial scale on the unconstrained space: a narrow start, so that the first
#: steps move the location rather than chase noise from wide draws.
INIT_SCALE = 0.05

#: Step-size factor of a full-covariance guide's Cholesky factor under the path-derivative
#: gradient. That gradient is consistent rather than noisy, so Adam, which steps every one of
#: the factor's dim²/2 entries by about the step size, moved them all at once: on factor
#: analysis' 400 latents the factor was ill-conditioned within 100 steps and the ELBO
#: overflowed. A tenth of the step size converged (module docstring of
#: :mod:`~inference_comparisons.estimators.path_derivative`).
CHOLESKY_STEP_FACTOR = 0.1

#: Inverse autoregressive transforms in the flow family.
NUM_FLOW_TRANSFORMS = 2

#: A guide over the continuous sites of a model: a function of the model.
GuideFamily = Callable[[Callable[..., None]], AutoGuide]


def mean_field(model: Callable[..., None]) -> AutoGuide:
    """Independent normals on the unconstrained space (``AutoNormal``)."""
    return AutoNormal(model, init_scale=INIT_SCALE)


def low_rank(model: Callable[..., None]) -> AutoGuide:
    """A normal with covariance D + W Wᵀ, W of Pyro's default rank, √dim rounded."""
    return AutoLowRankMultivariateNormal(model, init_scale=INIT_SCALE)


def full_rank(model: Callable[..., None]) -> AutoGuide:
    """A normal with a full covariance (its Cholesky factor fitted)."""
    return AutoMultivariateNormal(model, init_scale=INIT_SCALE)


class _ElementwiseAffine(TransformModule):
    """x = loc + exp(log_scale) ⊙ z with both learnt: the flow's outer layer, started where
    the other families start (loc 0, the feasible point; scale :data:`INIT_SCALE`)."""

    domain = codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int) -> None:
        super().__init__(cache_size=1)
        self.loc = torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.log_scale = torch.nn.Parameter(torch.full((dim,), math.log(INIT_SCALE), dtype=torch.float64))

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return self.loc + self.log_scale.exp() * z

    def _inverse(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.loc) * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])


def flow(model: Callable[..., None]) -> AutoGuide:
    """A normalising flow: a standard normal through :data:`NUM_FLOW_TRANSFORMS` inverse
    autoregressive transforms (Kingma et al. 2016; Pyro's MADE with one hidden layer of
    3·dim + 1 units) and a learnt elementwise affine map. IAF rather than a spline or
    coupling flow because its forward pass, the one sampling and NeuTra's warp use, is a
    single network call; and it is the flow Hoffman et al. (2019) warped NUTS with. Its
    networks are float64, as the models are."""

    def transform(dim: int) -> ComposeTransformModule:
        # One latent number has nothing to condition on: the affine map alone (a normal).
        parts = [affine_autoregressive(dim, stable=True).to(torch.float64)
                 for _ in range(NUM_FLOW_TRANSFORMS if dim > 1 else 0)]
        return ComposeTransformModule([*parts, _ElementwiseAffine(dim)])

    return AutoNormalizingFlow(model, transform)


def optimiser(steps: int, cholesky_step_factor: float = 1.0) -> pyro.optim.PyroLRScheduler:
    """Adam at LEARNING_RATE for the first three quarters of ``steps``, then decaying
    geometrically to FINAL_LEARNING_RATE_FRACTION of it; :func:`run_steps` advances it. A
    full-covariance guide's Cholesky factor (its ``scale_tril``) steps ``cholesky_step_factor``
    times as far."""
    start = 3 * steps // 4

    def factor(step: int) -> float:
        return FINAL_LEARNING_RATE_FRACTION ** (max(step - start, 0) / max(steps - start, 1))

    def step_size(name: str) -> dict[str, float]:
        return {"lr": LEARNING_RATE * (cholesky_step_factor if name.endswith("scale_tril") else 1.0)}

    return pyro.optim.LambdaLR({"optimizer": torch.optim.Adam, "optim_args": step_size, "lr_lambda": factor})


class FittedGuide:
    """A trained guide, its loss trace and what training cost."""

    def __init__(self, guide: AutoGuideList, losses: list[float], grad_evals: int) -> None:
        self.guide, self.losses, self.grad_evals = guide, losses, grad_evals

    def discrete_probabilities(self, target: Target) -> dict[str, torch.Tensor]:
        """The guide's categorical probabilities of each inferred discrete site, (1, ..., K)."""
        out = {}
        for part in self.guide:
            if isinstance(part, AutoDiscreteParallel):
                for site in target.discrete_sites:
                    out[site] = getattr(part, f"{site}_probs").detach().to(torch.float64)[None]
        return out


def _enumerates(model) -> bool:
    """Whether ``model`` marks any sample site for enumeration."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace()
    return any(site["type"] == "sample" and site["infer"].get("enumerate") for site in trace.nodes.values())


def _fit_categorical_mean_field(target: Target, steps: int) -> FittedGuide:
    """Mean-field categorical guide over a target whose latents are all discrete, fitted by
    the exact ELBO. ``target.log_density`` at probability vectors is E_q[log p(x, z)] under
    independent categoricals (its contract), so ELBO(q) = log_density(q) + H(q) with no Monte
    Carlo noise: the objective TraceEnum_ELBO computes by enumerating the guide, without
    one tensor dimension per site (a 200-step HMM would need 200; torch allows 64)."""
    guide = AutoDiscreteParallel(poutine.block(target.model, expose=list(target.discrete_sites)))
    with torch.no_grad():
        guide()  # builds the prototype and the probability parameters
    # One logits tensor per site shape (an HMM's 200 per-step sites share one), so a step is
    # a few tensor operations rather than a few per site.
    groups: dict[torch.Size, list[str]] = {}
    for site in target.discrete_sites:
        groups.setdefault(getattr(guide, f"{site}_probs").shape, []).append(site)
    logits = {shape: torch.zeros((len(sites),) + shape, dtype=torch.float64, requires_grad=True)
              for shape, sites in groups.items()}
    optimizer = torch.optim.Adam(list(logits.values()), lr=LEARNING_RATE)

    def probabilities() -> dict[str, torch.Tensor]:
        out = {}
        for shape, sites in groups.items():
            stacked = logits[shape].softmax(-1)
            out.update({site: stacked[i] for i, site in enumerate(sites)})
        return out

    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        probs = probabilities()
        entropy = sum(torch.special.entr(logits[shape].softmax(-1)).sum() for shape in groups)
        loss = -(target.log_density({s: p[None] for s, p in probs.items()})[0] + entropy)
        loss.backward()
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"SVI loss became {loss.item()} at step {len(losses)}")
        losses.append(loss.item())
    with torch.no_grad():
        for site, value in probabilities().items():
            setattr(guide, f"{site}_probs", value.clamp_min(1e-300))
    guides = AutoGuideList(target.model)
    guides.append(guide)
    return FittedGuide(guides, losses, grad_evals=steps)


def fit_guide(target: Target, steps: int, family: GuideFamily = mean_field, particles: int = 1,
              path_derivative: bool = False) -> FittedGuide:
    """Fit a guide of ``target`` by ``steps`` Adam steps on the ELBO: ``family`` over the
    continuous sites, mean-field categoricals over inferred discrete ones (the exact ELBO at a
    constant step size when every latent is discrete: no noise floor to decay through;
    otherwise a Monte Carlo ELBO of ``particles`` vectorised draws with :func:`optimiser`'s
    schedule). With ``path_derivative``, and no discrete site to enumerate or guide, its
    gradient is the path derivative alone (:class:`PathDerivativeELBO`) and a Cholesky
    factor steps :data:`CHOLESKY_STEP_FACTOR` as far."""
    if not target.continuous_sites:
        return _fit_categorical_mean_field(target, steps)
    # With no discrete site left to the guide, fit on the collapsed twin: the enumerated sites
    # are summed out exactly either way, so the ELBO and its gradient are the same, and the
    # HMM's pyro.markov model, enumerated step by step, costs ~0.6 s a step (a 300-step run
    # on its posterior: 186 s, against 12 s collapsed).
    model = target.model if target.discrete_sites else target.collapsed_model
    guide = AutoGuideList(model)
    if target.discrete_sites:  # each part sees only its own sites
        guide.append(family(poutine.block(model, expose=list(target.continuous_sites))))
        guide.append(AutoDiscreteParallel(poutine.block(model, expose=list(target.discrete_sites))))
    else:  # the whole model: a part that reads its model's density (laplace's Hessian) needs it
        guide.append(family(model))
    if path_derivative and not target.discrete_sites and not _enumerates(model):
        elbo, schedule = PathDerivativeELBO(particles, target.max_plate_nesting), optimiser(steps, CHOLESKY_STEP_FACTOR)
    else:
        # TraceEnum_ELBO warns when nothing is enumerated (factor analysis: every latent is
        # continuous); Trace_ELBO is the same estimator there.
        elbo_class = TraceEnum_ELBO if _enumerates(model) else Trace_ELBO
        elbo = elbo_class(max_plate_nesting=target.max_plate_nesting, num_particles=particles,
                          vectorize_particles=particles > 1)
        schedule = optimiser(steps)
    return FittedGuide(guide, run_steps(PyroSVI(model, guide, schedule, elbo), steps), grad_evals=steps * particles)


def run_steps(svi: PyroSVI, steps: int) -> list[float]:
    """``steps`` SVI steps, advancing a step-size schedule if the optimiser has one; the loss
    trace, or FloatingPointError at the first non-finite loss."""
    schedule = svi.optim if isinstance(svi.optim, pyro.optim.PyroLRScheduler) else None
    losses = []
    for _ in range(steps):
        loss = svi.step()
        if not math.isfinite(loss):
            raise FloatingPointError(f"SVI loss became {loss} at step {len(losses)}")
        losses.append(loss)
        if schedule is not None:
            schedule.step()
    return losses


def needs_continuous_latents(target: Target) -> str | None:
    """Why a guide over continuous sites (a richer family, a mode) cannot run on ``target``."""
    if target.continuous_sites:
        return None
    return ("every latent of this target is discrete: a guide over continuous sites has nothing to fit "
            "(svi fits the categorical mean field)")


def guide_draws(method: InferenceMethod, target: Target, budget: int, seed: int, guide: AutoGuide,
                losses: list[float] | tuple[float, ...], grad_evals: int,
                discrete_probabilities: dict[str, torch.Tensor] | None = None) -> InferenceResult:
    """The answer of a fitted ``guide``: :data:`NUM_EVAL_PARTICLES` independent draws, their
    mean importance weight as the ELBO (the evidence estimate), the PSIS k̂ of the guide as a
    proposal, and (given) the guide's own discrete marginals rather than a histogram."""
    log_weights, draws = importance_log_weights(
        target.collapsed_model, guide, NUM_EVAL_PARTICLES, target.max_plate_nesting, target.latent_sites)
    moments, marginals = summarise_draws(target, draws)
    if discrete_probabilities:
        marginals = {k: v[0] for k, v in target.local_marginals(discrete_probabilities).items()}
    return InferenceResult(
        method=method.name, target=target.name, budget=budget, budget_unit=method.budget_unit, seed=seed,
        kind=ResultKind.INDEPENDENT, draws=draws,
        log_evidence=float(log_weights.mean()),
        log_evidence_se=float(log_weights.std() / math.sqrt(len(log_weights))),
        moments=moments, local_marginals=marginals,
        cost=Cost(wall_s=0.0, density_evals=NUM_EVAL_PARTICLES, grad_evals=grad_evals),
        diagnostics=Diagnostics(khat=psis_khat(log_weights)), losses=tuple(losses),
    )


class SVI(InferenceMethod):
    name = "svi"
    budget_unit = "steps"
    ladders = {"quick": (300,), "default": (300, 1000, 3000), "thorough": (1000, 3000, 10000)}
    description = ("mean-field SVI (AutoNormal / AutoDiscreteParallel, TraceEnum_ELBO or Trace_ELBO collapsed, Adam "
                   "with its step size decaying 10x over the budget's last quarter)")
    smoke_budget = 20
    #: The guide over the continuous sites.
    family: ClassVar[GuideFamily] = staticmethod(mean_field)
    #: Draws per ELBO gradient (vectorised; each counts as a gradient evaluation).
    particles: ClassVar[int] = 1
    #: Whether the gradient is the path derivative alone (:func:`fit_guide`).
    path_derivative: ClassVar[bool] = False

    def not_applicable(self, target: Target) -> str | None:
        return None if self.family is mean_field else needs_continuous_latents(target)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        fitted = fit_guide(target, budget, self.family, self.particles, self.path_derivative)
        return guide_draws(self, target, budget, seed, fitted.guide, fitted.losses, fitted.grad_evals,
                           fitted.discrete_probabilities(target))


class SVILowRank(SVI):
    name = "svi_lowrank"
    ladders = {"quick": (300,), "default": (1000,), "thorough": (1000, 3000, 10000)}
    description = "SVI with a low-rank-plus-diagonal Gaussian guide (AutoLowRankMultivariateNormal), as svi otherwise"
    family = staticmethod(low_rank)


class SVIFullRank(SVI):
    name = "svi_fullrank"
    ladders = {"quick": (300,), "default": (1000,), "thorough": (1000, 3000, 10000)}
    description = ("SVI with a full-covariance Gaussian guide (AutoMultivariateNormal), 16 draws per gradient, the "
                   "path-derivative ELBO gradient, as svi otherwise")
    family = staticmethod(full_rank)
    # Its Cholesky factor has dim²/2 entries (80,000 on factor analysis' latent target), and
    # one draw's ordinary gradient of each is mostly noise that Adam turns into a random
    # walk: on that target at 1,000 steps, the ELBO error was -301 nats with 1 draw (-75 at
    # 10,000 steps) and -21 with 16 (mean field: -30). The path derivative's noise vanishes
    # at the posterior: 0.0001 nats with 16.
    particles = 16
    path_derivative = True


class SVIFlow(SVI):
    name = "svi_flow"
    ladders = {"quick": (300,), "default": (1000,), "thorough": (1000, 3000, 10000)}
    description = (f"SVI with a normalising-flow guide ({NUM_FLOW_TRANSFORMS} inverse autoregressive transforms and an "
                   "affine map, AutoNormalizingFlow), as svi otherwise")
    family = staticmethod(flow)
    particles = 16
