"""Cohort schemas: what a patient table must look like, and the check that splits it.

A schema (``data_schemas/<cohort>.yaml``) names the id column, every feature
(type, unit, allowed range or categories, whether it may be missing, a
description) and every outcome (task kind, classes). It drives training (the
outcome kinds and feature columns), is stored with the model, and validates
tables before scoring: :meth:`CohortSchema.validate` returns the valid rows,
typed for the model, and the rejected rows, each with every rule it broke
(row, column, value and rule).

Values are first read by type (numbers, booleans, category text) row by row,
so that one malformed cell rejects its row rather than the file; nullability,
ranges, categories and id uniqueness are then checked with pandera.

Example of a schema file::

    cohort: pbc
    version: 1
    id_column: id
    features:
      bili: {type: numeric, unit: mg/dL, min: 0.1, max: 50, nullable: false,
             description: serum bilirubin}
      sex: {type: categorical, categories: [f, m], nullable: false}
      ascites: {type: boolean, nullable: true}
    outcomes:
      cirrhosis: {kind: binary, classes: [0, 1]}
      log_survival_days: {kind: regression, unit: log(days)}
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pandas.api import types as ptypes

from .exceptions import InputDataError
from .features import BOOLEAN, CATEGORICAL, FEATURE_KINDS, NUMERIC
from .preprocessing import NumericEncoding
from .tasks import REGRESSION, TASK_KINDS

ROW_NUMBER = "row_number"
ID_TYPES = ("integer", "string")
"""How ids are compared: as whole numbers (6, 6.0 and "6" are one id) or as text (numbers
written as their shortest text: 6 and 6.0 read "6"; text kept as given, without surrounding spaces)."""
_TRUE_TEXT = {"true", "1", "1.0"}
_FALSE_TEXT = {"false", "0", "0.0"}
DISPLAY_TRANSFORMS = {"exp": np.exp}
"""How a regression outcome's value is shown to people: ``exp`` for an outcome modelled on a log scale."""


class SchemaError(InputDataError):
    """A schema file, or a table as a whole, does not have the expected form."""


@dataclass(frozen=True)
class FeatureSpec:
    """One feature column of a cohort."""

    name: str
    type: str
    unit: str | None = None
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = True
    description: str = ""
    positive: bool = False
    label: str | None = None
    reference_range: tuple[float, float] | None = None

    @property
    def display_name(self) -> str:
        """The ``label`` given in the schema, else the column name."""
        return self.label or self.name

    def describe_rule(self) -> str:
        """The range or categories in words, e.g. ``0.1 <= bili <= 50``."""
        if self.categories is not None:
            return "one of " + ", ".join(self.categories)
        if self.min is None and self.max is None:
            return f"a {'positive' if self.positive else 'finite'} number"
        low = f"{self.min:g} <= " if self.min is not None else ""
        if self.positive and (self.min is None or self.min <= 0):
            low = "0 < "
        high = f" <= {self.max:g}" if self.max is not None else ""
        return f"{low}{self.name}{high}"


@dataclass(frozen=True)
class OutcomeSpec:
    """One outcome of a cohort."""

    name: str
    kind: str
    classes: tuple | None = None
    unit: str | None = None
    description: str = ""
    label: str | None = None
    display_transform: str | None = None
    display_unit: str | None = None

    @property
    def display_name(self) -> str:
        """The ``label`` given in the schema, else the outcome name."""
        return self.label or self.name


@dataclass(frozen=True)
class ValidationResult:
    """A table split by a schema.

    Attributes
    ----------
    valid : DataFrame
        The valid rows: the id column and the features, typed for the model
        (numbers as float64, booleans as pandas "boolean", categories as
        pandas categoricals of text), indexed like the input.
    rejected : DataFrame
        One row per rejected input row: ``row_number``, the id (as given),
        ``n_problems`` and ``reasons`` (every broken rule as ``column 'c'
        value 'v': rule``, in column order, separated by ``; ``).
    """

    valid: pd.DataFrame
    rejected: pd.DataFrame


