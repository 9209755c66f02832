"""Reports rebuilt from the store alone (``results.csv``, ``report.md``, ``plots/``):
:mod:`.measures` computes what the report says, :mod:`.plots` draws error against cost, and
:mod:`.document` writes the files."""

from inference_comparisons.report.document import report_from_store, write_report
from inference_comparisons.report.measures import EPSILONS, SUMMARY_COLUMNS, measured_method_table, summary
from inference_comparisons.report.plots import write_plots

__all__ = ["EPSILONS", "SUMMARY_COLUMNS", "measured_method_table", "report_from_store", "summary", "write_plots",
           "write_report"]
