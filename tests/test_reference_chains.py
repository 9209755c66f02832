"""Gold-standard chains saved in pieces, by either sampler (ChEES groups, NUTS chains):
resuming, extending and parallel workers give the same draws as one uninterrupted run, and a
directory of another build is refused."""

from __future__ import annotations

import pyro.distributions as dist
import pytest
import torch
from toy_targets import ThetaTarget

from inference_comparisons.estimators.hmc import convergence
from inference_comparisons.references import chains as reference_chains
from inference_comparisons.references.chains import CHEES_GROUPS, open_build_directory, run_saved_chains
from zoo.base import Target

_F64 = torch.float64
#: A correlated 2-d Gaussian: NUTS with a dense mass matrix has something to adapt.
_POSTERIOR = dist.MultivariateNormal(torch.tensor([1.0, -2.0], dtype=_F64),
                                     torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=_F64))


_TARGET = ThetaTarget(_POSTERIOR)


class _GaussianModel:
    """Just enough of a ZooModel for run_saved_chains (module level, so worker processes can unpickle it)."""

    name = "gaussian"

    def target(self, data: torch.Tensor, target: str) -> Target:
        return _TARGET


#: Each sampler's chains and warm-up in a test, and the name of its units' files: 2 NUTS
#: chains, one a unit; ChEES's groups of 8 chains, whose adaptation reads statistics across
#: chains, and whose Adam steps on the trajectory length need a longer warm-up than NUTS's.
SAMPLERS = {"nuts": (2, 50, "chain"), "chees": (8 * CHEES_GROUPS, 200, "group")}


def _chains(directory, draws_per_chain, sampler, jobs=1):
    return run_saved_chains(_GaussianModel(), torch.zeros(1, 1), "posterior", _POSTERIOR.mean, _POSTERIOR.covariance_matrix,
                            directory=directory, num_chains=SAMPLERS[sampler][0], draws_per_chain=draws_per_chain,
                            num_warmup=SAMPLERS[sampler][1], seed=3, sampler=sampler, jobs=jobs)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_resumed_and_extended_build_has_the_draws_of_an_uninterrupted_one(tmp_path, monkeypatch, sampler):
    monkeypatch.setattr(reference_chains, "SEGMENT_DRAWS", 25)
    num_chains, _, unit = SAMPLERS[sampler]
    whole = _chains(tmp_path / "whole", 60, sampler)  # 3 segments, the first 60 draws kept
    assert whole.draws["theta"].shape == (60 * num_chains, 2)

    parts = tmp_path / "parts"
    first = _chains(parts, 25, sampler)
    first_segment = parts / f"{unit}0-segment00000.pt"
    written = first_segment.stat().st_mtime_ns
    (parts / f"{unit}1-segment00000.pt").unlink()  # as if killed before unit 1's segment was saved
    extended = _chains(parts, 60, sampler)
    assert first_segment.stat().st_mtime_ns == written  # reused, not recomputed
    torch.testing.assert_close(extended.draws["theta"], whole.draws["theta"], rtol=0, atol=0)
    per_chain = whole.draws["theta"].reshape(num_chains, 60, 2)
    torch.testing.assert_close(first.draws["theta"].reshape(num_chains, 25, 2), per_chain[:, :25], rtol=0, atol=0)
    assert extended.grad_evals == whole.grad_evals > 0
    assert extended.divergences == whole.divergences == 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_the_chains_sample_the_posterior(tmp_path, sampler):
    num_chains = SAMPLERS[sampler][0]
    draws = _chains(tmp_path, 500, sampler).draws["theta"]
    _, ess, rhat = convergence(draws, num_chains)
    assert ((draws.mean(0) - _POSTERIOR.mean).abs() < 5 / ess.sqrt()).all(), ess  # sds of 1
    assert float(rhat.max()) < 1.05
    assert float(torch.corrcoef(draws.T)[0, 1]) == pytest.approx(0.9, abs=0.05)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_worker_processes_give_the_draws_of_one_process(tmp_path, sampler):
    one = _chains(tmp_path / "one", 10, sampler, jobs=1)
    two = _chains(tmp_path / "two", 10, sampler, jobs=2)
    torch.testing.assert_close(two.draws["theta"], one.draws["theta"], rtol=0, atol=0)


@pytest.mark.parametrize("sampler,num_chains,match", [
    ("hmc", 4, "unknown reference sampler 'hmc'; accepted: chees, nuts"),
    ("chees", 6, "num_chains must be a multiple of 4 and at least 8, got 6"),
    ("chees", 4, "num_chains must be a multiple of 4 and at least 8, got 4"),
])
def test_a_bad_sampler_or_number_of_chains_is_refused(tmp_path, sampler, num_chains, match):
    with pytest.raises(ValueError, match=match):
        run_saved_chains(_GaussianModel(), torch.zeros(1, 1), "posterior", _POSTERIOR.mean,
                         _POSTERIOR.covariance_matrix, directory=tmp_path, num_chains=num_chains, draws_per_chain=10,
                         num_warmup=10, seed=0, sampler=sampler)


def test_a_directory_of_another_build_is_refused(tmp_path):
    open_build_directory(tmp_path, {"model": "gaussian", "seed": 3})
    open_build_directory(tmp_path, {"model": "gaussian", "seed": 3})  # the same build resumes
    with pytest.raises(ValueError, match=r"another build \(it differs in seed: \{'seed': 3\} there, "
                                         r"\{'seed': 4\} now\)"):
        open_build_directory(tmp_path, {"model": "gaussian", "seed": 4})


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_an_impossible_number_of_jobs_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match=f"jobs must be an integer in 1..256, got {bad!r}"):
        _chains(tmp_path, 10, "nuts", jobs=bad)


def test_flat_vectors_unflatten_to_the_sites_shapes_scalar_sites_included():
    import zoo
    from inference_comparisons.estimators.potential import FlatPotential

    model = zoo.get_model("ppca")  # its noise sd is a scalar site
    potential = FlatPotential(model.target(model.simulate(20, seed=0).data, "posterior"))
    flat = torch.arange(3 * potential.dim, dtype=_F64).reshape(3, potential.dim)
    one, batch = potential.unflatten(flat[1]), potential.unflatten(flat)
    assert {s: v.shape for s, v in one.items()} == potential.shapes
    assert {s: v.shape[1:] for s, v in batch.items()} == potential.shapes
    assert one["noise"].shape == () and batch["noise"].shape == (3,)
    for s in one:
        torch.testing.assert_close(batch[s][1], one[s], rtol=0, atol=0)
    assert torch.cat([v.reshape(-1) for v in one.values()]).tolist() == flat[1].tolist()


def test_a_compiled_chees_build_says_it_ran_compiled_and_nuts_refuses_compilation(tmp_path):
    built = run_saved_chains(_GaussianModel(), torch.zeros(1, 1), "posterior", _POSTERIOR.mean,
                             _POSTERIOR.covariance_matrix, directory=tmp_path / "chees", num_chains=8,
                             draws_per_chain=10, num_warmup=20, seed=0, sampler="chees", compile=True)
    assert built.eager_because == () and torch.isfinite(built.draws["theta"]).all()
    with pytest.raises(ValueError, match="compile applies to the chees sampler's batched potential, not to 'nuts'"):
        run_saved_chains(_GaussianModel(), torch.zeros(1, 1), "posterior", _POSTERIOR.mean,
                         _POSTERIOR.covariance_matrix, directory=tmp_path / "nuts", num_chains=2, draws_per_chain=10,
                         num_warmup=10, seed=0, sampler="nuts", compile=True)
