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
# # 1. Summing out discrete latents
#
# A mixture assignment or a hidden state is a *discrete* local latent. With the globals
# θ fixed (the zoo's `latent` target), its posterior is exact and cheap: the sum over all
# K^N joint configurations factorises, so the zoo computes it by enumeration (the
# mixture: Bayes' rule per point, O(NK)) or by forward–backward (the hidden Markov model,
# O(TK²); Rabiner 1989). This notebook checks both against brute force and reads the
# Nile's level change off the HMM. Its last part does the same for a *continuous* state:
# the Kalman filter and smoother integrate it out exactly, checked against conditioning
# the whole joint Gaussian.

# %%
import os

SMALL = os.environ.get("ZOO_NOTEBOOK_SMALL") == "1"  # tiny sizes for the tests
NUM_DATAPOINTS = 60 if SMALL else 300  # mixture data points
NUM_BRUTE_FORCE_POINTS = 5 if SMALL else 8  # 3^8 = 6561 joint assignments
NUM_BRUTE_FORCE_YEARS = 6 if SMALL else 12  # 2^12 = 4096 state paths
NUM_DENSE_YEARS = 20 if SMALL else 100  # the Kalman smoother against a (T x T) Gaussian conditioning

# %%
import itertools
import sys

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in sys.modules:
    matplotlib.use("Agg")  # run as a plain script: draw off-screen, never open a window
import matplotlib.pyplot as plt
import torch

import zoo
from zoo.datasets import load_csv
from zoo.exact.hmm import emission_log_prob, smoothed_marginals
from zoo.exact.kalman import kalman_filter, rts_smoother

torch.set_printoptions(precision=4, sci_mode=False)

# %% [markdown]
# ## The mixture: responsibilities by enumeration
#
# `gmm` has assignments z_n ~ Categorical(weights), x_n ~ Normal(locs[z_n], scales[z_n]²).
# The exact `latent` reference holds log p(x | θ) and the *responsibilities*
# p(z_n = k | x_n, θ).

# %%
gmm = zoo.get_model("gmm")
theta = gmm.true_params()
sim = gmm.simulate(num_datapoints=NUM_DATAPOINTS, seed=0)
reference = gmm.reference(sim.data, target="latent")
responsibilities = reference.local_marginals["assignment"]  # (N, K)
print(reference.provenance["method"])
print(f"log p(x | theta) = {reference.log_evidence:.4f}   (exact: {reference.exact}, se {reference.log_evidence_se})")
print("first five responsibilities:\n", responsibilities[:5])

# %% [markdown]
# **Brute force.** On the first few points, list every joint assignment z ∈ {0..K−1}^n,
# compute log p(x, z | θ) directly from the true parameters, normalise, and read off
# log p(x | θ) = log Σ_z p(x, z | θ) and each marginal p(z_i = k | x, θ). This is the
# definition, with no factorisation used.

# %%
x_small = sim.data[:NUM_BRUTE_FORCE_POINTS]
K = gmm.num_components
components = torch.distributions.Normal(theta["locs"][:, 0], theta["scales"][:, 0])
log_prior = theta["weights"].log()
assignments = torch.tensor(list(itertools.product(range(K), repeat=len(x_small))))  # (K^n, n)
log_joint = (log_prior[assignments] + components.log_prob(x_small[:, 0, None]).T[assignments, torch.arange(len(x_small))]).sum(-1)
log_evidence_brute = torch.logsumexp(log_joint, 0)
posterior_over_assignments = (log_joint - log_evidence_brute).exp()
marginals_brute = torch.stack([
    torch.stack([posterior_over_assignments[assignments[:, i] == k].sum() for k in range(K)])
    for i in range(len(x_small))
])

small_reference = gmm.reference(x_small, target="latent")
print(f"{len(assignments)} joint assignments of {len(x_small)} points")
print(f"log p(x|theta): brute force {log_evidence_brute.item():.10f}, enumeration {small_reference.log_evidence:.10f}")
print("largest |marginal difference|:",
      f"{(marginals_brute - small_reference.local_marginals['assignment']).abs().max().item():.2e}")
print("and they are the first rows of the full-data responsibilities:",
      torch.allclose(small_reference.local_marginals["assignment"], responsibilities[:NUM_BRUTE_FORCE_POINTS]))

# %% [markdown]
# Notice the last line: given θ the assignments are independent, so point i's posterior
# does not depend on the other points. The brute-force sum costs K^n; enumeration, NK.
#
# How well do responsibilities recover the simulated assignments? The points they are
# unsure about sit between overlapping components.

