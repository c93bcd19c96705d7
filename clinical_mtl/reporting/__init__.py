"""Per-patient reports: one self-contained HTML page per patient, an index, PDFs on request.

``write_reports`` builds them from a model and patient rows (scored on the
fly, or with the predictions and contributions of a ``clinical-mtl score
--explain`` file). :mod:`~clinical_mtl.reporting.content` decides what a page
says, :mod:`~clinical_mtl.reporting.waterfall` lays out its charts, the
templates draw them, :mod:`~clinical_mtl.reporting.browser` prints PDFs.
"""

from .build import ReportSummary, write_reports
from .content import DEFAULT_INTENDED_USE, DEFAULT_LIMITS, build_patient_reports

__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LIMITS", "ReportSummary", "build_patient_reports", "write_reports"]
