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


TRAINING_IDS = [f"P{i:04d}" for i in range(2, 10)]  # marked as training patients in ``written``


@pytest.fixture(scope="module")
def written(synthetic):
    folder = synthetic["folder"]
    pd.DataFrame({"patient_id": TRAINING_IDS}).to_csv(folder / "training_ids.csv", index=False)
    summary = write_reports(synthetic["loaded"], folder / "patients.csv", folder / "out",
                            training_ids=folder / "training_ids.csv")
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
        p = probabilities["diagnosis"][row, 1]
        # The outcome's words and its probability as predict_proba gives it, likely where predict says 1.
        called = np.asarray(model.predict(features.iloc[[row]])["diagnosis"])[0]
        assert diagnosis.headline == f"diagnosis: {'likely' if called == 1 else 'unlikely'} ({_percent(p)})"
        assert (called == 1) == (p > 0.5) and "Decision threshold 50%" in diagnosis.decision
        # The waterfall runs from the base value through every contribution to the prediction.
        steps = diagnosis.chart.steps
        assert len(steps) == 5 and steps[-1].label == "8 other features together"
        values = explanations["diagnosis"].values[row]
        largest = np.argsort(-np.abs(values))[:4]
        for sentence, feature in zip(diagnosis.sentences, largest):
            assert f"the probability of diagnosis by {abs(values[feature]):.2f}." in sentence
        base = explanations["diagnosis"].base_values[row]
        assert base + values.sum() == pytest.approx(probabilities["diagnosis"][row, 1], abs=1e-5)
        # A multi-class outcome names its most likely class with that class's probability.
        subtype = report["subtype"]
        position = np.argmax(probabilities["subtype"][row])
        predicted = model.classes_["subtype"][position]
        assert subtype.headline == f"subtype: most likely {predicted} ({_percent(probabilities['subtype'][row, position])})"
        assert subtype.predicted_label == str(predicted) and len(subtype.class_probabilities) == 3
        assert f"had subtype = {predicted}" in subtype.standing
        prognosis = report["prognosis"]
        low, high = intervals[["prognosis_lower", "prognosis_upper"]].iloc[row]
        assert prognosis.uncertainty.startswith("90% prediction interval:")
        value = np.asarray(model.predict(features.iloc[[row]])["prognosis"])[0]
        _assert_rounded_alike([prognosis.headline.split(": ")[1].removesuffix(" log(days)"),
                               *prognosis.uncertainty.split(": ")[1].removesuffix(" log(days)").split(" to ")],
                              [value, low, high])
        assert "percentile of the values observed in the training cohort" in prognosis.standing
    flags = {row.label: row for row in reports[2].features}
    assert flags["C-reactive protein"].flag_kind == "high" and flags["C-reactive protein"].reference == "0.1 to 5.0"
    missing = {row.label: row for row in reports[3].features}["Albumin"]
    assert missing.flag_kind == "missing" and missing.flag.startswith("missing: imputed with the training median")


def _percent(p: float) -> str:
    """A probability as the page writes it: whole percent, <1% and >99% at the ends."""
    text = f"{round(100 * p)}%"
    return {"0%": "<1%", "100%": ">99%"}.get(text, text)


def _assert_rounded_alike(texts: list[str], values: list[float]) -> None:
    """Texts of one quantity: the same number of decimals, each its value rounded there."""
    places = [len(text.partition(".")[2]) for text in texts]
    assert len(set(places)) == 1, texts
    for text, value in zip(texts, values):
        assert abs(float(text.replace(",", "")) - value) <= 0.5 * 10 ** -places[0] + 1e-9, (texts, values)


def test_base_rate_is_the_training_cohorts(synthetic):
    loaded = synthetic["loaded"]
    valid = loaded.schema.validate(synthetic["patients"].head(1)).valid
    diagnosis = build_patient_reports(loaded, valid)[0].outcomes[0]
    counts = loaded.model.label_counts_["diagnosis"]
    assert f"{counts['events'][1]:,} of {counts['n_labelled']:,} labelled patients" in diagnosis.standing