# %%
truth = sim.true_latents["assignment"]
hard = responsibilities.argmax(-1)
uncertain = responsibilities.max(-1).values < 0.9
wrong = hard != truth
print(f"the argmax of the responsibilities misassigns {wrong.sum().item()} of {len(truth)} points;")
print(f"{uncertain.sum().item()} points have max responsibility < 0.9, and {(wrong & uncertain).sum().item()} "
      f"of the misassigned points are among them")

# %%
order = sim.data[:, 0].argsort()
fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
top.hist(sim.data[:, 0].numpy(), bins=40, color="0.7")
top.set_ylabel("count")
top.set_title(f"gmm: {NUM_DATAPOINTS} simulated points and their exact responsibilities")
for k in range(K):
    bottom.plot(sim.data[order, 0].numpy(), responsibilities[order, k].numpy(), ".-",
                label=f"component {k} (mean {theta['locs'][k, 0]:.1f})")
bottom.set_xlabel("x")
bottom.set_ylabel("p(z = k | x, θ)")
bottom.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## The hidden Markov model on the Nile
#
# The annual flow of the Nile at Aswan, 1871–1970 (Cobb 1978), is the classic series with a
# level change: the flow dropped around 1898. `hmm` (two states, ordered emission means) on
# the standardised series, with θ fixed at the model's documented values (a sticky
# chain, means −1 and +1: see `zoo/hmm.py`), gives:
#
# - smoothed marginals p(z_t | x_1..T, θ) by forward–backward,
# - the single most probable path argmax_z p(z | x, θ) by Viterbi,
# - log p(x | θ) by the forward algorithm.

# %%
hmm = zoo.get_model("hmm")
nile = hmm.load_dataset("nile")  # standardised; the same series as `--dataset nile`
columns = load_csv("nile")
years = columns["year"].long()
flows = columns["flow_1e8_m3"]
print("HMM parameters used by the latent target:", {k: v.tolist() for k, v in hmm.true_params().items()})

hmm_reference = hmm.reference(nile, target="latent")
smoothed = hmm_reference.local_marginals["states"]  # (T, 2): state 0 = low mean, 1 = high
viterbi_path = torch.tensor(hmm_reference.provenance["viterbi_path"])
print(hmm_reference.provenance["method"])
print(f"log p(x | theta) = {hmm_reference.log_evidence:.4f}")

# %% [markdown]
# **Brute force again**: on the first few years, sum over all 2^T state paths.

# %%
params = hmm.true_params()
emission = torch.distributions.Normal(params["locs"], params["scales"])
x_years = nile[:NUM_BRUTE_FORCE_YEARS]
paths = torch.tensor(list(itertools.product(range(2), repeat=len(x_years))))  # (2^T, T)
steps = torch.arange(len(x_years))
log_joint_paths = (params["initial"].log()[paths[:, 0]]
                   + params["transition"].log()[paths[:, :-1], paths[:, 1:]].sum(-1)
                   + emission.log_prob(x_years[:, None])[steps, paths].sum(-1))
log_z = torch.logsumexp(log_joint_paths, 0)
path_posterior = (log_joint_paths - log_z).exp()
brute_high = torch.stack([path_posterior[paths[:, t] == 1].sum() for t in range(len(x_years))])
prefix_reference = hmm.reference(x_years, target="latent")
print(f"{len(paths)} paths: log p(x) brute force {log_z.item():.10f}, forward algorithm {prefix_reference.log_evidence:.10f}")
print(f"largest |p(high) difference|: {(brute_high - prefix_reference.local_marginals['states'][:, 1]).abs().max().item():.2e}")
print("brute-force MAP path", paths[log_joint_paths.argmax()].tolist(),
      "= Viterbi", prefix_reference.provenance["viterbi_path"])

# %% [markdown]
# Unlike the mixture, the states are *not* independent given θ: later years carry
# information about earlier states (that is the backward pass). The last smoothed marginal
# of a prefix x_1..t is the *filtered* probability p(z_t | x_1..t, θ); compare it with the
# smoothed p(z_t | x_1..T, θ) of the whole series. (`zoo.exact.hmm.smoothed_marginals` is the
# forward–backward routine the reference uses.)

