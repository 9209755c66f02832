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
# # 2. Posteriors over the globals, and how they are scored
#
# The `posterior` target infers the global parameters (weights, means, scales of the
# mixture) with the discrete locals summed out. There is no closed form, so methods are
# scored against a stored *gold standard*: a long multi-chain NUTS run that passed
# posteriordb's gates (Magnusson et al. 2023), with Monte Carlo standard errors. This
# notebook runs NUTS, scores it, turns it into an ArviZ `InferenceData`, and explains why
# the scored quantities are ordered means (mixtures) and rotation-invariant ones (factor
# models).

# %%
import os

SMALL = os.environ.get("ZOO_NOTEBOOK_SMALL") == "1"  # tiny sizes for the tests
NUTS_DRAWS = 12 if SMALL else 1000  # total over 2 chains, plus as many warm-up iterations

# %%
import dataclasses
import sys

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # run as a plain script: draw off-screen, never open a window
import pandas as pd
import pyro.distributions as dist
import torch

import inference_comparisons as ic
import zoo
from inference_comparisons._arviz import arviz
from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.diagnostics import to_inference_data
from inference_comparisons.sweep import load_data
from zoo.exact.gaussian import lower_triangular_form

az = arviz()
pd.set_option("display.width", 120)

# %% [markdown]
# ## The gold-standard reference
#
# A stored reference is found by model configuration and a fingerprint of the data, so we
# use exactly the data a sweep uses: 200 points simulated from the default mixture with
# the data seed.

# %%
gmm = zoo.get_model("gmm")
data = load_data(gmm, "simulated")
reference = gmm.reference(data, target="posterior")
provenance = reference.provenance
print("exact:", reference.exact)
print("made by:", provenance["command"])
print("how:", provenance["method"])
print("gates it had to pass:", provenance["gates"])
print("what it achieved:", {k: provenance["diagnostics"][k] for k in ("rhat_max", "ess_min", "divergences", "khat")})
print("versions:", provenance["versions"], "created", provenance["created"])
print(f"log p(x) = {reference.log_evidence:.4f} ± {reference.log_evidence_se:.4f} (Monte Carlo se)")

# %% [markdown]
# Two independent samplers agreeing is worth more than either alone. This reference is a
# ChEES build; before it replaced the earlier NUTS build, the two were compared, and the
# largest gaps, in combined Monte Carlo standard errors, are kept with the earlier build's record.

# %%
previous = provenance["previous_build"]
print("the build it replaced:", previous["method"][:70], "...")
print("their agreement:", previous["agreement"])

# %%
rows = []
for name, moments in reference.moments.items():
    for index in range(moments.mean.numel()):
        rows.append({"quantity": f"{name}[{index}]", "mean": moments.mean.flatten()[index].item(),
                     "sd": moments.sd.flatten()[index].item(), "se of mean": moments.se.flatten()[index].item()})
reference_table = pd.DataFrame(rows).set_index("quantity")
reference_table

# %% [markdown]
# The standard error of each posterior mean is sd / √ESS: tiny next to the sd, so an
# error measured in posterior sds is meaningful down to about `se / sd` (the
# `mean_error_ref_se` column below).
#
# ## NUTS, scored
#
# `ic.run_inference` runs one cell (seeded, one torch thread, clean Pyro state);
# `ic.score` compares it with the reference.

# %%
result = ic.run_inference(gmm, data, method="nuts", budget=NUTS_DRAWS, seed=0, target="posterior")
print(f"{result.budget} {result.budget_unit} over {result.num_chains} chains, "
      f"{result.cost.grad_evals} gradient evaluations, {result.cost.wall_s:.1f} s")
row = ic.score(result, reference)

meaning = {
    "log_evidence": "method's log p(x) estimate (NaN: MCMC gives none)",
    "log_evidence_se": "its Monte Carlo standard error",
    "log_evidence_ref": "reference log p(x)",
    "log_evidence_ref_se": "reference's standard error (0 if exact)",
    "log_evidence_error": "estimate - reference, nats",
    "reference_exact": "is the reference exact?",
    "mean_error": "max_q |E_method q - E_ref q| / sd_ref q",
    "sd_error": "max_q |log(sd_method q / sd_ref q)|",
    "mean_error_ref_se": "reference's own error in mean_error units",
    "local_tv": "mean TV distance of p(z_n | x) vs reference",
    "khat": "PSIS k-hat of importance weights (IS/SVI only)",
    "ess_min": "smallest effective sample size over quantities",
    "rhat_max": "largest split R-hat over quantities",
    "divergences": "divergent transitions",
}
pd.DataFrame({"value": pd.Series(row), "meaning": pd.Series(meaning)})

# %%
print(f"R-hat {row['rhat_max']:.3f} (want < 1.01), min ESS {row['ess_min']:.0f}, {row['divergences']:.0f} divergences")
verdict = ("within reference error: not distinguishable from exact" if row["mean_error"] < row["mean_error_ref_se"]
           else "above the reference's own error: the method's error")
print(f"mean_error {row['mean_error']:.3g} posterior sds vs reference error {row['mean_error_ref_se']:.3g}: {verdict}")
print(f"NUTS' own Monte Carlo error of a mean, 1/sqrt(ESS), is about {row['ess_min'] ** -0.5:.3g} posterior sds")

