"""Typed pipeline configurations: what a ``kind: train``, ``score`` or ``report`` file may say.

:func:`load_pipeline` reads a pipeline file into a frozen :class:`TrainConfig`,
:class:`ScoreConfig` or :class:`ReportConfig`; :func:`parse_pipeline` does the
same for a mapping, which is how the command line builds the same objects
from its options. Every key is checked, at every level: an unknown key, a
missing required one or a value of the wrong type is a
:class:`~clinical_mtl.exceptions.PipelineConfigError` naming the file and the
dotted path of the key, with a suggestion for a misspelt one::

    pipelines/pbc_train.yaml: unknown key 'outputs.modle_card' (did you mean 'model_card'?)

Relative paths are read from the file's folder (from the working directory
for the command line, and for a default such as :data:`DEFAULT_REPORT_OUTPUT`)
and the configurations carry them resolved; MLflow model URIs (``models:/``,
``runs:/``, ``<scheme>://``) are kept as written.
The defaults are defined here once, as the named constants below or as the
dataclass defaults, and the command line uses the same.

>>> config = parse_pipeline({"kind": "score", "model": "models:/pbc_mtl@champion", "input": "/data/in.csv",
...                          "output": "/data/out.parquet"}, source="example", folder=Path("/"))
>>> config.chunk_size, config.top_k, config.engine
(65536, 0, 'local')
>>> parse_pipeline({"kind": "score", "modle": "m"}, source="example", folder=Path("/"))
Traceback (most recent call last):
...
clinical_mtl.exceptions.PipelineConfigError: example: unknown key 'modle' (did you mean 'model'?)
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from numbers import Real
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

import yaml

from .data.run_summary import LOCAL, SPARK
from .exceptions import PipelineConfigError
from .model.conformal import DEFAULT_COVERAGE
from .reporting import DEFAULT_INTENDED_USE, DEFAULT_LIMITS
from .reporting.content import DEFAULT_REPORT_TOP_K
from .scoring import DEFAULT_CHUNK_SIZE

__all__ = [
    "DEFAULT_CHUNK_SIZE", "DEFAULT_COVERAGE", "DEFAULT_ENGINE", "DEFAULT_EXPLAIN_TOP_K", "DEFAULT_REPORT_OUTPUT",
    "DEFAULT_REPORT_TOP_K", "ENGINES",
    "DataConfig", "ModelCardConfig", "OutputsConfig", "PipelineConfig", "ReportConfig", "ScoreConfig", "SplitConfig",
    "SubgroupBand", "TrackingConfig", "TrainConfig", "load_pipeline", "parse_pipeline",
]

ENGINES = (LOCAL, SPARK)
DEFAULT_ENGINE = LOCAL
"""The scoring engine when none is named."""
DEFAULT_EXPLAIN_TOP_K = 3
"""Contributions per outcome of ``clinical-mtl score --explain`` (a score pipeline's ``top_k`` is 0: none)."""
DEFAULT_REPORT_OUTPUT = Path("reports/patients")
"""The report folder when none is named: relative to the working directory, for a file as for the command line."""
COMMAND_LINE = "the command line"
"""The source named in the errors of configurations built from command-line options."""


def _at_least(low: int) -> Callable[[Any], str | None]:
    return lambda value: None if value >= low else f"at least {low}"


def _open_unit_interval(value: Real) -> str | None:
    return None if 0 < value < 1 else "between 0 and 1 (both excluded)"


def _model_parameters() -> set[str]:
    """The ``MultiTaskMLP`` parameters a pipeline may set (``tasks`` comes from the schema)."""
    from .model.estimator import MultiTaskMLP

    return set(MultiTaskMLP().get_params()) - {"tasks"}


@dataclass(frozen=True)
class DataConfig:
    """The training data: ``dataset: pbc``, ``dataset: synthetic`` or ``path: <CSV or Parquet file>``.

    ``n_patients`` and ``random_state`` describe the synthetic cohort.
    """

    dataset: Literal["pbc", "synthetic"] | None = None
    path: Path | None = None
    n_patients: int = field(default=1000, metadata={"check": _at_least(1)})
    random_state: int | None = 0

    def _problems(self) -> Iterator[tuple[str, str]]:
        if (self.dataset is None) == (self.path is None):
            yield "", "must name either 'dataset' (pbc or synthetic) or 'path' (a CSV or Parquet file)"


@dataclass(frozen=True)
class SplitConfig:
    """The held-out split: ``train_test_split``'s ``test_size`` and ``random_state``, stratified by an outcome."""

    test_size: float = 0.25
    random_state: int | None = 0
    stratify: str | None = None


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of a training pipeline (there is none without a ``tracking`` section)."""

    enabled: bool = True
    experiment: str = "clinical_mtl"
    run_name: str | None = None  # None: "<cohort> · MultiTaskMLP(<outcomes>)"
    registered_model_name: str | None = None
    alias: str | None = None


@dataclass(frozen=True)
class OutputsConfig:
    """The files a training pipeline writes; None writes none."""

    model_dir: Path | None = None
    metrics: Path | None = None
    patients: Path | None = None
    model_card: Path | None = None
    training_ids: Path | None = None


@dataclass(frozen=True)
class SubgroupBand:
    """A numeric column cut into bands (see :func:`clinical_mtl.evaluation.band`)."""

    column: str
    cuts: tuple[float, ...]


@dataclass(frozen=True)
class ModelCardConfig:
    """The model card's texts, subgroups and evaluation (see :func:`clinical_mtl.reporting.build_model_card`).

    ``subgroups`` maps a subgroup's name to a column, or to a
    :class:`SubgroupBand` of a numeric one.
    """

    title: str = "Model card"
    intended_use: str = DEFAULT_INTENDED_USE
    limitations: tuple[str, ...] = ()
    subgroups: dict[str, Union[str, SubgroupBand]] = field(default_factory=dict)
    single_task_comparison: bool = True
    n_bootstrap: int = field(default=200, metadata={"check": _at_least(0)})


@dataclass(frozen=True)
class TrainConfig:
    """A ``kind: train`` pipeline (see :func:`clinical_mtl.pipelines.run_train`).

    ``model`` holds ``MultiTaskMLP`` parameters, checked by name only (the
    estimator checks their values when it fits).
    """

    kind: ClassVar[str] = "train"
    schema: Path
    data: DataConfig
    name: str | None = None
    split: SplitConfig = field(default_factory=SplitConfig)
    model: dict[str, Any] = field(default_factory=dict, metadata={
        "keys": _model_parameters, "refused": {"tasks": "the outcomes come from the schema"}})
    tracking: TrackingConfig | None = None
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    model_card: ModelCardConfig = field(default_factory=ModelCardConfig)


@dataclass(frozen=True)
class ScoreConfig:
    """A ``kind: score`` pipeline, or ``clinical-mtl score`` (see :func:`clinical_mtl.pipelines.run_score`)."""

    kind: ClassVar[str] = "score"
    model: str = field(metadata={"reference": True})
    input: Path
    output: Path
    name: str | None = None
    rejects: Path | None = None
    top_k: int = field(default=0, metadata={"check": _at_least(0)})
    chunk_size: int = field(default=DEFAULT_CHUNK_SIZE, metadata={"check": _at_least(1)})
    engine: Literal["local", "spark"] = DEFAULT_ENGINE
    spark_master: str | None = None


@dataclass(frozen=True)
class ReportConfig:
    """A ``kind: report`` pipeline, or ``clinical-mtl report`` (see :func:`clinical_mtl.pipelines.run_report`).

    ``output`` defaults to :data:`DEFAULT_REPORT_OUTPUT`, read from the
    working directory (``parse_pipeline`` resolves it).
    """

    kind: ClassVar[str] = "report"
    model: str = field(metadata={"reference": True})
    input: Path
    name: str | None = None
    scores: Path | None = None
    training_ids: Path | None = None
    output: Path = DEFAULT_REPORT_OUTPUT
    top_k: int = field(default=DEFAULT_REPORT_TOP_K, metadata={"check": _at_least(1)})
    coverage: float = field(default=DEFAULT_COVERAGE, metadata={"check": _open_unit_interval})
    pdf: bool = False
    intended_use: str = DEFAULT_INTENDED_USE
    limits: str = DEFAULT_LIMITS


PipelineConfig = Union[TrainConfig, ScoreConfig, ReportConfig]
_KINDS = {cls.kind: cls for cls in (TrainConfig, ScoreConfig, ReportConfig)}


def load_pipeline(path: str | Path) -> PipelineConfig:
    """Read a pipeline file into its typed configuration.

    Parameters
    ----------
    path : str or Path
        A YAML file with ``kind: train``, ``score`` or ``report``; its relative
        paths are read from its folder.

    Returns
    -------
    TrainConfig, ScoreConfig or ReportConfig

    Raises
    ------
    PipelineConfigError
        If the file cannot be read or parsed, or has an unknown or missing
        key or a value of the wrong type (naming the key's dotted path).
    """
    path = Path(path)
    try:
        mapping = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PipelineConfigError(f"Cannot read the pipeline file {path}: {error}") from error
    return parse_pipeline(mapping, source=str(path), folder=path.parent)


def parse_pipeline(mapping: object, *, source: str = COMMAND_LINE, folder: Path | None = None) -> PipelineConfig:
    """The typed configuration of a pipeline mapping (a pipeline file's content, or command-line options).

    Parameters
    ----------
    mapping : mapping
        With ``kind`` (``train``, ``score`` or ``report``) and that kind's keys.
    source : str, default="the command line"
        Where the mapping comes from, named in every error (the file's path).
    folder : Path, default=None
        The folder relative paths are read from (the file's folder); None: the
        working directory.

    Returns
    -------
    TrainConfig, ScoreConfig or ReportConfig

    Raises
    ------
    PipelineConfigError
        As :func:`load_pipeline`.
    """
    kind = mapping.get("kind") if isinstance(mapping, Mapping) else None
    if kind not in _KINDS:
        raise PipelineConfigError(f"{source}: 'kind' must be 'train', 'score' or 'report', got {kind!r}.")
    reader = _Reader(source, Path.cwd() if folder is None else Path(folder))
    return reader.build(_KINDS[kind], {key: value for key, value in mapping.items() if key != "kind"}, "")


# Our own reader rather than pydantic or dacite: a few dozen lines give the dotted key path with a
# did-you-mean, paths resolved against the pipeline file's folder and messages that never echo a value
# beyond the few allowed words, without another core dependency.
class _Reader:
    """Builds the configuration dataclasses from a mapping, naming ``source`` and the key in its errors."""

    def __init__(self, source: str, folder: Path) -> None:
        self.source, self.folder = source, folder

    def error(self, where: str, message: str) -> PipelineConfigError:
        return PipelineConfigError(f"{self.source}: {f'{where!r} ' if where else ''}{message}")

    def build(self, cls: type, mapping: object, where: str):
        """An instance of the dataclass ``cls`` from ``mapping``, every key and value checked."""
        if not isinstance(mapping, Mapping):
            raise self.error(where, f"must be a mapping, got {_kind(mapping)}.")
        known = {f.name: f for f in fields(cls)}
        self.check_keys(mapping, known, where)
        hints = typing.get_type_hints(cls)
        values = {}
        for name, spec in known.items():
            key = _join(where, name)
            if name in mapping:
                values[name] = self.value(mapping[name], hints[name], key, spec.metadata)
            elif isinstance(spec.default, Path):  # a default path is read from the working directory
                values[name] = spec.default.resolve()
            elif spec.default is MISSING and spec.default_factory is MISSING:
                needs = f"a {cls.kind} pipeline" if hasattr(cls, "kind") else repr(where)
                raise self.error("", f"missing key {key!r} ({needs} needs it).")
        instance = cls(**values)
        for key, message in getattr(instance, "_problems", lambda: ())():
            raise self.error(_join(where, key) or where, f"{message}.")
        return instance

    def check_keys(self, mapping: Mapping, allowed, where: str) -> None:
        """Refuse the first key of ``mapping`` that is not ``allowed``, suggesting the closest allowed one."""
        for key in mapping:
            if key in allowed:
                continue
            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(sorted(allowed))}"
            raise self.error("", f"unknown key {_join(where, str(key))!r} ({hint})")

    def value(self, value: object, hint: object, where: str, metadata: Mapping = types.MappingProxyType({})):
        """``value`` checked (and converted: paths resolved, lists as tuples) as ``hint`` says."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            arms = [arm for arm in args if arm is not type(None)]
            hint = next((arm for arm in arms if _fits(value, arm)), None)
            if hint is None:
                wanted = " or ".join(_describe(arm) for arm in arms)
                raise self.error(where, f"must be {wanted}, got {_kind(value, arms)}.")
            return self.value(value, hint, where, metadata)
        if not _fits(value, hint):
            raise self.error(where, f"must be {_describe(hint)}, got {_kind(value, [hint])}.")
        if is_dataclass(hint):
            return self.build(hint, value, where)
        if origin is tuple:
            return tuple(self.value(item, args[0], f"{where}[{i}]") for i, item in enumerate(value))
        if origin is dict:
            if "keys" in metadata:
                refused = set(metadata.get("refused", {})) & set(value)
                if refused:
                    name = min(refused)
                    raise self.error("", f"key {_join(where, name)!r} cannot be set: {metadata['refused'][name]}.")
                self.check_keys(value, metadata["keys"](), where)
            return {str(key): self.value(item, args[1], _join(where, str(key))) for key, item in value.items()}
        if hint is Path:
            return (self.folder / value).resolve()
        if metadata.get("reference") and not _is_uri(value):
            return str((self.folder / value).resolve())
        problem = metadata["check"](value) if "check" in metadata else None
        if problem:
            raise self.error(where, f"must be {problem}, got {value!r}.")
        return value


def _fits(value: object, hint: object) -> bool:
    """Whether ``value`` has the form ``hint`` asks for (a YAML number for a float, text for a path, ...)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return any(value == option and type(value) is type(option) for option in typing.get_args(hint))
    if is_dataclass(hint) or origin is dict:
        return isinstance(value, Mapping)
    if origin is tuple:
        return isinstance(value, (list, tuple))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, Real) and not isinstance(value, bool)
    if hint is Path:
        return isinstance(value, Path) or isinstance(value, str) and value.strip() != ""
    return isinstance(value, hint)


def _describe(hint: object) -> str:
    """What ``hint`` asks for, in words."""
    if is_dataclass(hint):
        return "a mapping"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(option) for option in typing.get_args(hint))
    words = {str: "text", int: "a whole number", float: "a number", bool: "true or false", Path: "a path (text)",
             dict: "a mapping", tuple: "a list"}
    return words.get(typing.get_origin(hint) or hint, str(hint))


def _kind(value: object, wanted: list = ()) -> str:
    """The YAML type of ``value``, in words; the value itself only where one of a few words was ``wanted``."""
    if isinstance(value, str) and any(typing.get_origin(hint) is Literal for hint in wanted):
        return repr(value)
    if value is None:
        return "nothing (null)"
    if value == "":
        return "empty text"
    for kind, word in ((bool, "true/false"), (int, "a whole number"), (Real, "a number"), (str, "text"),
                       (Mapping, "a mapping"), (list, "a list")):
        if isinstance(value, kind):
            return word
    return type(value).__name__


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where and key else where or key


def _is_uri(reference: str) -> bool:
    """Whether a model reference is an MLflow URI (kept as written) rather than a folder path."""
    return "://" in reference or reference.startswith(("models:/", "runs:/"))