# %%
log_emission = emission_log_prob(nile, params["locs"], params["scales"])  # (T, K): log p(x_t | z_t = k)
filtered_high = torch.stack([
    smoothed_marginals(params["initial"].log(), params["transition"].log(), log_emission[: t + 1])[-1, 1]
    for t in range(len(nile))
])
gap = (smoothed[:, 1] - filtered_high).abs()
for t in gap.argsort(descending=True)[:3].tolist():
    print(f"{years[t].item()}: filtered p(high) = {filtered_high[t].item():.3f}, smoothed = {smoothed[t, 1].item():.3f}")

# %% [markdown]
# ### The level change
#
# Where does the most probable path leave the high state for the first time, and how
# sure are the marginals around it?

# %%
first_low = int((viterbi_path == 0).nonzero()[0])
print(f"the Viterbi path leaves the high state in {years[first_low].item()} "
      f"(last high year of the opening run: {years[first_low - 1].item()})")
window = slice(first_low - 4, first_low + 4)
for year, p_high, state in zip(years[window].tolist(), smoothed[window, 1].tolist(), viterbi_path[window].tolist()):
    print(f"  {year}: p(high | all data) = {p_high:.3f}   Viterbi state {state}")
before, after = smoothed[:first_low, 1].mean().item(), smoothed[first_low:, 1].mean().item()
print(f"expected fraction of years in the high state: {before:.2f} before, {after:.2f} from {years[first_low].item()} on")
print(f"mean flow: {flows[:first_low].mean().item():.0f} before, {flows[first_low:].mean().item():.0f} after (10^8 m^3)")
later = viterbi_path[first_low:].tolist()
runs = [(years[first_low + i].item(), years[first_low + j - 1].item())
        for i, j in ((i, next((j for j in range(i, len(later)) if later[j] == 0), len(later)))
                     for i in range(len(later)) if later[i] == 1 and (i == 0 or later[i - 1] == 0))]
print("later runs of the high state (first year, last year):", runs)

# %% [markdown]
# The marginal argmax and the Viterbi path answer different questions (each year's most
# probable state vs. the most probable *sequence*) and can disagree where a marginal is
# near 1/2:

# %%
disagree = (smoothed.argmax(-1) != viterbi_path).nonzero().flatten()
print("years where argmax of the marginal differs from the Viterbi state:",
      [(years[t].item(), round(smoothed[t, 1].item(), 3)) for t in disagree] or "none")

# %%
state_means = params["locs"] * flows.std() + flows.mean()  # back on the flow scale
fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
top.plot(years.numpy(), flows.numpy(), "k.-", lw=0.8, label="annual flow")
top.step(years.numpy(), state_means[viterbi_path].numpy(), where="mid", color="C3", label="Viterbi state's mean")
top.set_ylabel("flow (10^8 m^3)")
top.legend(fontsize=8)
top.set_title("Nile at Aswan: two-state HMM, θ fixed")
bottom.fill_between(years.numpy(), smoothed[:, 1].numpy(), step="mid", alpha=0.5, label="smoothed p(high | all years)")
bottom.step(years.numpy(), filtered_high.numpy(), where="mid", color="k", lw=0.8, label="filtered p(high | years up to t)")
bottom.axvline(years[first_low].item(), color="C3", ls="--", label=f"Viterbi path leaves high: {years[first_low].item()}")
bottom.set_ylabel("probability")
bottom.set_xlabel("year")
bottom.legend(fontsize=8, loc="upper right")
fig.tight_layout()

# %% [markdown]
# **What to notice.** The drop after 1898 is unambiguous (marginals ≈ 0 or 1 on either
# side). The later runs of the high state printed above are wet spells that a two-state
# chain, which can return to any state, must call "high"; a single change-point model
# would call them noise around the lower level. The
# `latent` target conditions on θ; the `posterior` target (notebook 2) averages these
# marginals over the posterior of θ instead.
#
# References: Rabiner (1989) *Proc. IEEE* 77:257 (forward–backward, Viterbi); Cobb (1978)
# *Biometrika* 65:243 (the Nile change point); Bishop (2006) *PRML* §9.2 (responsibilities).

# %% [markdown]
# ## Integrating out a continuous state: the Kalman smoother on the Nile
#
# The local-level model (`state_space` with its defaults; Durbin & Koopman 2012, ch. 2)
# lets the level wander instead of switching between two values: z_t = z_{t-1} + η_t,
# x_t = z_t + ε_t, with η_t ~ Normal(0, σ²_η) and ε_t ~ Normal(0, σ²_ε). Given the
# variances, the states are jointly Gaussian with the data, so p(z | x) is one Gaussian
# conditioning of a T × T covariance, which the Kalman filter and the Rauch–Tung–Striebel
# smoother do in O(T). First, the brute force on the zoo's `latent` target (the
# standardised series, the variances at the model's documented values):

