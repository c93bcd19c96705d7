"""The geometry of a waterfall chart of SHAP contributions, drawn as inline SVG.

A waterfall starts at the model's average output over its explanation
background (the base value), moves by each feature's contribution, largest
first, then by the remaining features together, and ends at the patient's
prediction. Bars are coloured by clinical direction (:func:`tone`): towards
worse warm, towards better cool, neutral greys where the outcome has no known
direction; the remaining features' bar is an outline, a sum and not a factor.
The shapes are computed here and drawn by the page template:
tens of SVG rectangles per chart render in microseconds, where a matplotlib
figure per outcome would cost tens of milliseconds and put the ward list
below 50 pages per second.
"""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 640
LABEL_WIDTH = 250
VALUE_WIDTH = 70
ROW_HEIGHT = 26
BAR_HEIGHT = 16
TOP = 8
AXIS_HEIGHT = 34


@dataclass(frozen=True)
class Step:
    """One bar of the waterfall: a label and the change it makes."""

    label: str
    start: float
    end: float
    change_text: str
    rest: bool = False


@dataclass(frozen=True)
class DrawnStep:
    label: str
    change_text: str
    x: float
    width: float
    y: float
    increases: bool
    text_y: float
    tone: str


@dataclass(frozen=True)
class Tick:
    x: float
    text: str


@dataclass(frozen=True)
class WaterfallChart:
    """Everything the template needs to draw one chart (coordinates in pixels)."""

    width: int
    height: int
    steps: list[DrawnStep]
    ticks: list[Tick]
    base_x: float
    output_x: float
    plot_left: float
    plot_right: float
    axis_y: float
    axis_label: str
    title: str
    description: str
    legend: list[tuple[str, str]]


WORSE, BETTER, UP, DOWN, REST = "worse", "better", "up", "down", "rest"
"""The tones of a bar (CSS classes of the page): towards worse or better, up or down without a known
direction, and the remaining features' sum."""


def tone(increases: bool, higher_is_worse: bool | None) -> str:
    """The tone of a bar that raises (``increases``) or lowers the output."""
    if higher_is_worse is None:
        return UP if increases else DOWN
    return WORSE if increases == higher_is_worse else BETTER


def legend(higher_is_worse: bool | None, quantity: str) -> list[tuple[str, str]]:
    """What each tone of a chart of ``quantity`` means, as (tone, text) pairs; the text names the colour."""
    raises, lowers = f"raises the {quantity}", f"lowers the {quantity}"
    if higher_is_worse is None:
        pairs = [(UP, f"dark grey: {raises}"), (DOWN, f"light grey: {lowers}")]
    else:
        pairs = [(WORSE, f"red, towards worse: {raises if higher_is_worse else lowers}"),
                 (BETTER, f"blue, towards better: {lowers if higher_is_worse else raises}")]
    return pairs + [(REST, "outline: the remaining features together (a sum, not one factor)")]


def waterfall(steps: list[Step], base: float, output: float, *, axis_label: str, title: str,
              description: str, tick_format=lambda values: [f"{v:.2f}" for v in values], limits: tuple[float, float] | None = None,
              higher_is_worse: bool | None = None) -> WaterfallChart:
    """Lay out the bars of ``steps`` between ``base`` and ``output``.

    Parameters
    ----------
    steps : list of Step
        The bars, top to bottom; each starts where the previous one ended.
    base, output : float
        The base value and the prediction, on the chart's scale.
    axis_label, title, description : str
        Axis caption, the chart's accessible name and its text alternative.
    tick_format : callable, default=two decimals
        The texts of the axis ticks, from their values (all at once, so that
        they can be rounded alike).
    limits : tuple of float, default=None
        Fixed axis range (e.g. (0, 1) for probabilities); else the bars' span
        with a margin.
    higher_is_worse : bool or None, default=None
        Whether a higher output is clinically worse (None: not known), for
        the bars' colours and the legend.
    """
    ends = [base, output] + [s.start for s in steps] + [s.end for s in steps]
    low, high = limits if limits is not None else (min(ends), max(ends))
    if limits is None:
        margin = 0.08 * (high - low) if high > low else max(abs(high), 1.0) * 0.1
        low, high = low - margin, high + margin
    left, right = LABEL_WIDTH, WIDTH - VALUE_WIDTH

    def x_of(value: float) -> float:
        return round(left + (value - low) / (high - low) * (right - left), 1)

    drawn = []
    for row, step in enumerate(steps):
        start, end = x_of(min(step.start, step.end)), x_of(max(step.start, step.end))
        y = TOP + row * ROW_HEIGHT
        increases = step.end >= step.start
        drawn.append(DrawnStep(step.label, step.change_text, start, max(end - start, 1.0), y, increases,
                               y + BAR_HEIGHT - 3, REST if step.rest else tone(increases, higher_is_worse)))
    axis_y = TOP + len(steps) * ROW_HEIGHT + 4
    positions = [low + (high - low) * k / 4 for k in range(5)]
    ticks = [Tick(x_of(value), text) for value, text in zip(positions, tick_format(positions))]
    return WaterfallChart(WIDTH, int(axis_y + AXIS_HEIGHT), drawn, ticks, x_of(base), x_of(output), left, right,
                          axis_y, axis_label, title, description, legend(higher_is_worse, axis_label))
