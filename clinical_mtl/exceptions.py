"""Exceptions raised by clinical_mtl.

Each exception also subclasses the built-in or scikit-learn exception that
callers would catch without knowing this package, so ``except ValueError``
keeps working.
"""


def one_line(error: BaseException) -> str:
    """An error's message on one line: its lines joined by "; " (for a console or an HTTP answer)."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


class ClinicalMTLError(Exception):
    """Base class of every error raised by clinical_mtl."""


class InputDataError(ClinicalMTLError, ValueError):
    """A feature or label table does not have the form or values expected.

    The message names the column (and where useful the row) at fault and what
    was expected instead.
    """


class SchemaError(InputDataError):
    """A cohort schema file, or an input table as a whole, does not have the expected form."""


class InputFileError(InputDataError):
    """An input file or folder is missing, unreadable, empty or not a supported table (CSV, Parquet)."""


class TaskSpecificationError(ClinicalMTLError, ValueError):
    """An outcome cannot be learned as specified (no labels, one class, ...)."""


class TrainingDivergedError(ClinicalMTLError, FloatingPointError):
    """A training loss became NaN or infinite before reaching the optimiser."""



class PipelineConfigError(ClinicalMTLError, ValueError):
    """A pipeline file (or the options standing for one) cannot be read or says something unknown.

    The message names the file, the dotted path of the key at fault (e.g.
    ``outputs.model_card``) and what was expected instead.
    """


class OutputPathError(ClinicalMTLError, ValueError):
    """An output path would overwrite or delete what the user owns, or cannot be written.

    Raised before anything is read, except when writing itself fails.
    """


class ModelLoadError(ClinicalMTLError, ValueError):
    """A model cannot be loaded: missing, unreadable, tampered with, or not found in MLflow.

    The message names the path or URI and what is wrong with it.
    """


class RowAccountingError(ClinicalMTLError, RuntimeError):
    """Rows read and rows written disagree: a bug in clinical_mtl, never the input's fault.

    Raised before any output is committed; the message holds counts only.
    """


class BrowserUnavailableError(ClinicalMTLError, RuntimeError):
    """PDF reports were asked for, but Chromium or Playwright is not installed."""
