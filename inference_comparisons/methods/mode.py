"""Answers at the posterior mode: ``map`` and ``em`` (a point) and ``laplace`` (the Gaussian there).

``map`` and ``laplace`` find the mode by the same Adam steps, step-size schedule and budget as
``svi``, on the same (collapsed) model, with a delta guide in place of a distribution:

- ``map`` uses ``AutoDelta``, whose point sits in the constrained space: the maximum of the
  posterior density p(θ | x) itself. Its answer has no spread: its ``sd_error`` is empty and
  its row says why; it gives no evidence estimate.
- ``laplace`` uses ``AutoLaplaceApproximation``, whose point is the mode of the density of the
  *unconstrained* parameters (the Jacobian of the constraining maps included). Adam's point
  is polished into the mode by L-BFGS (at most :data:`POLISH_EVALS` evaluations, counted):
  the Hessian is only a covariance at a mode, and Adam's noisy last steps stop near one, not
  at it (its Hessian was indefinite at 300 steps on the mixture). The answer is the
  Gaussian with the inverse Hessian of the negative log density there as its covariance
  (Laplace 1774; Tierney & Kadane 1986), pushed through the constraining maps. Its draws, its
  evidence (the ELBO of that Gaussian) and its k̂ are estimated as for ``svi``.

Targets whose latents are all discrete have no mode to find by gradient steps: both say so.

``em`` climbs to the same point as ``map`` by expectation-maximisation, with no step size:
the model's exact E-step and closed-form conditional M-steps (``zoo.em``; responsibilities
for the mixture, Baum-Welch for the HMM, Rubin & Thayer's EM for factor analysis and PPCA).
Its budget is the most EM iterations; it stops sooner when an iteration raises the log joint
by less than :data:`EM_TOLERANCE` of its size. Its cost is one density evaluation per E-step
and one per log joint it monitors; it takes no gradients. Its local marginals are the final
E-step's. It starts from the target's ``data_start()``, so its seed changes nothing.
"""

from __future__ import annotations

import math

import pyro.poutine as poutine
import torch
from pyro.infer.autoguide import AutoDelta, AutoGuideList, AutoLaplaceApproximation

from zoo.base import Draws, Moments, Target
from zoo.em import EMSteps

from inference_comparisons.base import Cost, Diagnostics, InferenceMethod, InferenceResult, ResultKind
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.estimators.particles import importance_log_weights
from inference_comparisons.methods.svi import fit_guide, guide_draws, needs_continuous_latents

__all__ = ["EM", "MAP", "Laplace"]

#: Most density-and-gradient evaluations L-BFGS may take to polish Adam's point into the mode.
POLISH_EVALS = 500

#: An EM iteration that raises the log joint by less than this fraction of its size ends the run.
EM_TOLERANCE = 1e-13

#: What a point estimate's row says about its empty ``sd_error``.
NO_SPREAD = "a point estimate: no posterior spread, so no sd_error and no evidence estimate"


class MAP(InferenceMethod):
    name = "map"
    point_estimate = True
    budget_unit = "steps"
    ladders = {"quick": (300,), "default": (1000,), "thorough": (1000, 3000, 10000)}
    description = "maximum a posteriori by Adam on the log joint (AutoDelta, svi's step-size schedule)"
    smoke_budget = 20
    family = staticmethod(AutoDelta)

    def not_applicable(self, target: Target) -> str | None:
        return needs_continuous_latents(target)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        fitted = fit_guide(target, budget, self.family)
        # One draw from the delta guide: the point, flattened as every method's draws are.
        _, draws = importance_log_weights(target.collapsed_model, fitted.guide, 1, target.max_plate_nesting,
                                          target.latent_sites)
        return point_result(self, target, budget, seed, draws, Cost(0.0, 1, fitted.grad_evals), fitted.losses)


