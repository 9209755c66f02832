"""Exact inference algorithms and closed forms, one module per model family:
:mod:`zoo.exact.hmm` (forward-backward, Viterbi, FFBS) and :mod:`zoo.exact.gaussian`
(Gaussian conditioning, maximum-likelihood PPCA)."""
