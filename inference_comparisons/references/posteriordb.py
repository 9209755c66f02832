"""posteriordb's reference posteriors as stored references: a second source, from outside.

Every other gold standard in ``zoo/references`` comes from this project's own builder, so an
error in the builder would pass every test that compares against it. posteriordb
(stan-dev/posteriordb; Magnusson et al. 2024, arXiv:2407.04967) holds reference posteriors
drawn by Stan: 10 chains of 10,000 iterations after 10,000 of warm-up, thinned by 10, with
R-hat < 1.01 and ESS checked. Where a zoo model in one configuration is the same posterior
(:data:`POSTERIORS`), its draws are mapped to the zoo's sites and summarised exactly as the
builder summarises its own chains (:func:`~inference_comparisons.references.build.chain_moments`:
se = sd / sqrt(ESS)). posteriordb stores no log evidence, so these references have none
(NaN), and a cell scored against one has no ``log_evidence_error``.

``python -m inference_comparisons reference gmm --dataset posteriordb:low_dim_gauss_mix
--from-posteriordb PATH`` imports one, where PATH is a posteriordb checkout or the git
directory that ``fetch github:stan-dev/posteriordb`` gives. The draws themselves are not
shipped (a megabyte each); the summaries, the data and the provenance are.
"""

from __future__ import annotations

import datetime
import io
import json
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from zoo.base import Draws, Reference, Target, ZooModel
from zoo.datasets import POSTERIORDB, load_posteriordb

from inference_comparisons.estimators.moments import summarise_draws
from inference_comparisons.references.build import chain_moments

__all__ = ["LICENCE", "POSTERIORS", "PosteriordbPosterior", "import_reference"]

#: posteriordb's licence (its LICENCE.md), which covers its data and reference draws.
LICENCE = "BSD-3-Clause (posteriordb's LICENCE.md, Copyright (c) 2011-2024, Stan Developers and their Assignees)"


@dataclass(frozen=True)
class PosteriordbPosterior:
    """How one posteriordb posterior maps onto a zoo model: its posteriordb name (the zoo's
    dataset is ``posteriordb:NAME``, which configures the model through
    ``info.dataset_configs``), the model, and the map from posteriordb's draws (one float64
    tensor per Stan parameter name, e.g. ``"mu[1]"``) and the zoo's posterior target to
    draws of the target's sites."""

    name: str
    model: str
    to_sites: Callable[[dict[str, torch.Tensor], Target], Draws]


def _mixture_sites(draws: dict[str, torch.Tensor], target: Target) -> Draws:
    """``theta`` is the weight of the first (lower-mean) component: ``log_mix(theta, ...)``."""
    theta = draws["theta"]
    return {"weights": torch.stack([theta, 1 - theta], -1),
            "locs": torch.stack([draws["mu[1]"], draws["mu[2]"]], -1).unsqueeze(-1),
            "scales": torch.stack([draws["sigma[1]"], draws["sigma[2]"]], -1).unsqueeze(-1)}


#: Seed of the initial distributions drawn for posteriordb's HMM draws (_hmm_sites).
INITIAL_SEED = 0


def _hmm_sites(draws: dict[str, torch.Tensor], target: Target) -> Draws:
    """``theta1`` and ``theta2`` are the transition rows, ``mu`` the ordered means. The Stan
    program has no initial distribution (a uniform one), where the zoo has a site ``initial``
    with a flat Dirichlet(alpha) prior; each draw gets one from its exact conditional,

        p(initial | theta, x)  ∝  Dir(initial | alpha) sum_k initial_k p(x | z_1 = k, theta)
                               =  sum_k w_k Dir(initial | alpha + e_k),

    with w_k = p(z_1 = k | x, theta) under the uniform initial distribution (the target's own
    smoothed marginal), so that the draws are joint posterior draws of every zoo site."""
    transition = torch.stack([torch.stack([draws["theta1[1]"], draws["theta1[2]"]], -1),
                              torch.stack([draws["theta2[1]"], draws["theta2[2]"]], -1)], -2)
    locs = torch.stack([draws["mu[1]"], draws["mu[2]"]], -1)
    num_draws, K = locs.shape
    uniform = torch.full((num_draws, K), 1.0 / K, dtype=torch.float64)
    first = target.local_marginals({"initial": uniform, "transition": transition, "locs": locs})["states"][:, 0]
    alpha = target.priors["initial"].concentration
    with torch.random.fork_rng():
        torch.manual_seed(INITIAL_SEED)
        state = torch.multinomial(first, 1).squeeze(-1)
        initial = torch.distributions.Dirichlet(alpha + torch.nn.functional.one_hot(state, K)).sample()
    return {"initial": initial, "transition": transition, "locs": locs}


#: The posteriordb posteriors the zoo can express exactly, by posteriordb's name.
POSTERIORS: dict[str, PosteriordbPosterior] = {
    "low_dim_gauss_mix": PosteriordbPosterior("low_dim_gauss_mix", "gmm", _mixture_sites),
    "hmm_example": PosteriordbPosterior("hmm_example", "hmm", _hmm_sites),
}


