"""Cohorts shipped with clinical_mtl: the real PBC cohort and a synthetic generator."""

from ._pbc import PBC_CSV, load_pbc
from ._synthetic import SyntheticTruth, make_synthetic_cohort, synthetic_schema

__all__ = ["PBC_CSV", "SyntheticTruth", "load_pbc", "make_synthetic_cohort", "synthetic_schema"]