# %%
level_model = zoo.get_model("state_space")
x_level = level_model.load_dataset("nile")[:NUM_DENSE_YEARS]  # (T, 1), standardised
level_params = level_model.true_params()
level_reference = level_model.reference(x_level, target="latent")
# The joint of the path: z = L u with u = (z_1, η_2, ..., η_T) and L lower-triangular ones.
T = len(x_level)
first_loc, first_cov = level_model.initial_law()
cumulative = torch.ones(T, T, dtype=torch.float64).tril()
path_cov = cumulative @ torch.diag(torch.cat([first_cov[0], level_params["state_variance"].expand(T - 1)])) @ cumulative.T
data_cov = path_cov + level_params["observation_variance"] * torch.eye(T, dtype=torch.float64)
gain = torch.linalg.solve(data_cov, path_cov).T  # cov(z, x) cov(x)^-1; cov(z, x) = cov(z) here
dense_mean = first_loc + gain @ (x_level[:, 0] - first_loc)
dense_sd = (path_cov - gain @ path_cov).diagonal().sqrt()
dense_evidence = torch.distributions.MultivariateNormal(first_loc.expand(T), data_cov).log_prob(x_level[:, 0])
print(level_reference.provenance["method"])
print(f"log p(x | theta): Kalman filter {level_reference.log_evidence:.10f}, dense {dense_evidence.item():.10f}")
moments = level_reference.moments["states"]
print(f"largest |difference| of the smoothed means {(moments.mean[:, 0] - dense_mean).abs().max().item():.1e}, "
      f"of the sds {(moments.sd[:, 0] - dense_sd).abs().max().item():.1e}")

# %% [markdown]
# **Durbin & Koopman's table.** They fit the two variances to the raw flows by maximum
# likelihood with an *exact diffuse* first level (its prior variance taken to infinity,
# `kalman_filter(..., diffuse=True)`; the zoo's model keeps a proper prior so that it can
# simulate). Maximising that likelihood reproduces their σ²_ε = 15099, σ²_η = 1469.1 and
# log L = −633.46; the smoothed level with its 90% band is their Figure 2.2.

# %%
import numpy as np
from scipy import optimize

raw = flows[:, None]
one = torch.eye(1, dtype=torch.float64)


def diffuse_filter(log_variances):
    observation_variance, level_variance = np.exp(log_variances)
    return kalman_filter(raw, one, one, level_variance * one, observation_variance * one,
                         torch.zeros(1, dtype=torch.float64), one, diffuse=True)


fit = optimize.minimize(lambda v: -float(diffuse_filter(v).step_log_likelihood.sum()), np.log([1e4, 1e3]),
                        method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-10})
observation_variance, level_variance = np.exp(fit.x)
print(f"sigma^2_eps = {observation_variance:.0f} (D&K 15099), sigma^2_eta = {level_variance:.1f} (D&K 1469.1), "
      f"log L = {-fit.fun:.2f} (D&K -633.46)")
level_locs, level_covs = rts_smoother(diffuse_filter(fit.x), one)
level_sd = level_covs[:, 0, 0].sqrt()

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(years.numpy(), flows.numpy(), "k.", ms=4, label="annual flow")
ax.plot(years.numpy(), level_locs[:, 0].numpy(), color="C0", label="smoothed level E[z_t | all years]")
ax.fill_between(years.numpy(), (level_locs[:, 0] - 1.645 * level_sd).numpy(),
                (level_locs[:, 0] + 1.645 * level_sd).numpy(), color="C0", alpha=0.25, label="90% band")
ax.set_xlabel("year")
ax.set_ylabel("flow (10^8 m^3)")
ax.set_title("Nile: local level at the ML variances, smoothed (Durbin & Koopman, Fig. 2.2)")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# **What to notice.** The smoothed level drops around 1898 too, but as a continuous
# descent over a few years rather than a switch: the local-level model has no notion of
# regimes, only of how fast the level may move (σ²_η is a tenth of σ²_ε). The
# `state_space` model's `posterior` target puts priors on both variances and integrates
# the states out with Pyro's `GaussianHMM`; its gold standard is in `zoo/references/`.
#
# References: Kalman (1960); Rauch, Tung & Striebel (1965) *AIAA J.* 3:1445; Durbin &
# Koopman (2012) *Time Series Analysis by State Space Methods*, §2.2–2.10.