def injected_markup(html: str, own_scripts: int = 0) -> list[str]:
    """The elements and event attributes that the hostile id and category would inject if not escaped;
    ``own_scripts`` script elements are the page's own (the index's sorting and search)."""
    markup = _parsed(html)
    scripts = markup.tags.count("script") - own_scripts
    return (["<script>"] * scripts + [f"<{tag}>" for tag in markup.tags if tag == "img"]
            + [name for name in markup.attributes if name.startswith("on")])


OWN_SCRIPTS = {"hostile id": 0, "hostile category": 0, "index": 1}


def _hostile_pages(out) -> dict[str, str]:
    """The page of the hostile id, the page of the hostile category and the index."""
    return {"hostile id": _page({"out": out}, HOSTILE_ID), "hostile category": _page({"out": out}, "P0001"),
            "index": (out / "index.html").read_text()}


def test_values_from_data_are_escaped(written):
    pages = list(_hostile_pages(written["out"]).values())
    for name, html in _hostile_pages(written["out"]).items():
        assert not injected_markup(html, OWN_SCRIPTS[name])
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
    found = {name: injected_markup(html, OWN_SCRIPTS[name]) for name, html in _hostile_pages(tmp_path / "out").items()}
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
    assert f"likely ({_percent(score['diagnosis_proba_1'])})" in html
    # Three contributions from the file, then the other features as the rest of the prediction.
    values = explanations["diagnosis"].values[4]
    rest = values.sum() - np.sort(values[np.argsort(-np.abs(values))[:3]]).sum()
    assert f"The other 9 features together {'raised' if rest >= 0 else 'lowered'} the probability of diagnosis by " \
           f"{abs(rest):.2f}; none of them alone by more than {np.sort(np.abs(values))[-3]:.2f}." in html


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


def test_the_calibration_sentence_says_what_the_fitted_state_holds(synthetic):
    import copy

    from clinical_mtl.model.calibration import TemperatureScaling

    loaded = synthetic["loaded"]
    valid = loaded.schema.validate(synthetic["patients"].head(1)).valid
    model = loaded.model
    n_held_out = int(model.validation_metrics_.loc["diagnosis", "n_labelled"])
    slope = model.validation_metrics_.loc["diagnosis", "calibration_slope"]

    def sentence(**changes):
        changed = copy.copy(model)
        for name, value in changes.items():
            setattr(changed, name, value)
        return build_patient_reports(replace(loaded, model=changed), valid)[0].outcomes[0].calibration

    fitted = sentence()
    temperature = model.calibrators_["diagnosis"].temperature
    assert f"Calibration slope on those patients: {slope:.2f}" in fitted and "model card" in fitted
    assert "no recalibration was needed" not in fitted
    if model.calibrators_["diagnosis"].too_few_rows:
        assert fitted.startswith("Probabilities not recalibrated: only ") and f"of the {n_held_out:,} held-out" in fitted
    elif temperature == 1.0:
        assert f"fitted on {n_held_out:,} held-out training patients" in fitted
        assert fitted.startswith("Probabilities not recalibrated: a temperature fitted on") and "5% level" in fitted
    else:
        assert f"fitted on {n_held_out:,} held-out training patients" in fitted and f"T = {temperature:.2f}" in fitted
    # Whatever this fit gave, each state reads as what it is.
    softer = sentence(calibrators_=model.calibrators_ | {"diagnosis": TemperatureScaling(1.5)})
    assert softer.startswith("Probabilities recalibrated by temperature scaling (T = 1.50, softening")
    kept = sentence(calibrators_=model.calibrators_ | {"diagnosis": TemperatureScaling(1.0)})
    assert kept.startswith(f"Probabilities not recalibrated: a temperature fitted on {n_held_out:,} held-out")
    assert "did not differ from 1" in kept and "T = " not in kept
    few = sentence(calibrators_=model.calibrators_ | {"diagnosis": TemperatureScaling(1.0, 12, too_few_rows=True)})
    assert few.startswith(f"Probabilities not recalibrated: only 12 of the {n_held_out:,} held-out training patients "
                          "were in the rarer class, fewer than the 30 a temperature is fitted on, so none was applied.")
    assert "T = " not in few and "5% level" not in few
    assert sentence(calibrators_={}, calibration=None) == (
        "Probabilities not recalibrated: the model was trained without recalibration.")


