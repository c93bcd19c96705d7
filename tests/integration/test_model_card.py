"""Model cards: every section, escaped, no patient row, logged to MLflow."""

import re
from html import unescape

import mlflow
import numpy as np
import pandas as pd
import pytest

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.evaluation import band
from clinical_mtl.evaluation.negative_transfer import HELPED, HURT, NO_INTERVAL, UNCLEAR
from clinical_mtl.reporting.model_card import build_model_card, found_limitations, kept_epochs_text

SECTIONS = ["Intended use", "Training data", "Missingness per feature", "Model settings",
            "Performance on held-out patients", "Calibration", "Decision curves", "Subgroups", "Negative transfer",
            "Which outcomes pull the shared layers together", "Known limits"]
SENTINEL_NUMBER, SENTINEL_CATEGORY = 98765.4321, "zz_sentinel_zz"


@pytest.fixture(scope="module")
def test_split():
    """The fixture card's test rows, drawn again: the counts its limits state come from these."""
    X, Y = make_synthetic_cohort(300, random_state=2)
    return X[220:], Y[220:]


@pytest.fixture(scope="module")
def card():
    X, Y = make_synthetic_cohort(300, random_state=2)
    X["bmi"] = X["bmi"].astype(float)
    X.loc[X.index[0], "bmi"] = SENTINEL_NUMBER
    X["smoking"] = X["smoking"].cat.add_categories([SENTINEL_CATEGORY])
    X.loc[X.index[1], "smoking"] = SENTINEL_CATEGORY
    X_train, Y_train, X_test, Y_test = X[:220], Y[:220], X[220:], Y[220:]
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=15, ensemble_size=1, random_state=0).fit(X_train, Y_train)
    groups = pd.DataFrame({"sex": X_test["sex"], "age_band": band(X_test["age"], [50, 65])})
    return build_model_card(
        model, X_train, Y_train, X_test, Y_test, groups=groups, n_bootstrap=50, random_state=0,
        title="Card <script>alert(1)</script>", intended_use="Research only & <b>never</b> for care.",
        limitations=["Small | synthetic cohort"],
    )


def test_card_has_every_section_and_the_evaluation(card):
    markdown, html = card.to_markdown(), card.to_html()
    for section in SECTIONS:
        assert f"## {section}" in markdown or f"### {section}" in markdown, section
        assert section in html, section
    assert card.metrics.index.tolist() == ["diagnosis", "subtype", "prognosis"]
    assert "auroc_lower" in card.metrics and card.transfer.index.tolist() == card.metrics.index.tolist()
    assert set(card.subgroups.index.get_level_values("group")) == {"sex", "age_band"}
    assert list(card.diagrams) == ["diagnosis", "subtype"]
    assert html.count('src="data:image/svg+xml;base64,') == 4  # two reliability diagrams, two decision curves
    assert list(card.decision_figures) == ["diagnosis", "subtype"]
    assert "Small \\| synthetic cohort" in markdown  # a pipe cannot break the list or a table
    assert any(limit.startswith("diagnosis: only") for limit in card.limitations)


def test_card_escapes_html(card):
    html, markdown = card.to_html(), card.to_markdown()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>never</b>" not in html and "Research only &amp; &lt;b&gt;never&lt;/b&gt; for care." in html
    assert "<script>" not in markdown and "<b>" not in markdown


def test_card_holds_no_patient_value(card, tmp_path):
    written = card.save(tmp_path / "card.md")
    assert [path.name for path in written] == ["card.md", "card.html", "reliability_diagnosis.png",
                                               "reliability_subtype.png", "decision_curve_diagnosis.png",
                                               "decision_curve_subtype.png"]
    assert "](card_files/reliability_diagnosis.png)" in written[0].read_text()
    assert "](card_files/decision_curve_subtype.png)" in written[0].read_text()
    for path in written[:2]:
        text = path.read_text()
        assert "98765" not in text and SENTINEL_CATEGORY not in text


def test_card_is_logged_to_mlflow(card, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with mlflow.start_run() as run:
        card.log_to_mlflow()
    files = {f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="model_card")}
    assert {"model_card/model_card.md", "model_card/model_card.html", "model_card/model_card_files"} == files
    text = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/model_card/model_card.md")
    assert text.startswith("# Card")


