"""Report building blocks: number formatting and the waterfall's geometry."""

import inspect

import pytest
import yaml

from clinical_mtl.data.schema import CohortSchema
from clinical_mtl.exceptions import SchemaError
from clinical_mtl.reporting import DEFAULT_INTENDED_USE, build_model_card, write_reports
from clinical_mtl.reporting import formatting as fmt
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.reporting.rendering import template_environment
from clinical_mtl.reporting.waterfall import Step, legend, tone, waterfall


@pytest.mark.parametrize("value, text", [
    (14.5, "14.5"), (57.0, "57"), (0.8312, "0.831"), (3.5, "3.5"), (1272.9, "1,273"), (2.0, "2"),
    (-0.25, "-0.25"), (float("nan"), "missing"),
])
def test_numbers_read_as_a_clinician_writes_them(value, text):
    assert fmt.number(value) == text


@pytest.mark.parametrize("values, texts", [
    ((49.8, 729.0), ["50", "729"]),  # the "49.8 to 729 days"
    ((0.1, 5.0), ["0.1", "5.0"]), ((3.5, 5.0), ["3.5", "5.0"]), ((2.0, 4.0), ["2", "4"]),
    ((0.012, 0.5), ["0.012", "0.500"]), ((1.234, 12.5, 80.0), ["1.2", "12.5", "80.0"]),
    ((998.0, 1272.9), ["998", "1,273"]), ((-3.25, 0.5), ["-3.25", "0.50"]),
])
def test_values_of_one_quantity_are_rounded_alike(values, texts):
    assert fmt.numbers(*values) == texts
    assert len({len(text.partition(".")[2]) for text in texts}) == 1


def test_a_range_reads_with_one_rounding():
    assert fmt.number_range(49.8, 729) == "50 to 729" and fmt.number_range(0.1, 5) == "0.1 to 5.0"


@pytest.mark.parametrize("p, text", [(0.72, "72%"), (0.18, "18%"), (0.004, "<1%"), (0.0051, "1%"), (0.995, ">99%"),
                                     (0.9949, "99%"), (0.0, "<1%"), (1.0, ">99%")])
def test_percentages_never_read_0_or_100(p, text):
    assert fmt.percent(p) == text


def test_bar_tones_follow_the_clinical_direction():
    assert [tone(True, True), tone(False, True)] == ["worse", "better"]
    assert [tone(True, False), tone(False, False)] == ["better", "worse"]
    assert [tone(True, None), tone(False, None)] == ["up", "down"]
    steps = [Step("a", 0.3, 0.5, "+0.20"), Step("b", 0.5, 0.4, "-0.10"), Step("rest", 0.4, 0.6, "+0.20", rest=True)]
    chart = waterfall(steps, 0.3, 0.6, axis_label="probability of death", title="t", description="d",
                      limits=(0.0, 1.0), higher_is_worse=True)
    assert [step.tone for step in chart.steps] == ["worse", "better", "rest"]
    assert chart.legend == legend(True, "probability of death") == [
        ("worse", "red, towards worse: raises the probability of death"),
        ("better", "blue, towards better: lowers the probability of death"),
        ("rest", "outline: the remaining features together (a sum, not one factor)")]
    assert dict(legend(False, "predicted survival"))["better"] == "blue, towards better: raises the predicted survival"
    assert dict(legend(None, "value"))["up"] == "dark grey: raises the value"


@pytest.mark.parametrize("entry, worse", [
    ("{kind: binary}", True), ("{kind: survival}", True), ("{kind: regression}", None),
    ("{kind: multiclass, classes: [a, b, c]}", None), ("{kind: regression, higher_is_worse: true}", True),
    ("{kind: binary, higher_is_worse: false}", False), ("{kind: survival, higher_is_worse: false}", False),
])
def test_which_way_is_worse_comes_from_the_schema_or_the_kind(entry, worse):
    schema = CohortSchema.from_dict(yaml.safe_load(f"cohort: x\nid_column: id\nfeatures: {{a: {{type: numeric}}}}\n"
                                                   f"outcomes: {{y: {entry}}}\n"))
    assert schema.outcomes[0].worse_when_higher is worse
    assert CohortSchema.from_dict(schema.to_dict()) == schema  # stored with the model and read back


@pytest.mark.parametrize("entry", ["{kind: regression, higher_is_worse: sometimes}",
                                   "{kind: multiclass, classes: [a, b], higher_is_worse: true}"])
def test_a_bad_higher_is_worse_is_named(entry):
    with pytest.raises(SchemaError, match=r"outcome 'y': higher_is_worse must be true or false and not for a "
                                          r"multiclass outcome"):
        CohortSchema.from_dict(yaml.safe_load(f"cohort: x\nid_column: id\nfeatures: {{a: {{type: numeric}}}}\n"
                                              f"outcomes: {{y: {entry}}}\n"))


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
