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
# # 5. Comparing methods: a sweep, its table, error against cost
#
# `ic.compare` runs a grid of cells (model, target, method, budget, seed), scores each
# against its reference, and stores the rows in a resumable SQLite store with a report
# rebuilt from it. Here a small sweep goes to a temporary directory; `make run` or
# `python -m inference_comparisons run` is the same thing at full size.

# %%
import os

SMALL = os.environ.get("ZOO_NOTEBOOK_SMALL") == "1"  # tiny sizes for the tests
SEEDS = [0] if SMALL else [0, 1]
METHODS = ["exact", "svi", "nuts", "is_prior"]
LADDERS = ({"svi": (20,), "nuts": (10,), "is_prior": (200,)} if SMALL else
           {"svi": (100, 300, 1000), "nuts": (50, 150, 500), "is_prior": (1_000, 10_000, 100_000)})

# %%
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # run as a plain script: draw off-screen, never open a window
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Image, Markdown, display

import inference_comparisons as ic
from inference_comparisons.report import summary

pd.set_option("display.width", 160)
pd.set_option("display.max_colwidth", 80)
scratch = tempfile.TemporaryDirectory()  # removed at the end of the notebook
out = Path(scratch.name) / "sweep"

# %% [markdown]
# ## The sweep
#
# The mixture, both targets, four methods, each method over its budget ladder.
# `scheduler="inprocess"` runs the cells in this kernel, one after another (a sweep from the
# command line uses one worker process per core).

# %%
start = time.perf_counter()
table = ic.compare(models=["gmm"], methods=METHODS, seeds=SEEDS, ladders=LADDERS, out=out, scheduler="inprocess")
print(f"{len(table)} cells in {time.perf_counter() - start:.1f} s; written to {out}:",
      sorted(p.name for p in out.iterdir()))
print("one row per cell; the columns:", ", ".join(table.columns))
# report.summary averages each (model, target, method, budget) over the seeds whose cell is ok.
columns = ["target", "method", "budget", "budget_unit", "status", "num_seeds", "wall_s", "density_evals",
           "grad_evals", "log_evidence_error", "mean_error", "sd_error", "local_tv", "khat", "rhat_max"]
summary(table)[columns]

# %% [markdown]
# How to read a row: `wall_s` and the two evaluation counts are the cost; the error columns
# are those of notebook 2 (`log_evidence_error` in nats, negative for SVI's bound;
# `mean_error` in posterior sds; `local_tv` for the assignments); `khat` and `rhat_max` say
# whether to trust them.
#
# ## Rows that are not `ok`
#
# - `not_applicable`: the method cannot run on that target, and `message` says why (no
#   closed form on a posterior; HMC on a target whose latents are all discrete). Not an
#   error: a fact about the method.
# - `failed`: the method was tried and gave nothing scoreable: an exception, no finite
#   estimate, a divergence storm in MCMC, or no reference to score against. The message is
#   kept, and `run --retry-failed` reruns only these cells.
#
# The store is *resumable*: a sweep finds the cells it already holds and runs only the new
# ones. Re-running the mixture sweep runs nothing; a sweep of the HMM's posterior on the
# shipped Nile series adds its cells, which fail: gold standards are stored for each
# model's default simulated data, not for the Nile (`python -m inference_comparisons
# reference hmm --dataset nile` would build one).

# %%
start = time.perf_counter()
again = ic.compare(models=["gmm"], methods=METHODS, seeds=SEEDS, ladders=LADDERS, out=out, scheduler="inprocess")
print(f"the same sweep again: {len(again)} rows in {time.perf_counter() - start:.1f} s, unchanged:",
      again["mean_error"].equals(table["mean_error"]))
nile = ic.compare(models=["hmm"], targets=["posterior"], methods=METHODS, seeds=SEEDS, ladders=LADDERS,
                  dataset="nile", out=out, scheduler="inprocess")
stored = pd.read_csv(out / "results.csv")  # the report's table, rebuilt from the store alone
print(stored.groupby(["model", "target"])["status"].value_counts().unstack(fill_value=0).to_string())
stored.loc[stored["status"] != "ok", ["model", "target", "method", "status", "message"]].drop_duplicates(
    ["model", "target", "method"])

# %% [markdown]
# ## Error against cost
#
# The project's picture: for each target, error (log) against cost (log), one line per
# method across its budgets. The exact method has error 0, which a log axis cannot show:
# it is a vertical line at its cost.

# %%
ok = table[table["status"] == "ok"].copy()
ok["evaluations"] = ok["density_evals"].fillna(0) + ok["grad_evals"].fillna(0)
panels = {"posterior": ("mean_error", "mean error (posterior sds)"),
          "latent": ("local_tv", "TV distance of assignment marginals")}
fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.8))
for axis, (target, (metric, label)) in zip(axes, panels.items()):
    rows = ok[ok["target"] == target]
    for method, group in rows.groupby("method"):
        by_budget = group.groupby("budget")[["evaluations", metric]].median()
        colour = f"C{METHODS.index(method)}"  # one colour per method in both panels
        if (by_budget[metric].abs() == 0).all():
            axis.axvline(by_budget["evaluations"].median(), color=colour, ls=":", label=f"{method} (error 0)")
        else:
            axis.plot(by_budget["evaluations"], by_budget[metric].abs(), "o-", color=colour, label=method)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("density + gradient evaluations")
    axis.set_ylabel(label)
    axis.set_title(f"gmm / {target}")
    axis.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# Each line should fall to the right (more budget, less error); a line that stays flat
# is a *bias* the budget does not remove (mean-field SVI's limit, notebook 3). Cost in
# counted evaluations is machine-independent; `wall_s` is what it costs on this machine.
# The report in the sweep directory draws the same picture for every (model, target), with
# both cost axes and a band over seeds, and opens with a method table whose sentences are
# generated from the measurements (which method reaches the error ε cheapest, how fast each
# error falls with cost):

# %%
display(Image(filename=str(out / "plots" / "gmm_posterior.png")))
report = (out / "report.md").read_text()
methods_section = report.index("## Methods, as measured")
display(Markdown(report[methods_section:report.index("\n## ", methods_section)]))

# %%
scratch.cleanup()

# %% [markdown]
# References: Magnusson et al. (2023) posteriordb (gold standards and their gates); Vehtari
# et al. (2021) *Bayesian Analysis* 16:667 (R-hat, ESS); Vehtari et al. (2024) *JMLR* 25:72
# (Pareto k̂).