def test_card_limits_state_the_test_sets_own_counts(card, test_split):
    X_test, Y_test = test_split
    diagnosis, subtype = Y_test["diagnosis"].dropna(), Y_test["subtype"].dropna()
    fewest = {  # each below 100 in this 80-row test split
        "diagnosis": (min((diagnosis == 1).sum(), (diagnosis == 0).sum()), "events (or non-events) in the test set"),
        "subtype": (subtype.value_counts().min(), "test rows in its rarest class"),
        "prognosis": (Y_test["prognosis"].notna().sum(), "labelled test rows"),
    }
    assert card.limitations[0] == "Small | synthetic cohort"  # the limits given come first
    for outcome, (count, what) in fewest.items():
        assert f"{outcome}: only {count} {what}; with fewer than 100 the metrics are imprecise" in " ".join(
            card.limitations), outcome
    groups = {"sex": X_test["sex"].astype(object), "age_band": band(X_test["age"], [50, 65]).astype(object)}
    small = {f"{outcome} in {name} = {value}"
             for outcome in Y_test for name, column in groups.items()
             for value, rows in [*Y_test.groupby(column)[outcome].count().items(),
                                 ("missing", Y_test.loc[column.isna(), outcome].count())]
             if rows < 30}
    def listed(start):
        (limit,) = [limit for limit in card.limitations if limit.startswith(start)]
        return set(limit.split(": ", 1)[1].rstrip(".").split("; "))

    # Those shown with figures are listed as unreliable, those too few to estimate as such: each once.
    too_few = {f"{outcome} in {name} = {value}" for outcome, name, value in
               card.subgroups.index[~card.subgroups["estimable"]]}
    assert listed("Subgroups with fewer than 30") == small - too_few and small - too_few
    assert listed("Subgroups too few to estimate") == too_few
    hurt = card.transfer.index[card.transfer["verdict"] == HURT].tolist()
    assert [limit.split(":")[0] for limit in card.limitations if "negative transfer" in limit] == hurt


def _metrics(rows):
    """A metrics table as ``evaluate_model`` gives it: (outcome, kind, labelled, events, calibration slope)."""
    table = pd.DataFrame(rows, columns=["outcome", "kind", "n_labelled", "events", "calibration_slope"])
    return table.set_index("outcome").astype({"n_labelled": int, "events": float, "calibration_slope": float})


WELL_BEHAVED = _metrics([("a", "binary", 1000, 400, 1.0), ("b", "multiclass", 1000, 150, np.nan),
                         ("c", "regression", 100, np.nan, np.nan)])


def test_no_limit_is_found_for_a_large_calibrated_test_set_without_negative_transfer():
    subgroups = pd.DataFrame({"n_labelled": [30, 400]}, index=pd.MultiIndex.from_tuples(
        [("a", "sex", "f"), ("a", "sex", "m")], names=["outcome", "group", "value"]))
    transfer = pd.DataFrame({"verdict": [HELPED, UNCLEAR, NO_INTERVAL]}, index=["a", "b", "c"])
    assert found_limitations(WELL_BEHAVED, subgroups, transfer) == []
    assert found_limitations(WELL_BEHAVED, None, None) == []


def test_few_events_limit_counts_the_rarer_binary_class_the_rarest_class_or_the_labelled_rows():
    metrics = _metrics([
        ("rare_events", "binary", 500, 99, 1.0),
        ("rare_non_events", "binary", 1000, 950, 1.0),  # 50 non-events
        ("binary_enough", "binary", 250, 100, 1.0),  # 100 events, 150 non-events
        ("rare_class", "multiclass", 600, 40, np.nan),
        ("classes_enough", "multiclass", 600, 100, np.nan),
        ("few_rows", "regression", 99, np.nan, np.nan),
        ("rows_enough", "regression", 100, np.nan, np.nan),
    ])
    found = found_limitations(metrics, None, None)
    stated = {limit.split(":")[0]: re.match(r"\w+: only (\d+) (.*?); with fewer than 100 ", limit).groups()
              for limit in found}
    assert stated == {"rare_events": ("99", "events (or non-events) in the test set"),
                      "rare_non_events": ("50", "events (or non-events) in the test set"),
                      "rare_class": ("40", "test rows in its rarest class"),
                      "few_rows": ("99", "labelled test rows")}


def test_calibration_limit_states_a_slope_outside_0_8_to_1_2_and_its_direction():
    metrics = _metrics([(name, "binary", 1000, 500, slope) for name, slope in
                        [("steep", 1.25), ("flat", 0.79), ("low_edge", 0.8), ("high_edge", 1.2), ("ideal", 1.0),
                         ("undefined", np.nan)]])
    assert found_limitations(metrics, None, None) == [
        "steep: calibration slope 1.25 on the test set; predicted risks are too moderate.",
        "flat: calibration slope 0.79 on the test set; predicted risks are too extreme.",
    ]


