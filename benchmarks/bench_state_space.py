"""State-space benchmark: the posterior's likelihood by GaussianHMM's parallel scan against the
sequential Kalman filter, side by side.

    python -m benchmarks.bench_state_space [--num-steps 200] [--repeats 7]

One log likelihood of the ``state_space`` posterior with its gradient (what NUTS pays per
leapfrog step) at S variance draws at once, S = 1, 16 and 128: Pyro's ``GaussianHMM``
(``StateSpacePosterior.log_likelihood``, log T sequential steps of information-form
algebra) and :func:`zoo.exact.kalman.kalman_filter` (T sequential steps of covariance-form
algebra, exact where the information form loses digits, and the one-step predictive
densities). The two agree to 1e-8 (``tests/test_state_space.py``). Torch on one thread, as
in every cell; medians of interleaved repeats, so both see the same machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import zoo


def main(argv: list[str] | None = None) -> dict[int, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = zoo.get_model("state_space")
    posterior = model.target(model.simulate(args.num_steps, seed=0).data, "posterior")
    print(f"state_space benchmark: T={args.num_steps}, float64, 1 thread, median of {args.repeats} interleaved runs")
    ratios = {}
    for num in (1, 16, 128):
        generator = torch.Generator().manual_seed(num)
        draws = {"state_variance": 0.05 * (0.3 * torch.randn(num, 1, generator=generator, dtype=torch.float64)).exp(),
                 "observation_variance": 0.5 * (0.3 * torch.randn(num, 1, generator=generator,
                                                                  dtype=torch.float64)).exp()}
        for value in draws.values():
            value.requires_grad_(True)
        ways = {"GaussianHMM": lambda: posterior.log_likelihood(draws),
                "Kalman filter": lambda: model.filter(posterior.data, draws).step_log_likelihood.sum(-1)}
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.repeats + 1):  # the first round warms up
            for name, way in ways.items():
                start = time.perf_counter()
                torch.autograd.grad(way().sum(), list(draws.values()))
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(values[1:]) for name, values in times.items()}
        ratios[num] = median["Kalman filter"] / median["GaussianHMM"]
        print(f"S = {num:3d}: GaussianHMM {median['GaussianHMM'] * 1e3:7.2f} ms, Kalman filter "
              f"{median['Kalman filter'] * 1e3:7.2f} ms per call with gradient; Kalman / GaussianHMM = "
              f"{ratios[num]:5.1f}")
    return ratios


if __name__ == "__main__":
    main()