def _reader(repository: Path) -> Callable[[str], bytes]:
    """Read a file of posteriordb's ``posterior_database/`` from a checkout or a git directory."""
    repository = Path(repository)
    if (repository / "posterior_database").is_dir():
        return lambda path: (repository / "posterior_database" / path).read_bytes()
    if (repository / "HEAD").is_file():  # a bare git directory (fetch's snapshot)
        def read(path: str) -> bytes:
            shown = subprocess.run(["git", f"--git-dir={repository}", "show", f"HEAD:posterior_database/{path}"],
                                   capture_output=True, check=False)
            if shown.returncode:
                raise FileNotFoundError(f"{repository}: no posterior_database/{path} ({shown.stderr.decode().strip()})")
            return shown.stdout
        return read
    raise ValueError(f"{repository} is neither a posteriordb checkout (with posterior_database/) nor its git directory")


def _commit(repository: Path) -> str | None:
    """The posteriordb commit read, where ``repository`` is a git checkout or directory."""
    where = ["-C", str(repository)] if (repository / ".git").exists() else [f"--git-dir={repository}"]
    shown = subprocess.run(["git", *where, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return shown.stdout.strip() or None


def import_reference(model: ZooModel, data: torch.Tensor, dataset: str, repository: Path | str) -> Reference:
    """posteriordb's reference posterior for ``dataset`` (``posteriordb:NAME``), summarised as
    the zoo's :class:`~zoo.base.Reference` of ``model``'s ``posterior`` target.

    ``ValueError`` if ``dataset`` is not one of :data:`POSTERIORS`, if ``model`` is not that
    posterior's configuration, if ``data`` are not the dataset's, or if the shipped data are
    not posteriordb's."""
    name = dataset.removeprefix(POSTERIORDB)
    if not dataset.startswith(POSTERIORDB) or name not in POSTERIORS:
        raise ValueError(f"{dataset!r} is not a posteriordb posterior the zoo expresses; accepted: "
                         f"{', '.join(POSTERIORDB + n for n in POSTERIORS)}")
    posterior = POSTERIORS[name]
    if model.name != posterior.model:
        raise ValueError(f"{dataset} is a {posterior.model} posterior, not a {model.name} one")
    model.check_dataset_config(dataset)
    if not torch.equal(model.validate(data), model.load_dataset(dataset)):
        raise ValueError(f"the data given are not {dataset}'s, and posteriordb's draws are of the posterior given those")
    repository = Path(repository)
    read = _reader(repository)
    theirs = json.loads(_unzip(read(f"data/data/{name}.json.zip")))
    ours = load_posteriordb(name)
    if set(theirs) != set(ours) or any(not torch.equal(torch.tensor(v, dtype=torch.float64), ours[k])
                                       for k, v in theirs.items()):
        raise ValueError(f"the shipped zoo/datasets/posteriordb/{name}.json differs from posteriordb's data at {repository}")
    full = f"{name}-{name}"
    info = json.loads(read(f"reference_posteriors/draws/info/{full}.info.json"))
    chains = json.loads(_unzip(read(f"reference_posteriors/draws/draws/{full}.json.zip")))
    by_name = {key: torch.tensor([chain[key] for chain in chains], dtype=torch.float64).reshape(-1)
               for key in chains[0]}
    problem = model.target(data, "posterior")
    draws = posterior.to_sites(by_name, problem)
    moments, ess_min, rhat_max = chain_moments(problem, draws, len(chains))
    arguments = info["inference"]["method_arguments"]
    return Reference(
        log_evidence=float("nan"), log_evidence_se=float("nan"), exact=False, moments=moments,
        local_marginals=summarise_draws(problem, draws)[1],
        provenance={
            "source": "posteriordb",
            "method": (f"posteriordb's reference posterior {full}: Stan NUTS ({info['versions']['rstan_version']}), "
                       f"{arguments['chains']} chains x {arguments['iter']} iterations ({arguments['warmup']} warm-up) "
                       f"thinned by {arguments['thin']}, seed {arguments['seed']}; moments and se = sd/sqrt(ESS) "
                       f"recomputed here from its {len(by_name[next(iter(by_name))])} draws; no log evidence"),
            "command": f"python -m inference_comparisons reference {model.name} --dataset {dataset} "
                       f"--from-posteriordb PATH",
            "posteriordb": {"name": full, "commit": _commit(repository), "inference": info["inference"],
                            "diagnostics": info["diagnostics"], "checks_made": info["checks_made"],
                            "added_by": info["added_by"], "added_date": info["added_date"], "licence": LICENCE},
            "model": model.name, "config": model.config(), "num_datapoints": int(data.shape[0]),
            "diagnostics": {"ess_min": ess_min, "rhat_max": rhat_max},
            "created": datetime.date.today().isoformat(),
        },
    )


def _unzip(payload: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(payload)) as archive:
        return archive.read(archive.namelist()[0])
