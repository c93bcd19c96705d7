import errno
import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_model,
    save_model,
)
from clinical_mtl.exceptions import ModelLoadError, OutputPathError


def test_round_trip_keeps_predictions_params_and_fitted_state(tmp_path, fitted_model, cohort):
    X, Y = cohort
    folder = save_model(fitted_model, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = load_model(folder)
    pd.testing.assert_frame_equal(loaded.predict(X), fitted_model.predict(X))
    for name, proba in fitted_model.predict_proba(X).items():
        np.testing.assert_array_equal(loaded.predict_proba(X)[name], proba)
    assert loaded.get_params() == fitted_model.get_params()
    assert loaded.tasks_ == fitted_model.tasks_
    assert loaded.label_counts_ == fitted_model.label_counts_
    assert loaded.history_[-1] == pytest.approx(fitted_model.history_[-1], nan_ok=True)
    assert loaded.best_epoch_.tolist() == fitted_model.best_epoch_.tolist()
    assert loaded.evaluate(X, Y).equals(fitted_model.evaluate(X, Y))


def test_unusual_parameters_and_labels_survive(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    Y = np.column_stack([(X[:, 0] > 0).astype(int), X[:, 1] * 3])
    model = MultiTaskMLP(
        hidden_layer_sizes=(8, 4), ensemble_size=2, max_epochs=3, dropout=0.0,
        class_weight={"y0": {0: 1.0, 1: 3.0}}, loss_weighting={"y0": 2.0, "y1": 1.0},
        random_state=np.random.RandomState(3), log_transform=None,
    ).fit(X, Y)
    loaded = load_model(save_model(model, tmp_path))
    assert loaded.class_weight == {"y0": {0: 1.0, 1: 3.0}}
    assert loaded.hidden_layer_sizes == (8, 4)
    assert loaded.random_state is None  # a RandomState instance is not stored
    assert not hasattr(loaded, "feature_names_in_")
    pd.testing.assert_frame_equal(loaded.predict(X), model.predict(X))


@pytest.mark.parametrize("head_hidden", [(), (3,)])
def test_a_model_without_a_trunk_round_trips(tmp_path, head_hidden):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(80, 3))
    model = MultiTaskMLP(hidden_layer_sizes=(), head_hidden_layer_sizes=head_hidden, ensemble_size=2, max_epochs=2,
                         random_state=0).fit(X, X[:, 0] > 0)
    loaded = load_model(save_model(model, tmp_path))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_files_hold_no_code(tmp_path, fitted_model):
    folder = save_model(fitted_model, tmp_path)
    json.loads((folder / CONFIG_FILE).read_text())  # plain JSON
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)  # refuses anything but tensors
    assert all(isinstance(value, torch.Tensor) for value in state.values())


def test_unknown_format_version_is_refused(tmp_path, fitted_model):
    folder = save_model(fitted_model, tmp_path)
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["format_version"] = 99
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format_version 99"):
        load_model(folder)


class _RunsCodeWhenUnpickled:
    """A pickle payload that makes a folder when unpickled, as a malicious weights file would run code."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_weights_holding_a_pickle_payload_are_refused_without_running_it(tmp_path, fitted_model):
    folder = save_model(fitted_model, tmp_path / "model")
    marker = tmp_path / "payload-ran"
    torch.save({"weights": _RunsCodeWhenUnpickled(str(marker))}, folder / WEIGHTS_FILE)
    # Digests recomputed, as a forger would: only the tensors-only loading stands in the way.
    config = json.loads((folder / CONFIG_FILE).read_text())
    content = {key: value for key, value in config.items() if key != "integrity"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    config["integrity"] = {"weights_sha256": _digest((folder / WEIGHTS_FILE).read_bytes()),
                           "config_sha256": _digest(canonical)}
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="holds something other than tensors"):
        load_model(folder)
    assert not marker.exists()
    torch.load(folder / WEIGHTS_FILE, weights_only=False)  # the control: plain unpickling runs the payload
    assert marker.exists()


@pytest.mark.parametrize("failing", [WEIGHTS_FILE, CONFIG_FILE])
def test_a_save_that_fails_midway_leaves_the_earlier_model_whole(tmp_path, fitted_model, cohort, monkeypatch,
                                                                 failing):
    X, _ = cohort
    folder = save_model(fitted_model, tmp_path / "model")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    full_disk = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if failing == WEIGHTS_FILE:
        def torn_save(weights, file, *args, **kwargs):  # half the file written, then the disk is full
            Path(file).write_bytes(b"PK half a weights file")
            raise full_disk
        monkeypatch.setattr(torch, "save", torn_save)
    else:
        write_text = Path.write_text

        def torn_write(self, text, *args, **kwargs):
            if CONFIG_FILE in self.name:
                write_text(self, text[:100], *args, **kwargs)
                raise full_disk
            return write_text(self, text, *args, **kwargs)
        monkeypatch.setattr(Path, "write_text", torn_write)
    expected = f"Cannot write {folder / failing}: {os.strerror(errno.ENOSPC)}."
    with pytest.raises(OutputPathError, match=f"^{re.escape(expected)}$"):
        save_model(fitted_model, folder)
    # No torn file, no temporary file left: the earlier model loads (the same model's weights are the same bytes).
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    pd.testing.assert_frame_equal(load_model(folder).predict(X), fitted_model.predict(X))


def test_the_calibration_state_and_why_no_temperature_was_fitted_survive(tmp_path, fitted_model):
    """The fixture's diagnosis has fewer than MIN_MINORITY_ROWS held-out rows in its rarer class (no
    temperature, and the state says why); its subtype enough for one. A file saved before the
    reason was recorded loads with the defaults."""
    from clinical_mtl.model.calibration import MIN_MINORITY_ROWS

    calibrators = fitted_model.calibrators_
    assert {c.too_few_rows for c in calibrators.values()} == {True, False}  # one of each here
    for name, calibrator in calibrators.items():
        assert calibrator.too_few_rows == (calibrator.minority_rows < MIN_MINORITY_ROWS)
        n_classes = len(fitted_model.classes_[name])  # the most common class holds at least 1/k of the rows
        n_held_out = fitted_model.validation_metrics_.loc[name, "n_labelled"]
        assert calibrator.minority_rows <= n_held_out * (n_classes - 1) / n_classes
        assert calibrator.temperature == 1.0 or not calibrator.too_few_rows
    folder = save_model(fitted_model, tmp_path / "model")
    assert load_model(folder).calibrators_ == calibrators
    config = json.loads((folder / CONFIG_FILE).read_text())
    for state in config["fitted"]["calibrators"].values():
        del state["minority_rows"], state["too_few_rows"]
    content = {key: value for key, value in config.items() if key != "integrity"}  # as an older save wrote it
    config["integrity"]["config_sha256"] = _digest(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    older = load_model(folder).calibrators_
    assert {name: c.temperature for name, c in older.items()} == {n: c.temperature for n, c in calibrators.items()}
    assert all(c.minority_rows is None and not c.too_few_rows for c in older.values())
