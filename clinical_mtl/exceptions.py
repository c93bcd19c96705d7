"""Exceptions raised by clinical_mtl.

Each exception also subclasses the built-in or scikit-learn exception that
callers would catch without knowing this package, so ``except ValueError``
keeps working.
"""

class ClinicalMTLError(Exception):
    """Base class of every error raised by clinical_mtl."""


class InputDataError(ClinicalMTLError, ValueError):
    """A feature or label table does not have the form or values expected.

    The message names the column (and where useful the row) at fault and what
    was expected instead.
    """


class TaskSpecificationError(ClinicalMTLError, ValueError):
    """An outcome cannot be learned as specified (no labels, one class, ...)."""


class TrainingDivergedError(ClinicalMTLError, FloatingPointError):
    """A training loss became NaN or infinite before reaching the optimiser."""

