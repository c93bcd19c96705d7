"""Same data, same model, same outputs bit for bit, whatever the chunk size.

Every result computed on the whole table is compared with np.array_equal to the
same result computed chunk by chunk and concatenated: predictions, SHAP values
(probability and log-odds) of a binary, a multi-class and a regression outcome,
top contributions, and the files that batch scoring writes.
"""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import save_model
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema
from clinical_mtl.model.outputs import top_contributions
from clinical_mtl.scoring import load_model_for_scoring, score_files

pytestmark = pytest.mark.integration

N_PATIENTS = 2000
CHUNK_SIZES = (1, 2, 7, 64, 1000, 65536)
OUTCOMES = {"diagnosis": "binary", "subtype": "multiclass", "prognosis": "regression"}


@pytest.fixture(scope="module")
def model():
    X, Y = make_synthetic_cohort(300, random_state=0)
    model = MultiTaskMLP(hidden_layer_sizes=(8,), max_epochs=30, ensemble_size=2, random_state=0).fit(X, Y)
    assert dict(model.tasks_) == OUTCOMES
    return model


@pytest.fixture(scope="module")
def patients():
    X, _ = make_synthetic_cohort(N_PATIENTS, random_state=1)
    return X


def in_chunks(function, X, chunk_size):
    """``function`` applied to consecutive chunks of ``X``'s rows."""
    return [function(X.iloc[start : start + chunk_size]) for start in range(0, len(X), chunk_size)]


def explanation_arrays(explanations):
    return {name: (e.values, e.base_values) for name, e in explanations.items()}


# Rows chunked per chunk size (the whole table is one call): small chunks run on a
# window across the boundary of explain's 256-row blocks, so that rows move from
# the end of a block in the whole-table call to the start of one in the chunked call.
WINDOWS = {1: (240, 264), 2: (236, 276), 7: (200, 340), 64: (0, N_PATIENTS), 1000: (0, N_PATIENTS),
           65536: (0, N_PATIENTS)}


@pytest.fixture(scope="module")
def by_chunk_size(model, patients):
    """Chunk size -> (window, predict_proba, predict, explain, explain in log-odds, top
    contributions) of the window's rows, computed chunk by chunk and concatenated."""

    def run(X):
        return (model.predict_proba(X), model.predict(X), explanation_arrays(model.explain(X)),
                explanation_arrays(model.explain(X, output="log_odds")), top_contributions(model, X, 3))

    results = {}
    for chunk_size in CHUNK_SIZES:
        window = slice(*WINDOWS[chunk_size])
        parts = in_chunks(run, patients.iloc[window], chunk_size)
        probabilities, predicted, explained, log_odds, top = zip(*parts)
        results[chunk_size] = (
            window,
            {name: np.concatenate([p[name] for p in probabilities]) for name in probabilities[0]},
            pd.concat(predicted),
            *({name: tuple(np.concatenate([p[name][i] for p in part]) for i in range(2)) for name in part[0]}
              for part in (explained, log_odds)),
            pd.concat(top),
        )
    return results


def largest_difference(a, b):
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


def whole_and_chunked(by_chunk_size, chunk_size, at):
    """The whole-table result (restricted to the chunked window) and the chunked one."""
    window, chunked = by_chunk_size[chunk_size][0], by_chunk_size[chunk_size][at]
    whole = by_chunk_size[65536][at]  # one chunk: the whole table
    if isinstance(whole, pd.DataFrame):
        return whole.iloc[window], chunked
    if isinstance(next(iter(whole.values())), tuple):
        return {name: tuple(a[window] for a in arrays) for name, arrays in whole.items()}, chunked
    return {name: a[window] for name, a in whole.items()}, chunked


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES[:-1])
def test_predictions_are_identical_whatever_the_chunk_size(by_chunk_size, chunk_size, patients):
    whole_proba, proba = whole_and_chunked(by_chunk_size, chunk_size, 1)
    whole_predicted, predicted = whole_and_chunked(by_chunk_size, chunk_size, 2)
    assert set(proba) == {"diagnosis", "subtype"}
    for name in proba:
        assert len(proba[name]) == len(whole_proba[name]) > 0
        assert np.array_equal(proba[name], whole_proba[name]), (name, largest_difference(proba[name], whole_proba[name]))
    assert predicted.index.equals(whole_predicted.index)
    for name in OUTCOMES:
        assert np.array_equal(predicted[name].to_numpy(), whole_predicted[name].to_numpy()), name


@pytest.mark.parametrize("output", ["probability", "log_odds"])
@pytest.mark.parametrize("chunk_size", CHUNK_SIZES[:-1])
def test_shap_values_are_identical_whatever_the_chunk_size(by_chunk_size, chunk_size, output):
    whole, chunked = whole_and_chunked(by_chunk_size, chunk_size, 3 if output == "probability" else 4)
    assert set(chunked) == set(OUTCOMES)
    for name in OUTCOMES:
        for part, what in zip(range(2), ("values", "base values")):
            assert len(chunked[name][part]) == len(whole[name][part]) > 0
            assert np.array_equal(chunked[name][part], whole[name][part]), (
                name, what, largest_difference(chunked[name][part], whole[name][part]))


@pytest.mark.parametrize("chunk_size", CHUNK_SIZES[:-1])
def test_top_contributions_are_identical_whatever_the_chunk_size(by_chunk_size, chunk_size):
    whole, chunked = whole_and_chunked(by_chunk_size, chunk_size, 5)
    assert chunked.shape[1] == 2 * 3 * len(OUTCOMES)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_the_shap_values_still_add_up_to_the_predictions(by_chunk_size):
    """The identity is not bought with wrong values: base + contributions = model output."""
    _, proba, predicted, explained = by_chunk_size[7][:4]
    for name, (values, base) in explained.items():
        total = base + values.sum(axis=1)
        expected = predicted[name].to_numpy() if name == "prognosis" else proba[name]
        expected = expected[:, 1] if name == "diagnosis" else expected
        np.testing.assert_allclose(total, expected, rtol=0, atol=1e-4)


def test_scored_files_are_identical_whatever_the_chunk_size(tmp_path, model, patients):
    folder = save_model(model, tmp_path / "model", schema=synthetic_schema())
    loaded = load_model_for_scoring(str(folder))
    table = patients.reset_index(drop=True)
    table.insert(0, "patient_id", np.arange(len(table)))
    table.to_parquet(tmp_path / "patients.parquet", index=False)
    outputs = []
    for chunk_size in (7, 65536):
        output = tmp_path / f"scores{chunk_size}.parquet"
        summary = score_files(loaded, tmp_path / "patients.parquet", output, top_k=3, chunk_size=chunk_size)
        assert summary.rows_scored == N_PATIENTS
        outputs.append(pq.read_table(output).drop_columns(["scored_at"]))
    assert "diagnosis_top3_contribution" in outputs[0].column_names
    assert outputs[0].equals(outputs[1])
