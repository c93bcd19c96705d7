"""Cohort schemas: what a patient table must look like, and the check that splits it.

A schema (``data_schemas/<cohort>.yaml``) names the id column, every feature
(type, unit, allowed range or categories, whether it may be missing, a
description) and every outcome (task kind, classes). It drives training (the
outcome kinds and feature columns), is stored with the model, and validates
tables before scoring: :meth:`CohortSchema.validate` returns the valid rows,
typed for the model, and the rejected rows, each with every rule it broke
(row, column, value and rule).

Values are first read by type (numbers, booleans, category text) row by row,
so that one malformed cell rejects its row rather than the file, by the rules
the estimator reads them with (:func:`clinical_mtl.model.features.parse_feature`);
nullability, ranges, categories and id uniqueness are then checked with pandera.

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
      death: {kind: survival, unit: days}   # labelled by death_time and death_event
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

from ..exceptions import SchemaError
from ..model.features import BOOLEAN, CATEGORICAL, NUMERIC, parse_feature
from ..model.preprocessing import NumericEncoding
from .schema_entries import (
    ID_TYPES,
    FeatureSpec,
    OutcomeSpec,
    feature_spec,
    outcome_spec,
)

ROW_NUMBER = "row_number"


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
    {'cirrhosis': 'binary', 'death': 'survival'}
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
        features = [feature_spec(name, entry, str(data["id_column"]), problems)
                    for name, entry in (data.get("features") or {}).items()]
        outcomes = [outcome_spec(name, entry, problems) for name, entry in (data.get("outcomes") or {}).items()]
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
            values, bad = parse_feature(column, feature.type)  # the estimator's reading of values, too
            if not _typed_for_model(column, feature.type):  # (a column already typed is kept: no copy)
                table[feature.name] = (pd.array(values, dtype="Float64").astype("boolean")
                                       if feature.type == BOOLEAN else values)
            if bad.any():
                raw = column.to_numpy()
                problems += [(i, feature.name, raw[i], _UNREADABLE_RULES[feature.type]) for i in np.flatnonzero(bad)]
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


SCHEMAS = Path(str(resources.files("clinical_mtl") / "data_schemas"))
"""The bundled schemas (``data_schemas/`` at the top of the repository, shipped in the package)."""


_UNREADABLE_RULES = {NUMERIC: "expected a number", BOOLEAN: "expected true/false or 1/0",
                     CATEGORICAL: "expected text or a number"}


def _typed_for_model(column: pd.Series, kind: str) -> bool:
    """Whether a column already has the type a valid table gives its kind (``ValidationResult.valid``)."""
    dtype = column.dtype
    if kind == NUMERIC:
        return dtype == np.float64
    if kind == BOOLEAN:
        return dtype == "boolean"
    return isinstance(dtype, pd.CategoricalDtype) and all(isinstance(c, str) for c in dtype.categories)


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