@dataclass(frozen=True)
class CohortSchema:
    """A cohort's id column, features and outcomes (see the module docstring).

    Examples
    --------
    >>> schema = load_schema(SCHEMAS / "pbc.yaml")
    >>> schema.tasks
    {'cirrhosis': 'binary', 'log_survival_days': 'regression'}
    >>> schema.feature_names[:3]
    ['trt', 'age', 'sex']
    """

    cohort: str
    id_column: str
    features: tuple[FeatureSpec, ...]
    outcomes: tuple[OutcomeSpec, ...] = ()
    version: int = 1
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    id_type: str = "string"

    @property
    def feature_names(self) -> list[str]:
        """Feature columns, in schema order (the model's column order)."""
        return [feature.name for feature in self.features]

    @property
    def tasks(self) -> dict[str, str]:
        """Outcome -> task kind, for ``MultiTaskMLP(tasks=...)``."""
        return {outcome.name: outcome.kind for outcome in self.outcomes}

    @property
    def feature_kinds(self) -> dict[str, str]:
        """Feature -> ``numeric``, ``boolean`` or ``categorical``."""
        return {feature.name: feature.type for feature in self.features}

    def to_dict(self) -> dict:
        """Plain data, as written in a schema file."""
        features = {}
        for feature in self.features:
            entry = {key: value for key, value in asdict(feature).items()
                     if key != "name" and value is not None and not (key == "positive" and not value)}
            for key in ("categories", "reference_range"):
                if entry.get(key) is not None:
                    entry[key] = list(entry[key])
            features[feature.name] = entry
        outcomes = {}
        for outcome in self.outcomes:
            entry = {key: value for key, value in asdict(outcome).items() if key != "name" and value is not None}
            if outcome.classes is not None:
                entry["classes"] = list(outcome.classes)
            outcomes[outcome.name] = entry
        return {
            "cohort": self.cohort, "version": self.version, "description": self.description,
            "id_column": self.id_column, "id_type": self.id_type, "features": features, "outcomes": outcomes,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "schema") -> CohortSchema:
        """Build a schema from plain data, checking every entry.

        Raises
        ------
        SchemaError
            Naming every key that is missing or has a wrong value.
        """
        problems = []
        for key in ("cohort", "id_column", "features"):
            if key not in data:
                problems.append(f"missing key '{key}'")
        for key in ("features", "outcomes"):
            if data.get(key) is not None and not isinstance(data[key], dict):
                problems.append(f"'{key}' must map each name to its entry, got {type(data[key]).__name__}")
        if problems:
            raise SchemaError(f"{source}: " + "; ".join(problems) + ".")
        features = [_feature_spec(name, entry, str(data["id_column"]), problems)
                    for name, entry in (data.get("features") or {}).items()]
        outcomes = [_outcome_spec(name, entry, problems) for name, entry in (data.get("outcomes") or {}).items()]
        if not data["features"]:
            problems.append("no feature")
        try:
            version = int(data.get("version", 1))
        except (TypeError, ValueError):
            problems.append(f"version must be a whole number, got {data['version']!r}")
        id_type = data.get("id_type", "string")
        if id_type not in ID_TYPES:
            problems.append(f"id_type must be one of {list(ID_TYPES)}, got {id_type!r}")
        if problems:
            raise SchemaError(f"{source}: " + "; ".join(problems) + ".")
        return cls(
            cohort=str(data["cohort"]), id_column=str(data["id_column"]), features=tuple(features),
            outcomes=tuple(outcomes), version=version,
            description=str(data.get("description", "")), id_type=id_type,
        )

    def check_columns(self, columns, source: str) -> None:
        """Raise a ``SchemaError`` naming the required columns ``columns`` lacks."""
        missing = [name for name in [self.id_column, *self.feature_names] if name not in columns]
        if missing:
            raise SchemaError(
                f"{source} lacks the column(s) {missing} required by the '{self.cohort}' schema "
                f"(id column '{self.id_column}' and features {self.feature_names})."
            )

    def validate(self, frame: pd.DataFrame, *, first_row_number: int = 0, source: str = "input",
                 repeated_ids: np.ndarray | None = None, read_problems: np.ndarray | None = None,
                 canonical_ids: tuple[pd.Series, np.ndarray] | None = None) -> ValidationResult:
        """Split a table into valid rows (typed for the model) and rejected rows with reasons.

        Parameters
        ----------
        frame : DataFrame
            Holds the id column and every feature column (others are ignored).
        first_row_number : int, default=0
            ``row_number`` of the first row (for chunks of a larger input).
        source : str, default="input"
            Named in the error raised when required columns are missing.
        repeated_ids : array of bool, default=None
            Rows whose id an earlier row outside ``frame`` already has (an
            earlier chunk of the same input): rejected as duplicates, with the
            same reason as a repeat within ``frame``.
        read_problems : array of object, default=None
            Per row, why the reader could not read it (None where it could):
            such rows are rejected with that reason alone.
        canonical_ids : (Series, array of bool), default=None
            :meth:`canonical_ids` of the frame's id column, when the caller
            already has them (computed here otherwise).

        Returns
        -------
        ValidationResult

        Raises
        ------
        SchemaError
            If a required column is missing.
        """
        self.check_columns(frame.columns, source)
        columns = [self.id_column, *self.feature_names]
        # Typed in place of the input's own columns where they already have the right type
        # (the common case): no copy of the table. (A shallow copy of the selection, too: pandas
        # would otherwise warn that typing a column sets values on a copy of a slice.)
        table = (frame[columns] if list(frame.columns) != columns else frame).copy(deep=False)
        if not table.index.equals(pd.RangeIndex(len(frame))):
            table.index = pd.RangeIndex(len(frame))  # positions; the caller's index is restored below
        problems = []
        raw_ids = table[self.id_column]
        ids, bad_ids = canonical_ids if canonical_ids is not None else self.canonical_ids(raw_ids)
        table[self.id_column] = ids.set_axis(table.index)  # (a caller's ids are indexed like its frame)
        rule = f"expected {'a whole number' if self.id_type == 'integer' else 'text or a number'} as the id"
        problems += [(i, self.id_column, raw_ids.iloc[i], rule) for i in np.flatnonzero(bad_ids)]
        for feature in self.features:
            column = table[feature.name]
            values, bad = _PARSERS[feature.type](column, feature)
            if feature.type == BOOLEAN and values is not None:
                values = pd.array(values, dtype="Float64").astype("boolean")
            if values is not None:  # None: the column already has the right type
                table[feature.name] = values
            if bad.any():
                rule = {NUMERIC: "expected a number", BOOLEAN: "expected true/false or 1/0",
                        CATEGORICAL: "expected text"}[feature.type]
                raw = column.to_numpy()
                problems += [(i, feature.name, raw[i], rule) for i in np.flatnonzero(bad)]
        unreadable = {(row, column) for row, column, _, _ in problems}
        problems += [
            problem for problem in self._pandera_problems(table, frame)
            if (problem[0], problem[1]) not in unreadable
        ]
        if repeated_ids is not None and repeated_ids.any():
            duplicate = _rule_text("multiple_fields_uniqueness")
            repeated_within = {row for row, column, _, rule in problems if rule == duplicate}
            ids = frame[self.id_column].to_numpy()
            problems += [(i, self.id_column, ids[i], duplicate) for i in np.flatnonzero(repeated_ids)
                         if i not in repeated_within]
        if read_problems is not None:  # an unread row has no values to judge: its one reason is why
            unread = {int(i) for i in np.flatnonzero(pd.notna(read_problems))}
            problems = [problem for problem in problems if problem[0] not in unread]
            problems += [(i, None, None, read_problems[i]) for i in sorted(unread)]
        order = {name: k for k, name in enumerate(columns)} | {None: -1}  # reasons in column order
        problems.sort(key=lambda problem: (problem[0], order[problem[1]]))
        rows = sorted({problem[0] for problem in problems})
        rejected = _rejection_table(problems, rows, frame, self.id_column, first_row_number)
        if not rows:
            table.index = frame.index
            return ValidationResult(table, rejected)
        keep = np.ones(len(frame), dtype=bool)
        keep[rows] = False
        valid = table[keep]
        valid.index = frame.index[keep]
        return ValidationResult(valid, rejected)

    def canonical_ids(self, ids: pd.Series) -> tuple[pd.Series, np.ndarray]:
        """Ids in the one form that ``id_type`` gives them, and which ones cannot take it.

        With ``id_type: integer`` ids become pandas ``Int64`` (6, 6.0, "6" and
        " 6 " are the id 6; 6.5 and "six" cannot be ids); with ``string`` they
        become text (numbers as their shortest text, so 6 and 6.0 read "6";
        text stripped of surrounding spaces). Missing ids stay missing (and
        ``validate`` rejects them). Comparing ids in this form makes the
        result independent of file types, file order and chunking.

        Parameters
        ----------
        ids : Series

        Returns
        -------
        ids : Series
            Indexed like ``ids``; missing where an id is missing or cannot be one.
        bad : ndarray of bool
            Where a present id cannot take the form.
        """
        present = ids.notna().to_numpy()
        if self.id_type == "integer":
            return _integer_ids(ids, present)
        if ptypes.is_integer_dtype(ids.dtype):
            text = ids.astype("Int64").astype(str).astype(object).where(present, None)
        else:
            text = ids.astype(object).where(present, None).map(_id_text)
        return pd.Series(text.to_numpy(dtype=object), index=ids.index, dtype=object), np.zeros(len(ids), dtype=bool)

    def validator(self):
        """The pandera ``DataFrameSchema`` behind ``validate`` (built once)."""
        return self._pandera

    @cached_property
    def _pandera(self):
        import pandera.pandas as pandera

        columns = {self.id_column: pandera.Column(nullable=False)}
        for feature in self.features:
            checks = []
            rule = f"expected {feature.describe_rule()}"
            if feature.type == CATEGORICAL and feature.categories is not None:
                checks.append(pandera.Check.isin(list(feature.categories), error=rule))
            if feature.type == NUMERIC:
                # Missing values pass (nullability is its own rule); not dropping them first saves a copy.
                # Infinite values never pass, range or not: the model cannot take them.
                bounds = _InRange(feature.min, feature.max, positive=feature.positive)
                checks.append(pandera.Check(bounds, ignore_na=False, error=rule))
            columns[feature.name] = pandera.Column(checks=checks, nullable=feature.nullable)
        return pandera.DataFrameSchema(columns, unique=[self.id_column], report_duplicates="exclude_first")

    def _pandera_problems(self, table: pd.DataFrame, raw: pd.DataFrame) -> list[tuple]:
        import pandera.pandas as pandera

        try:
            self._pandera.validate(table, lazy=True, inplace=True)
            return []
        except pandera.errors.SchemaErrors as errors:
            cases = errors.failure_cases
        problems = []
        for column, check, index in zip(cases["column"], cases["check"], cases["index"]):
            if index is None or pd.isna(index):
                continue
            position = int(index)
            value = raw[column].iloc[position] if column in raw else None
            problems.append((position, column, value, _rule_text(check)))
        return problems


