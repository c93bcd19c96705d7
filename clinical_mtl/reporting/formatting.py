"""How numbers and values read on a patient report."""

from __future__ import annotations

import math


def number(value: float) -> str:
    """A measurement with as many digits as a clinician reads: 14.5, 0.83, 1,230."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return _trimmed(f"{value:.1f}")
    if size >= 1:
        return _trimmed(f"{value:.2f}")
    return f"{value:.3g}"


def _trimmed(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def probability(value: float) -> str:
    """A probability as a decimal and a percentage: ``0.72 (72%)``."""
    return f"{value:.2f} ({value:.0%})"


def signed_change(value: float, digits: int = 2) -> str:
    """A contribution with its sign; changes that round to zero say so."""
    value = float(value)  # formatting a numpy scalar is ~50x slower
    if abs(value) < 0.5 * 10 ** -digits:
        return f"<{10 ** -digits:.{digits}f}"
    return f"{value:+.{digits}f}"


def with_unit(text: str, unit: str | None) -> str:
    """``text`` followed by its unit, when it has a meaningful one."""
    return f"{text} {unit}" if unit and unit != "none" else text


def in_sentence(title: str) -> str:
    """A title inside a sentence: ``Cirrhosis (stage 4)`` becomes ``cirrhosis (stage 4)``; ``AST`` stays."""
    first = title.split(" ", 1)[0]
    return title if first.isupper() or not first[:1].isupper() else title[:1].lower() + title[1:]


def ordinal(value: int) -> str:
    """1st, 2nd, 3rd, 11th, 42nd."""
    suffix = "th" if 10 <= value % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return f"{value}{suffix}"
