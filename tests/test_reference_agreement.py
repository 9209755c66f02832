"""A rebuilt reference is compared with the stored one before it replaces it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

import zoo
from inference_comparisons.references import GoldStandardError
from inference_comparisons.references.agreement import (AGREEMENT_Z, checked_against_the_stored_build, compare_builds,
                                                         with_previous_build)
from inference_comparisons.sweep import load_data
from zoo.base import Moments, Reference

_F64 = torch.float64


def _reference(mean: float, sd: float = 1.0, se: float = 0.01, log_evidence: float = -10.0,
               log_evidence_se: float = 0.002) -> Reference:
    moments = {"loc": Moments(torch.tensor([mean, 2.0], dtype=_F64), torch.tensor([sd, 1.0], dtype=_F64),
                              torch.tensor([se, se], dtype=_F64))}
    return Reference(log_evidence, log_evidence_se, False, moments, {},
                     {"method": "NUTS", "command": "c", "created": "2026-01-01",
                      "diagnostics": {"ess_min": 12000.0, "rhat_max": 1.002, "other": 1}})


def test_builds_within_their_standard_errors_agree_and_the_old_one_is_recorded():
    old, new = _reference(0.0), _reference(0.02, log_evidence=-10.004)
    agreement = compare_builds(new, old)
    assert agreement["mean_z_max"] == round(0.02 / math.hypot(0.01, 0.01), 4)
    assert agreement["log_evidence_z"] == round(0.004 / math.hypot(0.002, 0.002), 4)
    assert agreement["sd_z_max"] == 0 and agreement["agree"] and agreement["within_z"] == AGREEMENT_Z
    recorded = with_previous_build(new, old, agreement).provenance["previous_build"]
    assert recorded["method"] == "NUTS" and recorded["log_evidence"] == -10.0
    assert recorded["diagnostics"] == {"ess_min": 12000.0, "rhat_max": 1.002} and recorded["agreement"] == agreement


def test_a_mean_an_sd_or_an_evidence_beyond_four_standard_errors_disagrees():
    old = _reference(0.0)
    shifted_mean = compare_builds(_reference(4.1 * math.hypot(0.01, 0.01)), old)
    assert not shifted_mean["agree"] and shifted_mean["mean_z_max"] > AGREEMENT_Z
    # An sd's standard error is about se / sqrt(2): 0.05 apart is 0.05 / 0.01 = 5 of them.
    wider = compare_builds(_reference(0.0, sd=1.05), old)
    assert not wider["agree"] and wider["sd_z_max"] == 5.0
    evidence = compare_builds(_reference(0.0, log_evidence=-10.02), old)
    assert not evidence["agree"] and evidence["log_evidence_z"] > AGREEMENT_Z


def test_the_reference_command_stores_an_agreeing_rebuild_and_refuses_a_disagreeing_one():
    model = zoo.get_model("gmm")
    data = model.validate(load_data(model, "simulated"))
    stored = model.reference(data, "posterior", source="zoo")
    same = checked_against_the_stored_build(model, data, "posterior", stored, None)
    assert same.provenance["previous_build"]["agreement"]["agree"]
    shifted = replace(stored, moments={name: m._replace(mean=m.mean + 5 * m.se * math.sqrt(2))
                                       for name, m in stored.moments.items()})
    with pytest.raises(GoldStandardError, match="disagrees with the stored one .* --accept-disagreement"):
        checked_against_the_stored_build(model, data, "posterior", shifted, None)
    accepted = checked_against_the_stored_build(model, data, "posterior", shifted, "a third sampler sides with it")
    assert accepted.provenance["previous_build"]["agreement"]["accepted_because"] == "a third sampler sides with it"
