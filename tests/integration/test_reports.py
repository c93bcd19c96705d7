"""Per-patient reports: content, accounting, escaping, isolation, and the pages in a real browser."""

import json
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import save_model
from clinical_mtl.data.run_summary import RunSummary
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.reporting import build_patient_reports, write_reports
from clinical_mtl.reporting.content import page_file_name
from clinical_mtl.reporting.formatting import number
from clinical_mtl.scoring import load_model_for_scoring, score_files

HOSTILE_ID = "<script>alert(1)</script>"
HOSTILE_CATEGORY = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A saved model of the synthetic cohort (binary, multi-class and regression outcomes) whose
    smoking categories include markup, and patient files to report on."""
    folder = tmp_path_factory.mktemp("reports")
    X, Y = make_synthetic_cohort(600, random_state=0)
    X["smoking"] = X["smoking"].cat.rename_categories({"current": HOSTILE_CATEGORY})
    schema = replace(synthetic_schema(), id_type="string")  # ids here are text, markup included
    schema = replace(schema, features=tuple(
        replace(f, categories=("never", "former", HOSTILE_CATEGORY)) if f.name == "smoking" else f
        for f in schema.features))
    model = MultiTaskMLP(tasks=schema.tasks, ensemble_size=2, max_epochs=40, random_state=0).fit(X, Y)
    save_model(model, folder / "model", schema=schema)
    patients = X.head(40).reset_index()
    patients["patient_id"] = [f"P{i:04d}" for i in range(len(patients))]
    patients.loc[0, "patient_id"] = HOSTILE_ID
    patients.loc[1, "smoking"] = HOSTILE_CATEGORY
    patients.loc[2, "crp"] = 250.0  # above the reference range
    patients.loc[3, "albumin"] = np.nan  # missing, imputed
    patients.to_csv(folder / "patients.csv", index=False)
    return {"folder": folder, "loaded": load_model_for_scoring(str(folder / "model")), "patients": patients,
            "schema": schema}


@pytest.fixture(scope="module")
def written(synthetic):
    folder = synthetic["folder"]
    summary = write_reports(synthetic["loaded"], folder / "patients.csv", folder / "out")
    return {"summary": summary, "out": folder / "out"}


class _Markup(HTMLParser):
    """The tags, attributes and text of a page as a browser would parse them."""

    def __init__(self):
        super().__init__()
        self.tags, self.attributes, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]

    def handle_data(self, data):
        self.text.append(data)


def _parsed(html: str) -> _Markup:
    markup = _Markup()
    markup.feed(html)
    return markup


def _page(written, patient_id) -> str:
    return (written["out"] / "patients" / page_file_name(patient_id)).read_text()


def test_every_row_gets_a_page_or_is_listed_with_its_reason(synthetic, tmp_path):
    patients = synthetic["patients"].copy()
    patients.loc[5, "bmi"] = 500.0  # outside the schema's range
    patients = pd.concat([patients, patients.iloc[[7]]])  # a repeated id
    patients.to_csv(tmp_path / "patients.csv", index=False)
    summary = write_reports(synthetic["loaded"], tmp_path / "patients.csv", tmp_path / "out")
    assert (summary.rows_in, summary.pages, summary.rows_rejected) == (41, 39, 2)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert rejected["row_number"].tolist() == [5, 40]
    assert "column 'bmi' value '500.0'" in rejected["reasons"][0] and "duplicate id" in rejected["reasons"][1]
    index = (tmp_path / "out" / "index.html").read_text()
    assert "Rows not reported" in index and "P0005" in index
    assert len(list((tmp_path / "out" / "patients").iterdir())) == 39
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["pages"] == 39


def test_a_report_summary_is_a_scoring_runs_summary_with_its_own_steps(synthetic, tmp_path):
    # One summary type for the scoring engines and reports (the report once counted its rows in a throwaway one).
    synthetic["patients"].head(5).to_csv(tmp_path / "patients.csv", index=False)
    report = write_reports(synthetic["loaded"], tmp_path / "patients.csv", tmp_path / "out")
    scored = score_files(synthetic["loaded"], tmp_path / "patients.csv", tmp_path / "scores.parquet")
    assert type(report) is type(scored) is RunSummary
    assert (report.engine, scored.engine) == ("report", "local")
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(json.loads((tmp_path / "scores.summary.json").read_text())) <= set(written)
    assert (written["rows_in"], written["rows_scored"], written["pages"], written["rows_rejected"]) == (5, 5, 5, 0)
    assert {"read", "validate", "predict_and_explain", "render_and_write"} <= set(written["seconds_by_step"])


def test_page_content_matches_the_model(synthetic):
    loaded, patients = synthetic["loaded"], synthetic["patients"]
    valid = loaded.schema.validate(patients).valid
    reports = build_patient_reports(loaded, valid, top_k=4)
    model = loaded.model
    features = valid[list(model.feature_names_in_)]
    probabilities = model.predict_proba(features)
    explanations = model.explain(features)
    intervals = model.predict_interval(features, coverage=0.9)
    for row in (0, 2, 3):
        report = {outcome.name: outcome for outcome in reports[row].outcomes}
        diagnosis = report["diagnosis"]
        assert diagnosis.headline.startswith(f"Probability {probabilities['diagnosis'][row, 1]:.2f}")
        temperature = model.calibrators_["diagnosis"].temperature  # predict_proba's probabilities are calibrated
        assert ("T = " in diagnosis.calibration) == (temperature != 1.0) and "held-out" in diagnosis.calibration
        # The waterfall runs from the base value through every contribution to the prediction.
        steps = diagnosis.chart.steps
        assert len(steps) == 5 and steps[-1].label == "8 other features"
        values = explanations["diagnosis"].values[row]
        largest = np.argsort(-np.abs(values))[:4]
        for sentence, feature in zip(diagnosis.sentences, largest):
            assert f"the probability of diagnosis by {abs(values[feature]):.2f}." in sentence
        base = explanations["diagnosis"].base_values[row]
        assert base + values.sum() == pytest.approx(probabilities["diagnosis"][row, 1], abs=1e-5)
        # A multi-class outcome lists every class and explains the predicted one.
        subtype = report["subtype"]
        predicted = model.classes_["subtype"][np.argmax(probabilities["subtype"][row])]
        assert subtype.predicted_label == str(predicted) and len(subtype.class_probabilities) == 3
        assert f"had subtype = {predicted}" in subtype.standing
        prognosis = report["prognosis"]
        low, high = intervals[["prognosis_lower", "prognosis_upper"]].iloc[row]
        assert prognosis.uncertainty.startswith("90% prediction interval:")
        assert prognosis.uncertainty == f"90% prediction interval: {number(low)} to {number(high)} log(days)"
        assert "percentile of the values observed in the training cohort" in prognosis.standing
    flags = {row.label: row for row in reports[2].features}
    assert flags["C-reactive protein"].flag_kind == "high" and flags["C-reactive protein"].reference == "0.1 to 5"
    missing = {row.label: row for row in reports[3].features}["Albumin"]
    assert missing.flag_kind == "missing" and missing.flag.startswith("missing: imputed with the training median")


def test_base_rate_is_the_training_cohorts(synthetic):
    loaded = synthetic["loaded"]
    valid = loaded.schema.validate(synthetic["patients"].head(1)).valid
    diagnosis = build_patient_reports(loaded, valid)[0].outcomes[0]
    counts = loaded.model.label_counts_["diagnosis"]
    assert f"{counts['events'][1]:,} of {counts['n_labelled']:,} labelled patients" in diagnosis.standing


def injected_markup(html: str) -> list[str]:
    """The elements and event attributes that the hostile id and category would inject if not escaped."""
    markup = _parsed(html)
    return ([f"<{tag}>" for tag in markup.tags if tag in ("script", "img")]
            + [name for name in markup.attributes if name.startswith("on")])


def _hostile_pages(out) -> dict[str, str]:
    """The page of the hostile id, the page of the hostile category and the index."""
    return {"hostile id": _page({"out": out}, HOSTILE_ID), "hostile category": _page({"out": out}, "P0001"),
            "index": (out / "index.html").read_text()}


def test_values_from_data_are_escaped(written):
    pages = list(_hostile_pages(written["out"]).values())
    for html in pages:
        assert not injected_markup(html)
    assert HOSTILE_ID in "".join(_parsed(pages[0]).text)  # shown as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[1]
    assert page_file_name(HOSTILE_ID).startswith("patient-script-alert-1-script-")


@pytest.mark.parametrize("unsafe, flagged", [
    ("autoescape off", ["hostile id", "hostile category", "index"]),
    ("the id marked |safe", ["hostile id", "index"]),
], ids=["autoescape-off", "safe-filter"])
def test_the_escaping_check_flags_pages_of_an_unescaped_template(synthetic, tmp_path, monkeypatch, unsafe, flagged):
    # The negative control of the test above: its check does see markup that a template lets through.
    from jinja2 import FunctionLoader

    from clinical_mtl.reporting import build

    escaping = build.template_environment

    def unescaped():
        environment = escaping()
        if unsafe == "autoescape off":
            environment.autoescape = False
        else:
            package = environment.loader

            def with_safe_ids(name):
                source = package.get_source(environment, name)[0]
                return source.replace("report.patient_id }}", "report.patient_id | safe }}").replace(
                    "page.patient_id }}", "page.patient_id | safe }}")

            environment.loader = FunctionLoader(with_safe_ids)
        return environment

    monkeypatch.setattr(build, "template_environment", unescaped)
    synthetic["patients"].head(2).to_csv(tmp_path / "patients.csv", index=False)  # the hostile id and category
    write_reports(synthetic["loaded"], tmp_path / "patients.csv", tmp_path / "out")
    found = {name: injected_markup(html) for name, html in _hostile_pages(tmp_path / "out").items()}
    assert [name for name, injected in found.items() if injected] == flagged
    assert "<script>" in found["hostile id"] and "<script>" in found["index"]
    if unsafe == "autoescape off":
        assert {"<img>", "onerror"} <= set(found["hostile category"])


def test_a_page_holds_nothing_of_other_patients(written, synthetic):
    patients = synthetic["patients"]
    ids = patients["patient_id"].tolist()
    for row in (1, 2, 3):
        html = _page(written, ids[row])
        text = " ".join(_parsed(html).text)
        assert ids[row] in text
        others = [other for other in ids if other != ids[row] and other.startswith("P")]
        assert not [other for other in others if other in text]
    # A value only another patient has does not appear.
    assert "250" in " ".join(_parsed(_page(written, ids[2])).text)
    assert "250" not in " ".join(_parsed(_page(written, ids[1])).text)


def test_reports_from_a_scored_file_show_its_predictions(synthetic, tmp_path):
    loaded, folder = synthetic["loaded"], synthetic["folder"]
    score_files(loaded, folder / "patients.csv", tmp_path / "scores.parquet", top_k=3)
    scores = pd.read_parquet(tmp_path / "scores.parquet").head(30)  # ten patients were not scored
    scores.to_parquet(tmp_path / "some_scores.parquet")
    summary = write_reports(loaded, folder / "patients.csv", tmp_path / "out", scores=tmp_path / "some_scores.parquet")
    assert (summary.pages, summary.rows_rejected) == (30, 10)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert rejected["row_number"].tolist() == list(range(30, 40))
    assert rejected["reasons"].str.startswith("no row for this id in the scores file").all()
    valid = loaded.schema.validate(synthetic["patients"]).valid
    explanations = loaded.model.explain(valid[list(loaded.model.feature_names_in_)])
    html = _page({"out": tmp_path / "out"}, "P0004")
    score = scores.set_index("patient_id").loc["P0004"]
    assert f"Probability {score['diagnosis_proba_1']:.2f}" in html
    # Three contributions from the file, then the other features as the rest of the prediction.
    values = explanations["diagnosis"].values[4]
    rest = values.sum() - np.sort(values[np.argsort(-np.abs(values))[:3]]).sum()
    assert f"The other 9 features together {'raised' if rest >= 0 else 'lowered'} the probability of diagnosis by " \
           f"{abs(rest):.2f}." in html


def test_scores_of_another_model_are_refused(synthetic, tmp_path):
    loaded = replace(synthetic["loaded"], run_id="run-a")
    scores = pd.DataFrame({"patient_id": ["P0001"], "run_id": ["run-b"], "diagnosis_top1_feature": ["crp"]})
    scores.to_parquet(tmp_path / "scores.parquet")
    with pytest.raises(ValueError, match="was scored by the model of run"):
        write_reports(loaded, synthetic["folder"] / "patients.csv", tmp_path / "out", scores=tmp_path / "scores.parquet")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def browser():  # one Playwright session at a time: the PDF test starts its own
    from clinical_mtl.reporting.browser import chromium

    with chromium() as context:
        yield context


@pytest.mark.parametrize("page_name", ["index.html", "patients/" + page_file_name("P0002"),
                                       "patients/" + page_file_name(HOSTILE_ID)])
def test_pages_render_in_chromium_without_errors_and_pass_axe(written, browser, page_name, tmp_path):
    from axe_playwright_python.sync_playwright import Axe
    from matplotlib.image import imread

    tab = browser.new_page()
    messages, errors, dialogs, requests = [], [], [], []
    tab.on("request", lambda request: requests.append(request.url))
    tab.on("console", lambda message: messages.append(message))
    tab.on("pageerror", lambda error: errors.append(error))
    tab.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    tab.set_viewport_size({"width": 1000, "height": 800})
    tab.goto((written["out"] / page_name).as_uri())
    tab.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    pixels = imread(tmp_path / "page.png")[..., :3]
    assert pixels.std() > 0.05 and (pixels.mean(axis=2) < 0.5).mean() > 0.005  # not blank: dark text on white
    assert not errors and not dialogs
    assert requests == [(written["out"] / page_name).as_uri()]  # self-contained: nothing else is fetched
    assert not [m.text for m in messages if m.type == "error"]
    results = Axe().run(tab)
    assert results.violations_count == 0, results.generate_report()
    # The checks asked for explicitly: text contrast and alternatives for images.
    passed = {rule["id"] for rule in results.response["passes"]}
    assert "color-contrast" in passed
    if page_name.startswith("patients/"):
        assert "svg-img-alt" in passed
    tab.close()


def test_pdf_output(synthetic, tmp_path):
    """Each patient's PDF is the printed HTML page: A4, its id first, every headline in order."""
    import html
    import io
    import re
    import unicodedata

    from pypdf import PdfReader

    def plain(text):  # PDF text wraps lines and uses ligatures ("ﬁ"); compare words only
        return " ".join(unicodedata.normalize("NFKC", text).split())

    patients = synthetic["patients"].head(2)
    patients.to_csv(tmp_path / "patients.csv", index=False)
    summary = write_reports(synthetic["loaded"], tmp_path / "patients.csv", tmp_path / "out", pdf=True)
    pdfs = sorted((tmp_path / "out" / "pdf").iterdir())
    assert summary.pdfs == 2 and [p.stem for p in pdfs] == sorted(page_file_name(i)[:-5] for i in patients["patient_id"])
    for patient_id in patients["patient_id"]:
        content = (tmp_path / "out" / "pdf" / f"{page_file_name(patient_id)[:-5]}.pdf").read_bytes()
        assert content.startswith(b"%PDF-") and len(content) > 5_000
        page = _page({"out": tmp_path / "out"}, patient_id)
        headlines = [html.unescape(h) for h in re.findall(r'<p class="headline">(.*?)</p>', page)]
        assert len(headlines) == 3  # diagnosis, subtype, prognosis
        reader = PdfReader(io.BytesIO(content))
        texts = [plain(pdf_page.extract_text()) for pdf_page in reader.pages]
        assert len(texts) >= 1 and all(texts)  # no blank page
        for pdf_page in reader.pages:  # A4 is 210 x 297 mm, in points of 1/72 inch
            assert [round(float(side) * 25.4 / 72) for side in pdf_page.mediabox[2:]] == [210, 297]
        assert f"Patient {patient_id}" in texts[0] and plain(headlines[0]) in texts[0]
        whole = " ".join(texts)
        positions = [whole.find(plain(headline)) for headline in headlines]
        assert -1 not in positions and positions == sorted(positions), (patient_id, headlines)
        assert "Intended use and limits" in texts[-1]  # printed to the end of the page
        other = next(i for i in patients["patient_id"] if i != patient_id)
        assert f"Patient {other}" not in whole
