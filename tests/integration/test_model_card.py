"""Model cards: every section, escaped, no patient row, logged to MLflow."""

import mlflow
import pandas as pd
import pytest

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.evaluation import band
from clinical_mtl.model_card import build_model_card

SECTIONS = ["Intended use", "Training data", "Missingness per feature", "Model settings",
            "Performance on held-out patients", "Calibration", "Subgroups", "Negative transfer", "Known limits"]
SENTINEL_NUMBER, SENTINEL_CATEGORY = 98765.4321, "zz_sentinel_zz"


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
    assert html.count('src="data:image/svg+xml;base64,') == 2
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
                                               "reliability_subtype.png"]
    assert "](card_files/reliability_diagnosis.png)" in written[0].read_text()
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