class _InRange:
    """``min <= value <= max``, finite and (if ``positive``) above 0, or missing."""

    def __init__(self, low: float | None, high: float | None, positive: bool = False):
        self.low = -np.inf if low is None else low
        self.high = np.inf if high is None else high
        self.positive = positive

    def __call__(self, values: pd.Series) -> pd.Series:
        array = values.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            inside = np.isfinite(array) & (array >= self.low) & (array <= self.high)
            if self.positive:
                inside &= array > 0
            return pd.Series(np.isnan(array) | inside, index=values.index)


def load_schema(path: str | Path) -> CohortSchema:
    """Read a cohort schema from a YAML file.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    CohortSchema
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise SchemaError(f"Cannot read the schema file {path}: {error}") from error
    if not isinstance(data, dict):
        raise SchemaError(f"{path}: expected a mapping at the top of the file.")
    return CohortSchema.from_dict(data, source=str(path))


def schema_for_model(schema: CohortSchema, model) -> CohortSchema:
    """``schema`` with every numeric feature's range narrowed to what the model can represent.

    A value whose standardised input would exceed ``MAX_ABS_INPUT`` (an albumin
    of 1e300, say) must reject its row with the rule, not stop a scoring run:
    each numeric feature's ``min``/``max`` is intersected with the model's
    representable range (``NumericEncoding.representable_range``). A model stored
    before the asinh transform takes the plain logarithm of its log columns,
    which are then required to be positive; the asinh transform takes any value.
    """
    encodings = {encoding.name: encoding for encoding in model.preprocessor_.encodings_
                 if isinstance(encoding, NumericEncoding)}
    return replace(schema, features=tuple(
        _model_feature(feature, encodings.get(feature.name)) for feature in schema.features
    ))


def _model_feature(feature: FeatureSpec, encoding) -> FeatureSpec:
    if feature.type != NUMERIC or encoding is None:
        return feature
    low, high = encoding.representable_range()
    if low is not None and (feature.min is None or feature.min < low):
        feature = replace(feature, min=low)
    if high is not None and (feature.max is None or feature.max > high):
        feature = replace(feature, max=high)
    return replace(feature, positive=True) if encoding.positive_only else feature


def schema_from_model(model, id_column: str) -> CohortSchema:
    """A permissive schema for a model trained without one: the model's columns and
    kinds, any category allowed, no ranges, every value may be missing."""
    return CohortSchema(
        cohort="model",
        id_column=id_column,
        features=tuple(FeatureSpec(name, kind) for name, kind in model.preprocessor_.feature_kinds_.items()),
        outcomes=tuple(OutcomeSpec(name, kind) for name, kind in model.tasks_.items()),
        description="Derived from the model's training columns (no ranges, any category).",
    )


def _entry_kind(what: str, name: str, entry, key: str, kinds, problems: list[str]):
    """A schema entry's kind (``type`` of a feature, ``kind`` of an outcome) and its other keys,
    or (None, None) after recording what is wrong."""
    if not isinstance(entry, dict):
        problems.append(f"{what} '{name}': expected a mapping of keys ({key}, ...), got {entry!r}")
        return None, None
    entry = dict(entry)
    kind = entry.pop(key, None)
    if kind not in kinds:
        problems.append(f"{what} '{name}': {key} must be one of {list(kinds)}, got {kind!r}")
        return None, None
    return kind, entry


def _feature_spec(name: str, entry, id_column: str, problems: list[str]) -> FeatureSpec | None:
    """The feature of a schema entry, or None after recording every problem in ``problems``."""
    kind, entry = _entry_kind("feature", name, entry, "type", FEATURE_KINDS, problems)
    if kind is None:
        return None
    found = len(problems)
    categories = entry.pop("categories", None)
    if kind == CATEGORICAL and not categories:
        problems.append(f"feature '{name}': a categorical feature needs its categories")
    elif kind == CATEGORICAL and not isinstance(categories, list):
        problems.append(f"feature '{name}': categories must be a list, got {categories!r}")
    elif kind != CATEGORICAL and categories is not None:
        problems.append(f"feature '{name}': only a categorical feature has categories")
    unknown = set(entry) - {"unit", "min", "max", "nullable", "description", "positive", "label", "reference_range"}
    if unknown:
        problems.append(f"feature '{name}': unknown keys {sorted(unknown)}")
        return None
    problems += _bound_problems(name, kind, entry)
    problems += _reference_range_problems(name, kind, entry)
    for flag in ("nullable", "positive"):
        if not isinstance(entry.get(flag, False), bool):
            problems.append(f"feature '{name}': {flag} must be true or false, got {entry[flag]!r}")
    if entry.get("positive") and kind != NUMERIC:
        problems.append(f"feature '{name}': only a numeric feature can be positive")
    if str(name) == id_column:
        problems.append(f"feature '{name}': it is the id column, which is not a feature")
    if len(problems) > found:
        return None
    if entry.get("reference_range") is not None:
        entry["reference_range"] = tuple(float(bound) for bound in entry["reference_range"])
    return FeatureSpec(name, kind, categories=tuple(str(c) for c in categories) if categories else None, **entry)


def _outcome_spec(name: str, entry, problems: list[str]) -> OutcomeSpec | None:
    """The outcome of a schema entry, or None after recording what is wrong in ``problems``."""
    kind, entry = _entry_kind("outcome", name, entry, "kind", TASK_KINDS, problems)
    if kind is None:
        return None
    classes = entry.pop("classes", None)
    if classes is not None and not isinstance(classes, list):
        problems.append(f"outcome '{name}': classes must be a list, got {classes!r}")
        return None
    unknown = set(entry) - {"unit", "description", "label", "display_transform", "display_unit"}
    if unknown:
        problems.append(f"outcome '{name}': unknown keys {sorted(unknown)}")
        return None
    transform = entry.get("display_transform")
    if transform is not None and (kind != REGRESSION or transform not in DISPLAY_TRANSFORMS):
        problems.append(f"outcome '{name}': display_transform must be one of {sorted(DISPLAY_TRANSFORMS)} "
                        f"and only for a regression outcome, got {transform!r} for a {kind} outcome")
        return None
    return OutcomeSpec(name, kind, tuple(classes) if classes else None, **entry)


def _reference_range_problems(name: str, kind: str, entry: dict) -> list[str]:
    """What is wrong with a feature's ``reference_range``: not two increasing numbers, not numeric."""
    bounds = entry.get("reference_range")
    if bounds is None:
        return []
    if kind != NUMERIC:
        return [f"feature '{name}': only a numeric feature has a reference_range"]
    numbers = isinstance(bounds, list) and len(bounds) == 2 and all(
        isinstance(b, (int, float)) and not isinstance(b, bool) and np.isfinite(b) for b in bounds)
    if not numbers or bounds[0] > bounds[1]:
        return [f"feature '{name}': reference_range must be [low, high] with low <= high, got {bounds!r}"]
    return []


