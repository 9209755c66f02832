"""NUTS's inner loop: Pyro's generic potential versus the plain-torch ``Target.log_density``.

For every registered model's ``posterior`` target, times one potential-and-gradient
evaluation both ways, side by side in one run on one thread, and prints the ratio (the
claim in inference_comparisons/estimators/potential.py). A third column times the plain-torch
potential with argument validation off, as the samplers run it after warm-up too
(estimators/hmc.py, references/chains.py). Run: ``python -m benchmarks.bench_potential``.
"""

from __future__ import annotations

import time

import pyro
import torch
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.integrator import potential_grad

import zoo
from inference_comparisons.estimators.potential import fast_potential
from inference_comparisons.sweep import load_data


def _per_call(function, params, repeats: int) -> float:
    potential_grad(function, params)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        potential_grad(function, params)
    return (time.perf_counter() - start) / repeats


def main(repeats: int = 100) -> None:
    torch.set_num_threads(1)
    print(f"{'model':<16} {'pyro ms':>9} {'fast ms':>9} {'ratio':>7} {'unvalidated ms':>15} {'ratio':>7}")
    for name in zoo.available_models():
        model = zoo.get_model(name)
        if "posterior" not in model.info.targets:
            continue
        target = model.target(load_data(model, "simulated"), "posterior")
        init, pyro_potential, transforms, _ = initialize_model(target.collapsed_model,
                                                               max_plate_nesting=target.max_plate_nesting)
        fast = fast_potential(target, {s: transforms[s].inv for s in target.continuous_sites})
        slow_s, fast_s = _per_call(pyro_potential, init, repeats), _per_call(fast, init, repeats)
        with pyro.validation_enabled(False):
            quiet_s = _per_call(fast, init, repeats)
        print(f"{name:<16} {1e3 * slow_s:9.2f} {1e3 * fast_s:9.2f} {slow_s / fast_s:6.1f}x {1e3 * quiet_s:15.2f} "
              f"{fast_s / quiet_s:6.2f}x")


if __name__ == "__main__":
    main()
