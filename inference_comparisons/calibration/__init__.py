"""Simulation-based calibration (Talts et al. 2018): over datasets drawn from the model, are
a method's posteriors calibrated? ``ranks`` turns a result into ranks of the truth, ``ecdf``
tests their uniformity with simultaneous bands, ``run`` calibrates one method on one target."""

from inference_comparisons.estimators.ecdf import EcdfBand, ecdf_band, uniformity_pvalue
from inference_comparisons.calibration.ranks import CalibrationError, calibration_quantities, independent_draws, ranks_of
from inference_comparisons.calibration.run import (DEFAULT_NUM_DATAPOINTS, DEFAULT_NUM_DRAWS, Calibration, calibrate,
                                                   simulation_seeds)

__all__ = ["DEFAULT_NUM_DATAPOINTS", "DEFAULT_NUM_DRAWS", "Calibration", "CalibrationError", "EcdfBand",
           "calibrate", "calibration_quantities", "ecdf_band", "independent_draws", "ranks_of", "simulation_seeds",
           "uniformity_pvalue"]
