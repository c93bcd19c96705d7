"""Report building blocks: number formatting and the waterfall's geometry."""

import inspect

import pytest

from clinical_mtl.reporting import DEFAULT_INTENDED_USE, build_model_card, write_reports
from clinical_mtl.reporting import formatting as fmt
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.reporting.rendering import template_environment
from clinical_mtl.reporting.waterfall import Step, waterfall


@pytest.mark.parametrize("value, text", [
    (14.5, "14.5"), (57.0, "57"), (0.8312, "0.831"), (3.5, "3.5"), (1272.9, "1,273"), (2.0, "2"),
    (-0.25, "-0.25"), (float("nan"), "missing"),
])
def test_numbers_read_as_a_clinician_writes_them(value, text):
    assert fmt.number(value) == text


def test_small_changes_say_they_round_to_zero_and_others_keep_their_sign():
    assert fmt.signed_change(0.004) == "<0.01"
    assert fmt.signed_change(-0.21) == "-0.21" and fmt.signed_change(0.2) == "+0.20"


def test_titles_inside_sentences_and_ordinals():
    assert fmt.in_sentence("Cirrhosis (stage 4)") == "cirrhosis (stage 4)"
    assert fmt.in_sentence("AST level") == "AST level"
    assert [fmt.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 42, 100)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "42nd", "100th"]


def test_the_waterfall_runs_from_the_base_to_the_prediction():
    steps = [Step("a", 0.3, 0.5, "+0.20"), Step("b", 0.5, 0.4, "-0.10"), Step("rest", 0.4, 0.45, "+0.05")]
    chart = waterfall(steps, 0.3, 0.45, axis_label="p", title="t", description="d", limits=(0.0, 1.0))
    a, b, rest = chart.steps
    assert a.x == chart.base_x and a.increases and not b.increases
    assert b.x + b.width == pytest.approx(a.x + a.width)  # b goes back from where a ended
    assert rest.x + rest.width == pytest.approx(chart.output_x)
    assert chart.ticks[0].x == chart.plot_left and chart.ticks[-1].x == chart.plot_right
    assert [tick.text for tick in chart.ticks] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert a.y < b.y < rest.y < chart.axis_y < chart.height


def test_a_waterfall_without_limits_spans_its_bars_and_a_flat_one_still_draws():
    chart = waterfall([Step("a", 5.0, 7.0, "+2")], 5.0, 7.0, axis_label="v", title="t", description="d")
    assert chart.plot_left < chart.base_x < chart.output_x < chart.plot_right
    flat = waterfall([Step("a", 2.0, 2.0, "<0.01")], 2.0, 2.0, axis_label="v", title="t", description="d")
    assert flat.steps[0].width >= 1.0


def test_page_file_names_are_safe_and_distinct():
    names = {page_file_name(i) for i in ["../../etc/passwd", "a/b", "a b", "a-b", 7, "7 "]}
    assert len(names) == 6
    assert all("/" not in name and " " not in name and name.endswith(".html") for name in names)


def test_model_cards_and_patient_pages_state_one_intended_use_by_default():
    defaults = {inspect.signature(function).parameters["intended_use"].default
                for function in (build_model_card, write_reports)}
    assert defaults == {DEFAULT_INTENDED_USE}
    assert "Not a medical device" in DEFAULT_INTENDED_USE


def test_cards_and_pages_are_drawn_from_one_template_folder():
    names = set(template_environment().list_templates())
    assert {"model_card.md.j2", "model_card.html.j2", "patient.html.j2", "index.html.j2", "base.html.j2"} <= names