class EM(InferenceMethod):
    name = "em"
    point_estimate = True
    budget_unit = "iterations"
    # EM needs no step size but can crawl: on factor analysis one small noise sd took it
    # ~10,000 iterations to the mode (the mixture, the HMM and PPCA took 10-100).
    ladders = {"quick": (100,), "default": (100, 1000), "thorough": (100, 1000, 10000)}
    description = ("expectation-maximisation to the posterior mode: exact E-step, closed-form conditional "
                   "M-steps with the priors (responsibilities, Baum-Welch, Rubin-Thayer)")
    smoke_budget = 3

    def not_applicable(self, target: Target) -> str | None:
        if isinstance(target, EMSteps):
            return target.em_not_applicable()
        if target.name == "latent":
            return "the globals are fixed at their true values: EM has no parameter to maximise over"
        return "the model has no closed-form EM steps (zoo.em.EMSteps)"

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        assert isinstance(target, EMSteps)
        params = target.data_start()
        log_joint = [_log_joint(target, params, 0)]
        for iteration in range(1, budget + 1):
            params = target.em_step(params)
            log_joint.append(_log_joint(target, params, iteration))
            rise = log_joint[-1] - log_joint[-2]
            # EM never lowers the log joint: a fall beyond rounding is a wrong M-step.
            if rise < -1e-9 * abs(log_joint[-1]):
                raise FloatingPointError(f"EM lowered the log joint by {-rise:.3g} at iteration {iteration}")
            if rise <= EM_TOLERANCE * abs(log_joint[-1]):
                break
        cost = Cost(0.0, density_evals=2 * iteration + 1, grad_evals=0)
        return point_result(self, target, budget, seed, params, cost, [-value for value in log_joint])


def _log_joint(target: Target, params: Draws, iteration: int) -> float:
    value = target.log_density(params).item()
    if not math.isfinite(value):
        raise FloatingPointError(f"EM reached a point with log joint {value} at iteration {iteration}")
    return value


def point_result(method: InferenceMethod, target: Target, budget: int, seed: int, draws: Draws, cost: Cost,
                 losses: list[float]) -> InferenceResult:
    """The result of a method whose answer is one point: ``draws`` holds it as one draw."""
    moments, marginals = summarise_draws(target, draws)
    nan = float("nan")
    return InferenceResult(
        method=method.name, target=target.name, budget=budget, budget_unit=method.budget_unit, seed=seed,
        kind=ResultKind.INDEPENDENT, draws=draws, log_evidence=nan, log_evidence_se=nan,
        moments={k: Moments(m.mean, torch.full_like(m.sd, nan), torch.zeros_like(m.mean))
                 for k, m in moments.items()},
        local_marginals=marginals,  # the plug-in posterior of the locals at the point
        cost=cost, diagnostics=Diagnostics(), losses=tuple(losses), note=NO_SPREAD,
    )


class Laplace(InferenceMethod):
    name = "laplace"
    budget_unit = "steps"
    # Few Adam steps: L-BFGS finishes the climb (at 20 and at 300 steps it reached the same mode).
    ladders = {"quick": (100,), "default": (300,), "thorough": (100, 300, 1000)}
    description = ("Laplace approximation: the Gaussian at the mode of the unconstrained log joint "
                   "(AutoLaplaceApproximation), Adam as map's then L-BFGS to the mode")
    smoke_budget = 20
    family = staticmethod(AutoLaplaceApproximation)

    def not_applicable(self, target: Target) -> str | None:
        if target.continuous_sites and target.discrete_sites:
            return "the Hessian is of the continuous latents alone: inferred discrete latents have no Gaussian"
        return needs_continuous_latents(target)

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        fitted = fit_guide(target, budget, self.family)
        (mode,) = fitted.guide  # every latent continuous: one part, over the whole model
        polish_evals = _polish(mode)
        gaussian = AutoGuideList(fitted.guide.model)
        try:
            gaussian.append(mode.laplace_approximation())
        except torch.linalg.LinAlgError:
            raise FloatingPointError(f"the Hessian is not positive definite at the point reached after {budget} "
                                     f"steps and {polish_evals} L-BFGS evaluations: not a mode") from None
        # The Hessian costs one gradient-sized backward pass per dimension.
        result = guide_draws(self, target, budget, seed, gaussian, fitted.losses,
                             fitted.grad_evals + polish_evals + mode.latent_dim)
        if not math.isfinite(result.log_evidence):
            raise FloatingPointError("the Gaussian at the mode gives no finite evidence estimate")
        return result


def _polish(mode: AutoLaplaceApproximation) -> int:
    """Move ``mode``'s point to the mode of its model's unconstrained log density by L-BFGS
    (the negative log density as ``laplace_approximation`` differentiates it); returns the
    evaluations it took."""
    location = mode.loc  # the unconstrained point itself, a leaf tensor
    optimizer = torch.optim.LBFGS([location], max_iter=POLISH_EVALS, max_eval=POLISH_EVALS,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    evaluations = 0

    def loss() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        guide_trace = poutine.trace(mode).get_trace()
        model_trace = poutine.trace(poutine.replay(mode.model, trace=guide_trace)).get_trace()
        value = guide_trace.log_prob_sum() - model_trace.log_prob_sum()
        value.backward()
        return value

    optimizer.step(loss)
    return evaluations