def _bound_problems(name: str, kind: str, entry: dict) -> list[str]:
    """What is wrong with a feature's ``min`` and ``max``: not numbers, not numeric, min above max."""
    bounds = {key: entry[key] for key in ("min", "max") if entry.get(key) is not None}
    if not bounds:
        return []
    if kind != NUMERIC:
        return [f"feature '{name}': only a numeric feature has min and max"]
    problems = [
        f"feature '{name}': {key} must be a number, got {value!r}" for key, value in bounds.items()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or np.isnan(value)
    ]
    if not problems and len(bounds) == 2 and bounds["min"] > bounds["max"]:
        problems.append(f"feature '{name}': min {bounds['min']} is above max {bounds['max']}")
    return problems


SCHEMAS = Path(str(resources.files("clinical_mtl") / "data_schemas"))
"""The bundled schemas (``data_schemas/`` at the top of the repository, shipped in the package)."""


def _parse_numeric(column: pd.Series, feature: FeatureSpec) -> tuple[np.ndarray | None, np.ndarray]:
    """Numbers of a column (None if it already holds float64) and where text is not a number."""
    if column.dtype == np.float64:
        return None, np.zeros(len(column), dtype=bool)
    if ptypes.is_numeric_dtype(column.dtype) and not ptypes.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(column), dtype=bool)
    present = column.notna().to_numpy()
    try:
        values = pc.cast(pa.array(column.astype(object).where(present, None), from_pandas=True), pa.float64())
        return values.to_numpy(zero_copy_only=False), np.zeros(len(column), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        text = column.astype(object).where(present, None).map(lambda v: v if isinstance(v, str) else (
            v if isinstance(v, (int, float)) and not isinstance(v, bool) else "not a number"))
        values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
        return values, present & np.isnan(values)


def _parse_boolean(column: pd.Series, feature: FeatureSpec) -> tuple[np.ndarray | None, np.ndarray]:
    """Booleans of a column as 1/0/NaN (None if it already is pandas "boolean")."""
    present = column.notna().to_numpy()
    if column.dtype == "boolean":
        return None, np.zeros(len(column), dtype=bool)
    if ptypes.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(column), dtype=bool)
    if ptypes.is_numeric_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = present & ~np.isin(values, [0.0, 1.0])
        return np.where(bad, np.nan, values), bad
    text = column.astype(object).where(present, None).map(
        lambda v: None if v is None else str(v).strip().lower())
    values = np.full(len(column), np.nan)
    values[text.isin(_TRUE_TEXT).to_numpy()] = 1.0
    values[text.isin(_FALSE_TEXT).to_numpy()] = 0.0
    return values, present & np.isnan(values)