def test_bars_are_coloured_by_clinical_direction_with_a_key(synthetic, written):
    loaded = synthetic["loaded"]
    valid = loaded.schema.validate(synthetic["patients"]).valid
    tones = {"diagnosis": set(), "subtype": set(), "prognosis": set()}
    for report in build_patient_reports(loaded, valid.head(10), top_k=4):
        for outcome in report.outcomes:
            *shown, rest = outcome.chart.steps
            assert rest.tone == "rest"
            for step in shown:
                # diagnosis: a higher probability of the disease is worse (the default for a binary outcome);
                # prognosis: the synthetic schema says higher_is_worse: false (log days of survival);
                # subtype: several classes, no direction.
                expected = {"diagnosis": {True: "worse", False: "better"},
                            "prognosis": {True: "better", False: "worse"},
                            "subtype": {True: "up", False: "down"}}[outcome.name][step.increases]
                assert step.tone == expected
                tones[outcome.name].add(step.tone)
            key = dict(outcome.chart.legend)
            if outcome.name == "diagnosis":
                assert key["worse"] == "red, towards worse: raises the probability of diagnosis"
            if outcome.name == "prognosis":
                assert key["better"].startswith("blue, towards better: raises the predicted prognosis")
    assert tones == {"diagnosis": {"worse", "better"}, "subtype": {"up", "down"}, "prognosis": {"worse", "better"}}
    html = _page(written, "P0002")
    assert html.count('<ul class="key"') == 3 and 'class="worse"' in html and 'class="rest"' in html
    assert "Red bars raise the prediction" not in html


def test_the_remaining_features_are_a_sum_no_larger_one_by_one_than_any_shown(synthetic):
    loaded = synthetic["loaded"]
    valid = loaded.schema.validate(synthetic["patients"]).valid
    model = loaded.model
    explanations = model.explain(valid[list(model.feature_names_in_)])
    reports = build_patient_reports(loaded, valid, top_k=4)
    rest_above_shown = 0
    for row, report in enumerate(reports):
        diagnosis = report.outcomes[0]
        values = np.abs(explanations["diagnosis"].values[row])
        ordered = np.sort(values)[::-1]
        assert ordered[4] <= ordered[3]  # any hidden feature is no larger than the smallest shown
        *shown, rest = diagnosis.chart.steps
        assert [abs(float(step.change_text)) for step in shown if step.change_text[0] != "<"] == pytest.approx(
            [value for value in ordered[:4] if value >= 0.005], abs=0.0051)
        assert rest.label == "8 other features together" and rest.tone == "rest"
        assert diagnosis.sentences[-1].endswith(f"; none of them alone by more than {ordered[4]:.2f}.")
        rest_sum = abs(explanations["diagnosis"].values[row].sum() - explanations["diagnosis"].values[row][
            np.argsort(-values, kind="stable")[:4]].sum())
        rest_above_shown += rest_sum > ordered[3]
    assert rest_above_shown  # the case the wording is for: the sum beats a shown contribution


def test_pages_name_no_absolute_path(synthetic, written, tmp_path):
    folder = synthetic["folder"]
    pages = [written["out"] / "index.html", *(written["out"] / "patients").iterdir()]
    for page in pages:
        assert str(folder) not in page.read_text()
    assert "source: patients.csv." in (written["out"] / "index.html").read_text()
    # The scores file is named by its file name in the reasons of the index too.
    score_files(synthetic["loaded"], folder / "patients.csv", tmp_path / "scores.parquet", top_k=3)
    pd.read_parquet(tmp_path / "scores.parquet").head(35).to_parquet(tmp_path / "some.parquet")
    write_reports(synthetic["loaded"], folder / "patients.csv", tmp_path / "out", scores=tmp_path / "some.parquet")
    index = (tmp_path / "out" / "index.html").read_text()
    assert "no row for this id in the scores file some.parquet" in index and str(tmp_path) not in index


def test_training_patients_are_marked(synthetic, written):
    marked = "This patient was in the training data: predictions are optimistic"
    for patient_id in synthetic["patients"]["patient_id"]:
        text = " ".join(" ".join(_parsed(_page(written, patient_id)).text).split())
        assert (marked in text) == (patient_id in TRAINING_IDS), patient_id
    index = _parsed((written["out"] / "index.html").read_text())
    text = " ".join(" ".join(index.text).split())
    assert f"{len(TRAINING_IDS)} of these patients were in the training data: their predictions are optimistic" in text
    assert text.count("yes: predictions optimistic") == len(TRAINING_IDS)


