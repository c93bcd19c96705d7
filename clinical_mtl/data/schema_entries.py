"""The entries of a cohort schema: one feature or outcome each, read from YAML and checked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model.features import CATEGORICAL, FEATURE_KINDS, NUMERIC
from ..model.survival import SURVIVAL, label_columns
from ..model.tasks import BINARY, MULTICLASS, REGRESSION, TASK_KINDS

ID_TYPES = ("integer", "string")
"""How ids are compared: as whole numbers (6, 6.0 and "6" are one id) or as text (numbers
written as their shortest text: 6 and 6.0 read "6"; text kept as given, without surrounding spaces)."""


DISPLAY_TRANSFORMS = {"exp": np.exp}
"""How a regression outcome's value is shown to people: ``exp`` for an outcome modelled on a log scale."""


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
    higher_is_worse: bool | None = None

    @property
    def display_name(self) -> str:
        """The ``label`` given in the schema, else the outcome name."""
        return self.label or self.name

    @property
    def worse_when_higher(self) -> bool | None:
        """Whether a higher explained output is clinically worse, as reports colour it.

        The schema's ``higher_is_worse`` where it says; otherwise True for a
        binary outcome (a higher probability of the positive class, the
        condition) and a survival outcome (a higher probability of the
        event), and None, not known, for a regression outcome (a higher value
        can be better or worse) and a multi-class one (whose explained output
        is the probability of whichever class is predicted).
        """
        if self.kind == MULTICLASS:
            return None
        if self.higher_is_worse is not None:
            return self.higher_is_worse
        return True if self.kind in (BINARY, SURVIVAL) else None

    @property
    def label_columns(self) -> tuple[str, ...]:
        """The label-table columns of the outcome: its name, or ``<name>_time`` and ``<name>_event``."""
        return label_columns(self.name) if self.kind == SURVIVAL else (self.name,)


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


def feature_spec(name: str, entry, id_column: str, problems: list[str]) -> FeatureSpec | None:
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


def outcome_spec(name: str, entry, problems: list[str]) -> OutcomeSpec | None:
    """The outcome of a schema entry, or None after recording what is wrong in ``problems``."""
    kind, entry = _entry_kind("outcome", name, entry, "kind", TASK_KINDS, problems)
    if kind is None:
        return None
    classes = entry.pop("classes", None)
    if classes is not None and not isinstance(classes, list):
        problems.append(f"outcome '{name}': classes must be a list, got {classes!r}")
        return None
    unknown = set(entry) - {"unit", "description", "label", "display_transform", "display_unit", "higher_is_worse"}
    if unknown:
        problems.append(f"outcome '{name}': unknown keys {sorted(unknown)}")
        return None
    worse = entry.get("higher_is_worse")
    if worse is not None and (not isinstance(worse, bool) or kind == MULTICLASS):
        problems.append(f"outcome '{name}': higher_is_worse must be true or false and not for a multiclass "
                        f"outcome, got {worse!r} for a {kind} outcome")
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
