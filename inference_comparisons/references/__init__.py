"""Gold-standard references where no exact answer exists, one job per module:

- :mod:`.build`: the build (``python -m inference_comparisons reference MODEL``), writing
  to ``zoo/references``;
- :mod:`.modes`: the mode search (:mod:`inference_comparisons.estimators.modes`) run once
  before any chain, and saved;
- :mod:`.chains`: long NUTS chains saved in resumable segments;
- :mod:`.evidence`: the log evidence by Student-t importance sampling;
- :mod:`.amortised`: per-datapoint references of targets with an amortised guide;
- :mod:`.gates`: the gates a reference must pass, and the refusal;
- :mod:`.posteriordb`: posteriordb's Stan reference posteriors imported as a second source.

Builders stand on :mod:`inference_comparisons.estimators`, never on the methods they judge.
"""

from inference_comparisons.references.amortised import build_amortised_reference
from inference_comparisons.references.build import build_reference, write_reference
from inference_comparisons.references.gates import GATES, GoldStandardError

__all__ = ["GATES", "GoldStandardError", "build_amortised_reference", "build_reference", "write_reference"]
