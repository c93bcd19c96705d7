"""Documents for people: per-patient reports (one self-contained HTML page per patient, an index,
PDFs on request) and model cards.

``write_reports`` builds the reports from a model and patient rows (scored on
the fly, or with the predictions and contributions of a ``clinical-mtl score
--explain`` file). :mod:`~clinical_mtl.reporting.content` decides what a page
says, :mod:`~clinical_mtl.reporting.contributions` which contributions it shows
and how they read, :mod:`~clinical_mtl.reporting.waterfall` lays out its charts, the
templates draw them, :mod:`~clinical_mtl.reporting.browser` prints PDFs.
:mod:`~clinical_mtl.reporting.model_card` gathers and renders model cards.
Every template is in ``templates/`` and drawn by one environment
(:mod:`~clinical_mtl.reporting.rendering`), which also holds the default
statement of intended use that cards and pages share.
"""

from .build import write_reports
from .content import build_patient_reports
from .model_card import ModelCard, build_model_card
from .rendering import DEFAULT_INTENDED_USE, DEFAULT_LIMITS

__all__ = ["DEFAULT_INTENDED_USE", "DEFAULT_LIMITS", "ModelCard", "build_model_card", "build_patient_reports",
           "write_reports"]