# %% [markdown]
# Read the MCMC diagnostics before the errors: with split R-hat far above 1.01 the chains
# have not mixed, and `mean_error` measures the sampler's failure (Vehtari et al. 2021).
# With R-hat near 1, an error of the order of 1/√ESS is NUTS' own Monte Carlo error: it
# shrinks with more draws, and only the reference's error (`mean_error_ref_se`) limits what
# can be measured.
#
# ## The same run as ArviZ `InferenceData`
#
# `to_inference_data` builds every group from the result and its target (posterior draws,
# sampler statistics, pointwise log-likelihood, posterior and prior predictive, observed
# data), so every ArviZ function applies.

# %%
target = gmm.target(data, "posterior")
idata = to_inference_data(result, target, data)
print(idata)
az.summary(idata, var_names=["weights", "locs", "scales"])

# %%
axes = az.plot_forest(idata, var_names=["locs"], combined=False, figsize=(6, 3))
axes[0].set_title("NUTS: 94% intervals of the ordered means, per chain")
for mean in reference.moments["locs"].mean.flatten().tolist():
    axes[0].axvline(mean, color="0.5", ls=":", lw=1)
print("dotted lines: the gold-standard posterior means", reference.moments["locs"].mean.flatten().tolist())

# %% [markdown]
# Chains that disagree show up as intervals at different places for the same component.
#
# ## Why the means are ordered: label switching
#
# The mixture likelihood is invariant under permuting the component labels, so with an
# exchangeable prior the posterior has K! symmetric modes (Jasra, Holmes & Stephens 2005).
# A sampler that visits several of them averages "component 0" over all components, and
# its per-component means say nothing. The zoo removes the symmetry by construction: the
# prior is on *ordered* means (their order statistics), which leaves log p(x) unchanged.
# Here is what scoring would see if the labels were switched at random in each draw:

# %%
generator = torch.Generator().manual_seed(0)
num_draws = result.draws["locs"].shape[0]
perm = torch.stack([torch.randperm(gmm.num_components, generator=generator) for _ in range(num_draws)])
switched = {site: torch.stack([value[s, perm[s]] for s in range(num_draws)]) for site, value in result.draws.items()}

same_likelihood = torch.allclose(target.pointwise_log_likelihood(result.draws),
                                 target.pointwise_log_likelihood(switched))
moments, marginals = summarise_draws(target, switched)
switched_result = dataclasses.replace(result, draws=switched, moments=moments, local_marginals=marginals)
print("every switched draw has the same likelihood:", same_likelihood)
print("posterior mean of locs, ordered draws: ", result.moments["locs"].mean.flatten().tolist())
print("posterior mean of locs, switched draws:", switched_result.moments["locs"].mean.flatten().tolist())
print(f"mean_error: ordered {row['mean_error']:.3g}, switched {ic.score(switched_result, reference)['mean_error']:.3g}")

# %% [markdown]
# The switched means collapse towards each other, although the draws describe the same
# mixtures. Ordering is the zoo's choice of *identifiable* quantity; relabelling draws
# after the fact (Stephens 2000) is the alternative.
#
# ## Why factor models are scored through W Wᵀ + Ψ
#
# In factor analysis x = μ + W f + ε, and W R fits the data exactly as well as W for any
# orthogonal R: only W Wᵀ enters the likelihood. The zoo samples the unique
# lower-triangular W with positive diagonal (Geweke & Zhou 1996), and scores only
# rotation-invariant quantities.

# %%
fa = zoo.get_model("factor_analysis")
fa_data = load_data(fa, "simulated")
truth = fa.true_params()
loadings = truth["loadings"]
rotation, _ = torch.linalg.qr(torch.randn(fa.num_factors, fa.num_factors, generator=generator, dtype=torch.float64))
rotated = loadings @ rotation
noise_variances = truth["noise"] ** 2
log_lik = [dist.LowRankMultivariateNormal(truth["loc"], w, noise_variances).log_prob(fa_data).sum().item()
           for w in (loadings, rotated)]
print("W (lower-triangular):\n", loadings.numpy().round(3))
print("W R:\n", rotated.numpy().round(3))
print(f"log p(x | W) = {log_lik[0]:.6f}, log p(x | W R) = {log_lik[1]:.6f}")
print("W Wᵀ unchanged:", torch.allclose(loadings @ loadings.T, rotated @ rotated.T))
print("lower_triangular_form(W R) recovers W:", torch.allclose(lower_triangular_form(rotated), loadings))

fa_target = fa.target(fa_data, "posterior")
one_draw = {site: truth[site][None] for site in fa_target.latent_sites}
print("scored quantities of the factor-analysis posterior:", list(fa_target.quantities(one_draw)))
# PPCA (Ψ = σ² I) is scored through the same quantities; its stored gold standard:
ppca = zoo.get_model("ppca")
ppca_reference = ppca.reference(load_data(ppca, "simulated"), "posterior")
print("PPCA's gold-standard posterior mean of diag(W Wᵀ + σ² I):",
      ppca_reference.moments["covariance"].mean.diagonal().numpy().round(3))

# %% [markdown]
# **What to notice.** A posterior is scored in units of the reference's posterior sd,
# next to the reference's own standard error; the MCMC diagnostics say whether the
# score means anything; and only identifiable quantities are ever compared.
#
# References: Hoffman & Gelman (2014) *JMLR* 15:1593 (NUTS); Vehtari et al. (2021)
# *Bayesian Analysis* 16:667 (rank-normalised R-hat, ESS); Magnusson et al. (2023)
# posteriordb; Jasra, Holmes & Stephens (2005) *Stat. Sci.* 20:50 and Stephens (2000) *JRSS B*
# 62:795 (label switching); Geweke & Zhou (1996) *RFS* 9:557 (identifying factor loadings).
