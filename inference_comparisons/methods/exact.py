"""The exact answer, where the model's mathematics gives one (enumeration, forward-backward,
Gaussian conditioning). Scored like any method, so the table shows its zero error and cost.

It also draws :data:`NUM_EXACT_DRAWS` independent draws from the exact posterior (the
target's ``exact_draws``), so that its InferenceData works with every ArviZ function
(``az.summary``, ``az.loo``) like any other method's; its moments and marginals are the
closed form's, not these draws'."""

from __future__ import annotations

from zoo.base import Target

from inference_comparisons.base import Cost, InferenceMethod, InferenceResult, ResultKind

__all__ = ["Exact", "NUM_EXACT_DRAWS"]

#: Exact draws per cell: as many as the InferenceData of the other methods keep.
NUM_EXACT_DRAWS = 1000


class Exact(InferenceMethod):
    name = "exact"
    budget_unit = "evaluations"
    ladders = {"quick": (1,), "default": (1,), "thorough": (1,)}
    description = "closed-form answer (enumeration, forward-backward, Gaussian conditioning)"
    smoke_budget = 1

    def not_applicable(self, target: Target) -> str | None:
        if not target.has_exact:
            return "no closed form for this target (it is scored against a gold-standard reference)"
        return None

    def run(self, target: Target, budget: int, seed: int) -> InferenceResult:
        reference = target.exact()
        return InferenceResult(
            method=self.name, target=target.name, budget=budget, budget_unit=self.budget_unit, seed=seed,
            kind=ResultKind.EXACT, draws=target.exact_draws(NUM_EXACT_DRAWS), log_evidence=reference.log_evidence,
            log_evidence_se=0.0,
            moments=reference.moments, local_marginals=reference.local_marginals,
            cost=Cost(wall_s=0.0, density_evals=1, grad_evals=0),
        )
