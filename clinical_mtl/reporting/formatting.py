"""How numbers and values read on a patient report."""

from __future__ import annotations

import math


def number(value: float) -> str:
    """A measurement with as many digits as a clinician reads: 14.5, 0.83, 1,230.

    The rule (:func:`decimals`): no decimal from 100 up, one from 10, two
    from 1, three significant digits below 1; trailing zeros dropped.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    return _trimmed(f"{value:,.{decimals(value)}f}")


def decimals(value: float) -> int:
    """The decimals :func:`number` gives ``value``."""
    size = abs(float(value))
    if size >= 100:
        return 0
    if size >= 10:
        return 1
    if size >= 1 or size == 0 or not math.isfinite(size):
        return 2
    return 2 - math.floor(math.log10(size))  # three significant digits


def numbers(*values: float) -> list[str]:
    """Values of one quantity (a range, a value and its interval) rounded alike.

    Every value gets the decimals :func:`number` gives the largest of them
    (so "49.8 to 729" reads "50 to 729"), then the trailing zeros that all of
    them share are dropped ("0.10 to 5.00" reads "0.1 to 5.0").
    """
    places = decimals(max(abs(float(v)) for v in values))
    texts = [f"{float(v):,.{places}f}" for v in values]
    while places > 0 and all(text.endswith("0") for text in texts):
        places -= 1
        texts = [text[:-1] for text in texts]
    return [text.rstrip(".") for text in texts]


def _trimmed(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def number_range(low: float, high: float) -> str:
    """``low to high``, rounded alike (:func:`numbers`)."""
    low_text, high_text = numbers(low, high)
    return f"{low_text} to {high_text}"


def probability(value: float) -> str:
    """A probability as a decimal and a percentage: ``0.72 (72%)``."""
    return f"{value:.2f} ({percent(value)})"


def percent(value: float) -> str:
    """A probability as a whole percentage; one that rounds to 0% or 100% reads <1% or >99%."""
    text = f"{float(value):.0%}"
    return {"0%": "<1%", "100%": ">99%"}.get(text, text)


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
