"""The exact answer, where the model's mathematics gives one (enumeration, forward-backward,
Gaussian conditioning). Scored like any method, so the table shows its zero error and cost."""

from __future__ import annotations

from zoo.base import Target

from inference_comparisons.base import Cost, InferenceMethod, InferenceResult, ResultKind

__all__ = ["Exact"]


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
            kind=ResultKind.EXACT, draws={}, num_chains=0, log_evidence=reference.log_evidence, log_evidence_se=0.0,
            moments=reference.moments, local_marginals=reference.local_marginals,
            cost=Cost(wall_s=0.0, density_evals=1, grad_evals=0),
        )
