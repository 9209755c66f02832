"""ArviZ diagnostics for every method: :mod:`.inference_data` builds each result's
``InferenceData`` (and saves and loads it as netCDF); :mod:`.diagnose` computes the table's
diagnostic columns and draws a cell's summary plots.

ArviZ 1.x replaces ``InferenceData`` with ``xarray.DataTree``; the building is kept in
:mod:`.inference_data` alone, so that move is one module's work.
"""

from inference_comparisons.diagnostics.diagnose import diagnose, diagnostics_columns
from inference_comparisons.diagnostics.inference_data import (DEFAULT_MAX_DRAWS, DEFAULT_NUM_PRIOR_DRAWS,
                                                              load_inference_data, save_inference_data,
                                                              to_inference_data)

__all__ = ["DEFAULT_MAX_DRAWS", "DEFAULT_NUM_PRIOR_DRAWS", "diagnose", "diagnostics_columns", "load_inference_data",
           "save_inference_data", "to_inference_data"]
