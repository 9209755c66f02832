"""Stored references are found again: by the data they were built on, on any CPU."""

from __future__ import annotations

import json

import pytest
import torch

import zoo
from zoo import references
from zoo.references import data_fingerprint
from inference_comparisons.sweep import load_data

STORED_FILES = sorted(references.DIRECTORY.glob("*.json"))


@pytest.mark.parametrize("path", STORED_FILES, ids=lambda path: path.name)
def test_every_stored_reference_is_found_by_the_data_it_was_built_on(path):
    """The slow tests run on the stored references that a lookup finds; a file that no
    lookup finds would silently drop out of them, so each must be reached by its model's
    default data (the sweep's and the ``reference`` command's) or one of its datasets."""
    payload = json.loads(path.read_text())
    name, target = payload["identity"]["model"], payload["identity"]["target"]
    reached = []
    for dataset in ("simulated", *zoo.model_class(name).info.datasets):
        model = zoo.get_model(name).for_dataset(dataset)  # a posteriordb dataset brings its priors
        try:
            data = model.validate(load_data(model, dataset, payload["provenance"].get("num_datapoints", 200)))
        except ValueError:  # a dataset of another width than the default model's
            continue
        found = references.find(model, target, data, source=references.source_of(payload)) == path
        assert not found or payload["identity"]["key"] == model.reference_key(target)
        reached.append(found)
    assert any(reached), f"{path.name}: no dataset of {name} fingerprints to it"


def test_fingerprint_ignores_last_bit_differences_and_sees_real_ones():
    """BLAS kernels differ between CPUs in their last bits; the fingerprint must not. Every
    value is moved by up to 8 ulps of its column's largest magnitude (more than a matmul's
    reordering: 3.5e-16 of it for the VAE's decoder), and separately one value by one part
    in 10^6 of it, which must change the fingerprint."""
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(500, 3, generator=generator, dtype=torch.float64) * torch.tensor([1e-3, 1.0, 1e4])
    ulps = torch.randint(-8, 9, data.shape, generator=generator).to(torch.float64)
    jittered = data + ulps * torch.finfo(torch.float64).eps * data.abs().amax(0)
    assert not torch.equal(jittered, data)
    assert data_fingerprint(jittered) == data_fingerprint(data)
    changed = data.clone()
    changed[17, 0] += 1e-6 * data[:, 0].abs().max()
    assert data_fingerprint(changed) != data_fingerprint(data)
    assert data_fingerprint(data[:-1]) != data_fingerprint(data)
    assert data_fingerprint(data.reshape(3, 500).T) != data_fingerprint(data)


def test_fingerprint_keeps_integer_data_exact():
    """The grid is a power of two, no coarser than 1 while a column's values stay below
    2^24 (zoo.references.FINGERPRINT_BITS), so integer data (counts, pixel intensities, the
    Nile's flows) never round together."""
    counts = torch.arange(2000, dtype=torch.float64)
    neighbours = counts.clone()
    neighbours[1000] += 1
    assert data_fingerprint(neighbours) != data_fingerprint(counts)


def test_the_slow_checks_cover_every_stored_gold_standard():
    """test_convergence picks the stored references by lookup (a NUTS-built one is
    recomputed quickly, the VAE's per-datapoint one is checked against quadrature in
    test_vae); a file its lookup missed would drop out of the slow checks silently."""
    from test_convergence import STORED

    built_by_nuts = set()
    for path in STORED_FILES:
        identity = json.loads(path.read_text())["identity"]
        model = zoo.get_model(identity["model"])
        if not model.target(model.simulate(5, seed=0).data, identity["target"]).has_amortised_guide:
            built_by_nuts.add((identity["model"], identity["target"]))
    assert built_by_nuts and set(STORED) == built_by_nuts