def _parse_categorical(column: pd.Series, feature: FeatureSpec) -> tuple[pd.Categorical | None, np.ndarray]:
    """Text categories of a column (None if it already is a categorical of text)."""
    fine = np.zeros(len(column), dtype=bool)
    if isinstance(column.dtype, pd.CategoricalDtype):
        categories = column.cat.categories
        if all(isinstance(c, str) for c in categories):
            return None, fine
        return column.array.rename_categories([_category_text(c) for c in categories]), fine
    values = column.astype(object).where(column.notna(), None)
    # Numbers given for categories: 1.0 reads "1". (The dtype is object either way: look at the values.)
    if ptypes.infer_dtype(values, skipna=True) not in ("string", "empty"):
        values = values.map(_category_text)
    return pd.Categorical(values.to_numpy()), fine


def _integer_ids(ids: pd.Series, present: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Ids as pandas Int64, and which present ones are not whole numbers."""
    if ptypes.is_integer_dtype(ids.dtype):
        return ids.astype("Int64"), np.zeros(len(ids), dtype=bool)
    try:  # the common cases: integer text (CSV) or integral floats, converted by Arrow at C speed
        array = pa.array(ids.astype(object).where(present, None), from_pandas=True)
        values = pc.cast(pc.utf8_trim_whitespace(array) if pa.types.is_string(array.type) else array, pa.int64())
        return pd.Series(values.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get).array, index=ids.index,
                         dtype="Int64"), np.zeros(len(ids), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    numbers = pd.to_numeric(ids.astype(object).where(present, None).map(
        lambda v: v.strip() if isinstance(v, str) else (None if isinstance(v, bool) else v)), errors="coerce")
    numbers = numbers.to_numpy(dtype=np.float64)
    whole = np.isfinite(numbers) & (np.mod(numbers, 1) == 0) & (np.abs(numbers) < 2.0**63)
    values = pd.array(np.where(whole, numbers, 0).astype(np.int64), dtype="Int64")
    values[~whole] = pd.NA
    return pd.Series(values, index=ids.index), present & ~whole


def _id_text(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool):
        return repr(value.item() if isinstance(value, np.generic) else value)
    return str(value).strip()


def _category_text(value: object) -> object:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_PARSERS = {NUMERIC: _parse_numeric, BOOLEAN: _parse_boolean, CATEGORICAL: _parse_categorical}


def _rule_text(check: str) -> str:
    if check == "not_nullable":
        return "a value is required"
    if check == "multiple_fields_uniqueness":
        return "duplicate id (an earlier row has it)"
    return re.sub(r"\s+", " ", str(check))


def _shown(value: object) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)) or value is pd.NA:
        return "missing"
    return repr(value.item() if isinstance(value, np.generic) else value)


def _rejection_table(problems: list[tuple], rows: list[int], frame: pd.DataFrame, id_column: str,
                     first_row_number: int) -> pd.DataFrame:
    by_row: dict[int, list[str]] = {row: [] for row in rows}
    for position, column, value, rule in problems:
        by_row[position].append(rule if column is None else f"column '{column}' value {_shown(value)}: {rule}")
    ids = frame[id_column].to_numpy() if id_column in frame else np.full(len(frame), None)
    return pd.DataFrame({
        ROW_NUMBER: np.asarray(rows, dtype=np.int64) + first_row_number,
        id_column: ids[rows] if rows else np.array([], dtype=ids.dtype),
        "n_problems": [len(by_row[row]) for row in rows],
        "reasons": ["; ".join(by_row[row]) for row in rows],
    })