def test_subgroup_limit_lists_every_subgroup_under_30_labelled_rows():
    index = pd.MultiIndex.from_tuples(
        [("a", "sex", "f"), ("a", "sex", "m"), ("a", "age_band", ">=65"), ("c", "sex", "missing")],
        names=["outcome", "group", "value"])
    subgroups = pd.DataFrame({"n_labelled": [29, 30, 300, 0]}, index=index)
    assert found_limitations(WELL_BEHAVED, subgroups, None) == [
        "Subgroups with fewer than 30 labelled test rows, whose metrics are not reliable: "
        "a in sex = f; c in sex = missing."]


def test_negative_transfer_limit_names_only_the_outcomes_where_sharing_hurt():
    transfer = pd.DataFrame({"verdict": [HURT, HELPED, HURT]}, index=["a", "b", "c"])
    found = found_limitations(WELL_BEHAVED, None, transfer)
    assert [limit.split(":")[0] for limit in found] == ["a", "c"]
    assert all("single-task twin did better on the test set (negative transfer)" in limit for limit in found)


def _table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    return [[unescape(cell.strip()) for cell in line.strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith(f"| {first_cell} |")]


def test_subgroups_too_few_to_estimate_show_counts_and_no_figure(card):
    hidden = card.subgroups[~card.subgroups["estimable"]]
    assert len(hidden) and card.subgroups["estimable"].any()
    markdown, html = card.to_markdown(), card.to_html()
    for (outcome, group, value), row in hidden.iterrows():
        (cells,) = [cells for cells in _table_rows(markdown, outcome) if cells[1:3] == [group, str(value)]]
        reason = row["note"].split("; ")[0]
        assert reason.startswith("too few to estimate")
        assert cells[3] == str(int(row["n_labelled"]))
        first_metric = 4 if outcome == "prognosis" else 5
        assert cells[first_metric] == reason and not any(cells[first_metric + 1:]), cells  # no figure at all
        assert reason in html
    (listed,) = [limit for limit in card.limitations if limit.startswith("Subgroups too few to estimate")]
    assert listed.count(" in ") == len(hidden)
    assert "95% bias-corrected and accelerated (BCa) bootstrap intervals (50 resamples)" in markdown


def test_card_decision_table_quotes_the_net_benefit_at_its_thresholds(card):
    markdown = card.to_markdown()
    rows = _table_rows(markdown, "diagnosis")
    decision = [cells for cells in rows if cells[2].endswith("%")]
    assert [cells[2] for cells in decision] == ["5%", "10%", "20%", "30%", "50%"]
    curves = card.decision_curves
    for cells in decision:
        at = curves[(curves["outcome"] == "diagnosis") & np.isclose(curves["threshold"], int(cells[2][:-1]) / 100)]
        model, treat_all = at["model"].item(), at["treat_all"].item()
        assert cells[3:6] == [f"{model:.3f}", f"{treat_all:.3f}", "0.000"]
        assert cells[6] == f"{model - max(treat_all, 0):+.3f}"


def test_card_reads_the_outcomes_gradient_cosines_from_the_training_history(card):
    from clinical_mtl.model import describe_relatedness, relatedness_table

    assert card.relatedness[["outcome", "other"]].values.tolist() == [
        ["diagnosis", "subtype"], ["diagnosis", "prognosis"], ["subtype", "prognosis"]]
    markdown, html = card.to_markdown(), unescape(card.to_html())
    for row, sentence in zip(card.relatedness.itertuples(), describe_relatedness(card.relatedness)):
        assert sentence in markdown and sentence in html
        assert f"{row.mean_cosine:+.2f}" in markdown
    history = [{"member": 0, "epoch": 1, "grad_cosine/a/b": -0.5}]
    assert relatedness_table(history)["reading"].tolist() == ["conflicting"]


def test_card_lists_the_epoch_each_outcome_keeps():
    """One list where every outcome kept its network's best epoch; per outcome where per-outcome stopping
    kept another."""
    X, Y = make_synthetic_cohort(300, random_state=2)
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=15, ensemble_size=2, random_state=0).fit(X[:220], Y[:220])
    b0, b1 = model.best_epoch_
    model.outcome_best_epoch_ = np.tile(model.best_epoch_[:, None], (1, 3))
    assert kept_epochs_text(model) == f"best epochs, whose weights are kept: {b0}, {b1}"
    model.outcome_best_epoch_[1, 2] = b1 + 1
    expected = ("each outcome keeps the weights of its own best validation epoch: "
                f"diagnosis {b0}, {b1}; subtype {b0}, {b1}; prognosis {b0}, {b1 + 1}")
    assert kept_epochs_text(model) == expected
    card = build_model_card(model, X[:220], Y[:220], X[220:], Y[220:], n_bootstrap=20, random_state=0)
    assert expected in " ".join(card.to_markdown().split())
    assert expected in " ".join(unescape(card.to_html()).split())
