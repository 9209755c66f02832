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
# # 6. Are the posteriors calibrated? Simulation-based calibration
#
# A reference posterior scores a method on *one* dataset. Simulation-based calibration
# (SBC; Talts et al. 2018) asks a different question, and needs no reference at all: draw
# a truth and a dataset from the model, run the method, and record the *rank* of the truth
# among L of the method's posterior draws. If the method's posteriors are right, the truth
# is just another draw from them, so over many datasets its rank is uniform on 0..L.
# An overconfident method (posteriors too narrow) puts the truth outside its draws too
# often: ranks pile up at 0 and L. A biased one tilts them to one side.
#
# We calibrate three methods on the `latent` target of the local-level state-space model
# (`state_space`): the state path given the variances. Its exact posterior is the Kalman
# smoother's, a Gaussian with strong correlation between neighbouring states, so:
#
# - `exact` draws from the smoother itself (the check of the check: it must pass);
# - `laplace` fits a Gaussian at the mode, which is exact for a Gaussian posterior;
# - `svi` fits a *mean-field* Gaussian, which cannot hold the correlation and is known to
#   underestimate marginal variances (Bishop 2006, §10.1.2).

# %%
import os

SMALL = os.environ.get("ZOO_NOTEBOOK_SMALL") == "1"  # tiny sizes for the tests
NUM_SIMULATIONS = 30 if SMALL else 200
NUM_DATAPOINTS = 10 if SMALL else 20  # time steps of each simulated series
NUM_DRAWS = 99  # ranks 0..99

# %%
import sys

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # run as a plain script: draw off-screen, never open a window
import matplotlib.pyplot as plt
import numpy as np

import inference_comparisons as ic
from inference_comparisons.estimators.ecdf import ecdf_band

METHODS = {"exact": 1, "laplace": 100 if SMALL else 300, "svi": 300 if SMALL else 1000}  # method -> budget

# %% [markdown]
# `ic.calibrate` runs the simulations (here in this process; the command
# `python -m inference_comparisons calibrate` runs them on a process pool or Dask, stores
# each one and resumes after a kill). Each simulation is seeded by its index alone.

# %%
calibrations = {
    method: ic.calibrate("state_space", method, budget, target="latent", num_simulations=NUM_SIMULATIONS,
                         num_datapoints=NUM_DATAPOINTS, num_draws=NUM_DRAWS, scheduler="inprocess")
    for method, budget in METHODS.items()
}
for method, calibration in calibrations.items():
    print(f"{method:8s} {calibration.num_simulations} simulations, {len(calibration.failures)} failed, "
          f"p-value {calibration.pvalue():.3g}")

# %% [markdown]
# The test quantities are every smoothed state (one scalar a time step) and the log
# likelihood of the data at the draw (Modrák et al. 2023: it reacts to errors in the
# *joint*, where each margin may look fine). The p-value is the ECDF test's (Säilynoja,
# Bürkner & Vehtari 2022), the smallest over all scalars times their number.
#
# **Rank histograms** of one state, the middle one:

# %%
middle = NUM_DATAPOINTS // 2
fig, axes = plt.subplots(1, len(calibrations), figsize=(10, 2.6), sharey=True)
for ax, (method, calibration) in zip(axes, calibrations.items()):
    ax.hist(calibration.ranks["states"][:, middle], bins=np.linspace(0, NUM_DRAWS + 1, 11), color="C0",
            edgecolor="white")
    ax.axhline(calibration.num_simulations / 10, color="k", lw=0.8, ls="--")
    ax.set_title(f"{method}: state {middle}")
    ax.set_xlabel("rank of the truth")
axes[0].set_ylabel("simulations")
fig.tight_layout()

# %% [markdown]
# Histograms depend on their bins and their pointwise noise misleads. The ECDF *difference*
# (the ranks' empirical CDF minus the uniform one) with a *simultaneous* 95% band is the
# better picture: a calibrated method stays inside the band everywhere with probability
# 0.95. One line per time step:

# %%
fig, axes = plt.subplots(1, len(calibrations), figsize=(10, 2.8), sharey=True)
for ax, (method, calibration) in zip(axes, calibrations.items()):
    states = calibration.ranks["states"]
    band = ecdf_band(states[:, 0], NUM_DRAWS)
    ax.fill_between(band.grid, band.lower, band.upper, color="0.85", label="95% simultaneous band")
    for column in states.T:
        ax.plot(band.grid, ecdf_band(column, NUM_DRAWS).difference, lw=0.7, alpha=0.7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_title(f"{method}: p = {calibration.pvalue():.2g}")
    ax.set_xlabel("normalised rank")
axes[0].set_ylabel("ECDF − uniform")
axes[0].legend(fontsize=7, loc="lower left")
fig.tight_layout()

# %% [markdown]
# **What to notice.** `exact` and `laplace` stay in the band. Mean-field `svi` rises above
# it at low ranks and falls below at high ranks: too many ranks at both ends, the ∪ shape of
# an overconfident posterior. Its ELBO was maximised and its means are nearly right (the
# `mean_error` column of a sweep says so), yet its posteriors are too narrow: SBC finds that
# without any reference answer, which is what makes it usable on models that have none.
#
# The report (`report.md` of a `calibrate` run) names such methods in words, and the same
# check runs on the `posterior` targets, where the truth is drawn from the prior.
#
# References: Talts et al. (2018) arXiv:1804.06788; Säilynoja, Bürkner & Vehtari (2022)
# *Statistics and Computing* 32:32; Modrák et al. (2023) *Bayesian Analysis*; Bishop (2006)
# *PRML* §10.1.
