"""HMM benchmark: the cost of the exact latent answer, and DiscreteHMM vs the pyro.markov loop.

    python -m benchmarks.bench_hmm [--num-steps 1000] [--num-states 3] [--repeats 5]

1. The exact ``latent`` reference (forward algorithm, forward-backward smoothing and Viterbi,
   all O(T K^2)) for one sequence of T steps.
2. One log-density evaluation of the ``posterior`` target at a fixed parameter draw, with
   its gradient (what NUTS pays per leapfrog step), three ways side by side:
   the textbook ``pyro.markov`` model summed out by ``TraceEnum_ELBO``, the collapsed
   ``DiscreteHMM`` model traced by Pyro, and the plain-torch ``Target.log_density``.
   Ratios are against the markov loop. Torch is pinned to one thread, as in every cell.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import pyro.poutine as poutine
import torch
from pyro.infer import TraceEnum_ELBO

import zoo
from zoo.exact import hmm


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocations and lazy imports are not the steady state
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=1000)
    parser.add_argument("--num-states", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    m = zoo.get_model("hmm", num_states=args.num_states)
    data = m.simulate(num_datapoints=args.num_steps, seed=0).data
    print(f"hmm benchmark: T={args.num_steps}, K={args.num_states}, float64, 1 thread, "
          f"median of {args.repeats}")

    latent = m.target(data, "latent")
    exact_s = median_seconds(latent.exact, args.repeats)
    print(f"exact latent answer (forward + forward-backward + Viterbi): {exact_s * 1e3:9.1f} ms")
    params = m.true_params()
    logs = (params["initial"].log(), params["transition"].log(),
            hmm.emission_log_prob(data, params["locs"], params["scales"]))
    parts = {
        "forward_log_evidence (pairwise scan)": lambda: hmm.forward_log_evidence(*logs),
        "smoothed_marginals (gradient of log Z)": lambda: hmm.smoothed_marginals(*logs),
        "viterbi (max-plus scan + gradient)": lambda: hmm.viterbi(*logs),
        "viterbi, textbook back-pointer loop": lambda: hmm._viterbi_sequential(*logs),
        "one_step_log_likelihood (step loop)": lambda: hmm.one_step_log_likelihood(*logs),
        "sample_paths, 100 FFBS paths": lambda: hmm.sample_paths(*logs, num_samples=100),
    }
    for name, fn in parts.items():
        print(f"  {name:40s} {median_seconds(fn, args.repeats) * 1e3:9.1f} ms")

    posterior = m.target(data, "posterior")
    draw = {k: v.clone().requires_grad_() for k, v in m.true_params().items()}

    def markov() -> None:
        loss = TraceEnum_ELBO(max_plate_nesting=0).differentiable_loss(
            poutine.condition(posterior.model, draw), lambda: None)
        torch.autograd.grad(loss, list(draw.values()))

    def discrete_hmm() -> None:
        log_p = poutine.trace(poutine.condition(posterior.collapsed_model, draw)).get_trace().log_prob_sum()
        torch.autograd.grad(log_p, list(draw.values()))

    def plain_torch() -> None:
        log_p = posterior.log_density({k: v[None] for k, v in draw.items()}).sum()
        torch.autograd.grad(log_p, list(draw.values()))

    timings = {"pyro.markov + TraceEnum_ELBO": median_seconds(markov, args.repeats),
               "DiscreteHMM (Pyro trace)": median_seconds(discrete_hmm, args.repeats),
               "Target.log_density (plain torch)": median_seconds(plain_torch, args.repeats)}
    baseline = timings["pyro.markov + TraceEnum_ELBO"]
    print("posterior log density + gradient, one evaluation:")
    for name, seconds in timings.items():
        print(f"  {name:34s} {seconds * 1e3:9.1f} ms   speed-up x{baseline / seconds:7.1f}")
    return {"exact_s": exact_s, **timings}


if __name__ == "__main__":
    main()
