"""The report's inference-gap section: for every problem with an amortised guide (the VAE's
checkpoints) where the sweep ran both ``svi_amortised`` and ``svi_semi_amortised``, the
decomposition of Cremer, Li & Duvenaud (2018) read off the table's rows,

    log p(x) - ELBO(encoder) = [log p(x) - ELBO(refined)] + [ELBO(refined) - ELBO(encoder)]
                             =   approximation gap        +   amortisation gap,

with log p(x) the reference, ELBO(encoder) the ``svi_amortised`` estimate and ELBO(refined)
that of ``svi_semi_amortised`` at its largest budget (per-datapoint Gaussians refined from the
encoder; Kim et al. 2018). Each is the mean over seeds at that budget, in nats for the whole
dataset; standard errors add the reference's and the estimates' in quadrature. The refined
ELBO is at most the best Gaussian's, so the approximation gap here is an upper bound and the
amortisation gap a lower bound, both tighter as the refinement's budget grows
(``python -m zoo.vae_tools gaps`` refines to convergence, per data point).
"""

from __future__ import annotations

import math

import pandas as pd

from inference_comparisons.report.measures import format_value, markdown_table, problems

__all__ = ["inference_gap_table", "inference_gap_section"]

ENCODER, REFINED = "svi_amortised", "svi_semi_amortised"


def _at_largest_budget(group: pd.DataFrame, method: str) -> pd.DataFrame:
    ok = group[(group["method"] == method) & (group["status"] == "ok")]
    return ok[ok["budget"] == ok["budget"].max()] if len(ok) else ok


def inference_gap_table(table: pd.DataFrame) -> pd.DataFrame:
    """One row per problem where both methods have ``ok`` cells (see the module docstring)."""
    rows = []
    for problem, group in problems(table):
        encoder, refined = _at_largest_budget(group, ENCODER), _at_largest_budget(group, REFINED)
        if encoder.empty or refined.empty:
            continue
        reference = float(group["log_evidence_ref"].dropna().iloc[0])
        reference_se = float(group["log_evidence_ref_se"].dropna().iloc[0])
        elbo_encoder, elbo_refined = float(encoder["log_evidence"].mean()), float(refined["log_evidence"].mean())
        se_encoder = math.sqrt(float((encoder["log_evidence_se"] ** 2).mean()) / len(encoder))
        se_refined = math.sqrt(float((refined["log_evidence_se"] ** 2).mean()) / len(refined))
        rows.append({"problem": problem.title, "log_p_x": reference, "elbo_refined": elbo_refined,
                     "elbo_encoder": elbo_encoder, "approximation_gap": reference - elbo_refined,
                     "approximation_gap_se": math.hypot(reference_se, se_refined),
                     "amortisation_gap": elbo_refined - elbo_encoder,
                     "amortisation_gap_se": math.hypot(se_refined, se_encoder),
                     "refined_budget": int(refined["budget"].iloc[0]), "seeds": int(min(len(encoder), len(refined)))})
    return pd.DataFrame(rows)


def inference_gap_section(table: pd.DataFrame) -> list[str]:
    """The report's lines (none when no problem has both methods)."""
    gaps = inference_gap_table(table)
    if gaps.empty:
        return []
    lines = ["## Inference gaps of the amortised targets", "",
             "log p(x) − ELBO(encoder) = approximation gap + amortisation gap (Cremer, Li & Duvenaud 2018), in nats "
             f"for the whole dataset: the reference, `{ENCODER}`, and `{REFINED}` at its largest budget (per-datapoint "
             "Gaussians refined from the encoder). The refined ELBO is at most the best Gaussian's, so the "
             "approximation gap here is an upper bound and the amortisation gap a lower bound; "
             "`python -m zoo.vae_tools gaps` refines to convergence.", ""]
    lines += markdown_table(
        ["problem", "log p(x)", "ELBO refined", "ELBO encoder", "approximation gap", "amortisation gap",
         "refinement steps", "seeds"],
        [[row.problem, format_value(row.log_p_x), format_value(row.elbo_refined), format_value(row.elbo_encoder),
          f"{format_value(row.approximation_gap)} ± {format_value(row.approximation_gap_se)}",
          f"{format_value(row.amortisation_gap)} ± {format_value(row.amortisation_gap_se)}",
          row.refined_budget, row.seeds] for row in gaps.itertuples(index=False)])
    return lines
