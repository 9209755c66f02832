"""Steady-state cost per gradient on a long run: ``chees`` (eager and compiled potential)
against NumPyro's NUTS, the batched potential alone and jitted JAX's floor.

    python -m benchmarks.bench_steady_state [--models gmm,hmm,factor_analysis] [--draws 300]

For a gold standard's long runs, compilation and warm-up are paid once; what matters is the
cost of each gradient afterwards. On each posterior at the harness's size (200 simulated
points), one thread:

- ``chees``: 32 chains started from the Laplace approximation and adapted by the usual
  200-iteration warm-up, then ``--draws`` iterations of the fixed kernel, timed; µs per
  chain-gradient = wall / (chains x leapfrog steps). Once with the eager potential, once
  with :meth:`FlatPotential.compile` (compilation not timed);
- the batched potential and gradient alone at the same 32 points, eager and compiled: the
  floor under the sampler's cost, so their ratio is the sampler's own overhead;
- NumPyro's NUTS, 1 chain, after its warm-up: ``--draws`` x 20 transitions of its kernel
  in one jitted loop, compiled before it is timed, per leapfrog step (median over 3
  independent warm-ups, whose trees differ);
- JAX's floor: the jitted gradient of NumPyro's potential inside a compiled loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# Two host devices, before jax is imported, as in bench_mcmc (harmless here).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpyro  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

import zoo  # noqa: E402
from benchmarks.numpyro_targets import numpyro_model  # noqa: E402
from inference_comparisons.estimators.chees import ChEESKernel, chees_warmup, run_fixed_kernel  # noqa: E402
from inference_comparisons.estimators.modes import laplace_starts  # noqa: E402
from inference_comparisons.estimators.potential import FlatPotential  # noqa: E402
from inference_comparisons.sweep.plan import load_data  # noqa: E402

CHAINS = 32


def batched_floor_us(space: FlatPotential, points: torch.Tensor, calls: int = 100) -> float:
    """Median µs per draw of the batched potential and gradient at ``points``."""
    times = []
    with pyro.validation_enabled(False):
        space.batch_potential_and_grad(points)
        for _ in range(calls):
            start = time.perf_counter()
            space.batch_potential_and_grad(points)
            times.append(time.perf_counter() - start)
    return 1e6 * statistics.median(times) / len(points)


def _chees_us(space: FlatPotential, state: torch.Tensor, kernel: ChEESKernel, draws: int) -> float:
    start = time.perf_counter()
    chains = run_fixed_kernel(space, state, draws, kernel)
    wall = time.perf_counter() - start
    return 1e6 * wall / (len(state) * int(chains.stats["n_steps"][:, 0].sum()))


def _numpyro_us(name: str, model: zoo.ZooModel, data: torch.Tensor, draws: int, seed: int) -> float:
    fn, kwargs = numpyro_model(name, model, data)
    mcmc = MCMC(NUTS(fn), num_warmup=500, num_samples=draws, progress_bar=False)
    mcmc.warmup(jax.random.PRNGKey(seed), **kwargs)
    kernel = mcmc.sampler

    @jax.jit
    def loop(state, n: int):  # NUTS transitions in one compiled loop, counting leapfrog steps
        def body(_, carry):
            state, steps = carry
            state = kernel.sample(state, (), kwargs)
            return state, steps + state.num_steps
        return jax.lax.fori_loop(0, n, body, (state, 0))

    jax.block_until_ready(loop(mcmc.post_warmup_state, 2))
    start = time.perf_counter()
    _, steps = jax.block_until_ready(loop(mcmc.post_warmup_state, draws))
    return 1e6 * (time.perf_counter() - start) / int(steps)


def _jax_floor_us(name: str, model: zoo.ZooModel, data: torch.Tensor, calls: int = 20_000) -> float:
    fn, kwargs = numpyro_model(name, model, data)
    info, potential, _, _ = initialize_model(jax.random.PRNGKey(0), fn, model_kwargs=kwargs)[:4]
    flat, unravel = ravel_pytree(info.z)
    gradient = jax.grad(lambda x: potential(unravel(x)))

    @jax.jit
    def loop(x: jnp.ndarray, n: int) -> jnp.ndarray:  # a tiny step keeps every gradient live
        return jax.lax.fori_loop(0, n, lambda _, y: y - 1e-12 * gradient(y), x)

    jax.block_until_ready(loop(flat, 10))
    start = time.perf_counter()
    jax.block_until_ready(loop(flat, calls))
    return 1e6 * (time.perf_counter() - start) / calls


def measure(name: str, draws: int = 300) -> dict[str, float]:
    """µs per (chain-)gradient of each way of running ``name``'s posterior (module docstring)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = zoo.get_model(name)
    data = load_data(model, "simulated")
    target = model.target(data, "posterior")
    eager, compiled = FlatPotential(target), FlatPotential(target)
    start = laplace_starts(eager, 8, CHAINS)
    if start is None:
        raise RuntimeError(f"{name}: no mode with a positive-definite Hessian to start from")
    state, kernel = chees_warmup(eager, start, 200)
    row = {"chees eager": _chees_us(eager, state.x, kernel, draws),
           "batched potential eager": batched_floor_us(eager, state.x)}
    fallback = compiled.compile(state.x)
    if fallback is None:
        row["chees compiled"] = _chees_us(compiled, state.x, kernel, draws)
        row["batched potential compiled"] = batched_floor_us(compiled, state.x)
    else:
        print(f"{name}: compiled potential fell back to eager mode: {fallback}")
    # Its cost per step depends on the adapted trees (deeper ones spread the overhead), so
    # the median over 3 warm-ups.
    row["numpyro NUTS steady state"] = statistics.median(_numpyro_us(name, model, data, 20 * draws, seed)
                                                         for seed in range(3))
    row["jax gradient in a compiled loop"] = _jax_floor_us(name, model, data)
    return row


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="gmm,hmm,factor_analysis")
    parser.add_argument("--draws", type=int, default=300)
    args = parser.parse_args(argv)
    if args.draws < 10:
        parser.error(f"--draws must be at least 10, got {args.draws}")
    numpyro.enable_x64()
    rows = {}
    for name in args.models.split(","):
        rows[name] = measure(name, args.draws)
        print(name, {k: round(v, 1) for k, v in rows[name].items()}, flush=True)
    return rows


if __name__ == "__main__":
    main()
