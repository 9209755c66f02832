"""Where the lockstep samplers start: uniform superchain starts against draws from the
Laplace approximation of the heaviest mode, side by side in one run.

    python -m benchmarks.bench_lockstep_starts [--models hmm,gmm] [--budget 1024] [--seeds 0,1]

For each model's posterior on the sweep's simulated data (200 points), ``chees`` runs once
per seed with each start, interleaved, and is scored against the stored gold standard: a
superchain stuck in a local mode shows as a large mean error (in posterior sds), a tiny
ESS and a nested R-hat far above 1. Wall seconds include the mode search; torch runs on one
thread, as in every cell.
"""

from __future__ import annotations

import argparse
import time

import torch

import zoo
from inference_comparisons import score
from inference_comparisons.estimators.potential import FlatPotential
from inference_comparisons.estimators.state import prepare_cell
from inference_comparisons.methods.lockstep import ChEES
from inference_comparisons.sweep import load_data


class UniformStartChEES(ChEES):
    """``chees`` with Pyro's ``init_to_uniform`` superchain starts, as before the mode search."""

    def superchain_starts(self, space: FlatPotential) -> torch.Tensor:
        return 4 * torch.rand(self.num_superchains, space.dim, dtype=torch.float64) - 2


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="hmm,gmm")
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args(argv)
    rows = []
    print("| posterior | starts | seed | mean error (posterior sd) | min ESS | nested R-hat | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = zoo.get_model(name)
        data = model.validate(load_data(model, "simulated"))
        target, reference = model.target(data, "posterior"), model.reference(data, "posterior")
        for seed in map(int, args.seeds.split(",")):
            for starts, method in (("uniform", UniformStartChEES()), ("Laplace", ChEES())):
                prepare_cell(seed)
                start = time.perf_counter()
                result = method.run(target, args.budget, seed)
                wall_s = time.perf_counter() - start
                row = score(result, reference)
                rows.append({"model": name, "starts": starts, "seed": seed, "wall_s": wall_s, **row})
                print(f"| {name} | {starts} | {seed} | {row['mean_error']:.3f} | {row['ess_min']:.0f} | "
                      f"{row['rhat_max']:.3f} | {wall_s:.1f} |", flush=True)
    return rows


if __name__ == "__main__":
    main()