def test_training_ids_are_read_in_the_schemas_id_form_and_a_bad_file_is_named(synthetic, tmp_path):
    from clinical_mtl.exceptions import InputDataError
    from clinical_mtl.data.writing import formula_safe_frame
    from clinical_mtl.reporting.build import read_training_ids

    schema = synthetic["loaded"].schema
    pd.DataFrame({"anything": [" P0001 ", "P0002"]}).to_csv(tmp_path / "one_column.csv", index=False)
    assert read_training_ids(tmp_path / "one_column.csv", schema) == {"P0001", "P0002"}
    pd.DataFrame({"patient_id": ["P0003"], "x": [1]}).to_parquet(tmp_path / "ids.parquet")
    assert read_training_ids(tmp_path / "ids.parquet", schema) == {"P0003"}
    integer = replace(schema, id_type="integer")
    pd.DataFrame({"id": ["6", "7.0"]}).to_csv(tmp_path / "numbers.csv", index=False)
    assert read_training_ids(tmp_path / "numbers.csv", integer) == {"6", "7"}
    formula_safe_frame(pd.DataFrame({"patient_id": ["=1", "-x", "a"]})).to_csv(tmp_path / "safe.csv", index=False)
    assert read_training_ids(tmp_path / "safe.csv", schema) == {"=1", "-x", "a"}  # as the train pipeline writes
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(InputDataError, match=r"two.csv: expected the column 'patient_id' \(or a single column\)"):
        read_training_ids(tmp_path / "two.csv", schema)
    # Without a file nothing is marked, and the index says so.
    synthetic["patients"].head(3).to_csv(tmp_path / "patients.csv", index=False)
    write_reports(synthetic["loaded"], tmp_path / "patients.csv", tmp_path / "out")
    index = (tmp_path / "out" / "index.html").read_text()
    assert "not marked: no list of training ids was given" in index and "In training data" not in index


def test_the_index_sorts_by_risk_and_finds_an_id(synthetic, written, browser):
    from axe_playwright_python.sync_playwright import Axe

    loaded = synthetic["loaded"]
    valid = loaded.schema.validate(synthetic["patients"]).valid
    risk = loaded.model.predict_proba(valid[list(loaded.model.feature_names_in_)])["diagnosis"][:, 1]
    ids = valid["patient_id"].astype(str).to_numpy()
    tab = browser.new_page()
    tab.goto((written["out"] / "index.html").as_uri())

    def shown_ids():
        return [text.strip() for text in tab.locator("#patients tbody tr:not([hidden]) td:first-child").all_inner_texts()]

    assert shown_ids() == list(ids)  # as the input file orders them
    header = tab.get_by_role("button", name="diagnosis", exact=True)
    header.click()
    assert shown_ids() == list(ids[np.argsort(risk, kind="stable")])
    assert tab.locator("th[aria-sort]").get_attribute("aria-sort") == "ascending"
    header.click()
    assert shown_ids() == list(ids[np.argsort(-risk, kind="stable")])
    assert tab.locator("th[aria-sort]").get_attribute("aria-sort") == "descending"
    assert tab.locator("th[aria-sort]").inner_text().strip() == "diagnosis ▼"  # the arrow shows, its name stays
    tab.get_by_label("Find a patient by id").fill("P0017")
    assert shown_ids() == ["P0017"] and tab.locator("#search-count").inner_text() == "1 of 40 patients"
    results = Axe().run(tab)  # sorted and filtered, still clean
    assert results.violations_count == 0, results.generate_report()
    tab.get_by_label("Find a patient by id").fill("")
    assert len(shown_ids()) == 40
    tab.close()


def test_the_index_is_a_plain_table_without_scripts(written):
    from playwright.sync_api import sync_playwright

    from clinical_mtl.reporting.browser import CHROMIUM_ARGS, find_chromium

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS)
        try:
            tab = chromium.new_context(java_script_enabled=False).new_page()
            tab.goto((written["out"] / "index.html").as_uri())
            assert tab.locator("#patients tbody tr").count() == 40
            assert not tab.locator("#search").is_visible() and tab.locator("th button").count() == 0
        finally:
            chromium.close()
