"""The report's disentanglement section: for every VAE checkpoint of the swiss roll that the
sweep ran on (``--dataset swiss_roll``, ``swiss_roll-beta4``), its codes measured against the
roll's known generating factors (:mod:`zoo.vae.disentanglement`: active units, the mutual
information gap, |correlation| and a linear probe's R^2).

Unlike the other sections this one reads the model, not only the store: the measures depend
on the shipped checkpoint alone (the encoder on fixed held-out draws), never on a cell, and
take about a second each.
"""

from __future__ import annotations

import pandas as pd

import zoo
from zoo.vae.disentanglement import FACTORS, disentanglement

from inference_comparisons.report.measures import format_value, markdown_table, problems

__all__ = ["disentanglement_section"]


def disentanglement_section(table: pd.DataFrame) -> list[str]:
    """The report's lines (none when the sweep ran no swiss-roll checkpoint)."""
    rows = []
    for problem, _ in problems(table[table["model"] == "vae"]):
        model = zoo.get_model("vae").for_dataset(problem.dataset)
        if model.dataset != "swiss_roll":
            continue
        measures = disentanglement(model)
        active = ", ".join(f"z{j + 1}" for j in measures.active.nonzero().flatten().tolist()) or "none (collapsed)"
        correlation = "; ".join(f"z{j + 1}: " + ", ".join(format_value(float(v)) for v in row)
                                for j, row in enumerate(measures.correlation))
        rows.append([problem.dataset, format_value(model.beta), active,
                     f"{format_value(measures.mig)} ± {format_value(measures.mig_se)}",
                     ", ".join(format_value(float(g)) for g in measures.mig_per_factor),
                     ", ".join(f"{format_value(float(r))} ± {format_value(float(e))}"
                               for r, e in zip(measures.probe_r2, measures.probe_r2_se)), correlation])
    if not rows:
        return []
    factors = ", ".join(FACTORS)
    lines = ["## Disentanglement of the swiss-roll checkpoints", "",
             f"Encoder means of {measures.num_datapoints} held-out draws against the roll's known factors ({factors}): "
             "the mutual information gap (Chen et al. 2018; discretised plug-in estimator, 20 bins), per factor and "
             "averaged; a linear probe's held-out R² per factor (± bootstrap standard errors over the draws); "
             "|correlation| of each unit with each factor. A unit "
             "whose mean does not vary with x (Var ≤ 0.01) has collapsed to the prior and counts as carrying nothing "
             "(`zoo.vae.disentanglement`).", ""]
    lines += markdown_table(["dataset", "beta", "active units", "MIG", f"MIG per factor ({factors})",
                             f"probe R² ({factors})", f"|correlation| ({factors})"], rows)
    return lines
