"""Shared numerics that methods and reference builders both stand on (a reference builder
never imports the methods it judges, ARCHITECTURE.md §2):

- :mod:`~inference_comparisons.estimators.state`: the clean, seeded, single-threaded state;
- :mod:`~inference_comparisons.estimators.particles`: vectorised model passes over many
  particles (importance weights of a dataset or per data point, the log joint at draws);
- :mod:`~inference_comparisons.estimators.weights`: PSIS k̂ and resampling of weights;
- :mod:`~inference_comparisons.estimators.moments`: weighted moments and local marginals;
- :mod:`~inference_comparisons.estimators.potential`: the fast potential HMC moves on, at
  one point or a batch, and its evaluation counter;
- :mod:`~inference_comparisons.estimators.sampler_stats`: per-draw HMC/NUTS statistics,
  the effective sample size and the nested R-hat;
- :mod:`~inference_comparisons.estimators.hmc`: several Pyro HMC/NUTS chains on a target;
- :mod:`~inference_comparisons.estimators.lockstep`: what samplers of many chains in
  lockstep share (the batched state, the start, one HMC transition, mass-matrix windows);
- :mod:`~inference_comparisons.estimators.chees`: ChEES-HMC, many chains in lockstep;
- :mod:`~inference_comparisons.estimators.lockstep_nuts`: NUTS, many chains in lockstep;
- :mod:`~inference_comparisons.estimators.guides`: guides built on an amortised guide;
- :mod:`~inference_comparisons.estimators.ecdf`: the uniformity test of calibration ranks and
  its simultaneous ECDF bands (calibration and the report both read them).

The log-mean-exp of weights is :func:`zoo.numerics.log_mean_exp`, and the defensive
mixture :class:`zoo.distributions.DefensiveMixture`: the zoo's own analyses need them too.
"""
