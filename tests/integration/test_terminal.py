"""The terminal a person sees: the main job's output on a small real run (tables within 100 columns,
counts as integers, no progress when piped), training progress on a terminal, the subcommands' help,
and a models:/ name that does not exist."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console

from clinical_mtl import MultiTaskMLP
from clinical_mtl.cli import cli, main
from clinical_mtl.console import MAX_WIDTH, training_progress
from clinical_mtl.datasets import load_pbc, make_synthetic_cohort
from clinical_mtl.model.hooks import add_progress_listener, has_progress_listeners, remove_progress_listener

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TERMINAL_SETTINGS = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """``clinical-mtl run`` of a small PBC training pipeline in a fresh process, its output piped, as
    wide as a 250-column terminal would allow."""
    folder = tmp_path_factory.mktemp("small_run")
    config = {"kind": "train", "schema": str(ROOT / "data_schemas" / "pbc.yaml"),
              "data": {"dataset": "pbc"}, "split": {"test_size": 0.25, "random_state": 0, "stratify": "cirrhosis"},
              "model": {"random_state": 0, "ensemble_size": 2, "max_epochs": 6, "survival_horizons": [365, 1826]},
              "model_card": {"n_bootstrap": 20, "single_task_comparison": False},
              "outputs": {"metrics": str(folder / "metrics.csv")}}
    (folder / "small.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_SETTINGS} | {"COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "clinical_mtl.cli", "run", "small.yaml"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    return done, pd.read_csv(folder / "metrics.csv", index_col=0) if done.returncode == 0 else None


def _metrics_section(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    return lines[lines.index("Held-out metrics:") + 1:]


def test_held_out_metrics_print_within_100_columns_with_counts_as_integers(small_run):
    done, metrics = small_run
    assert done.returncode == 0, done.stderr
    section = _metrics_section(done.stdout)
    assert max(len(line) for line in section) <= MAX_WIDTH
    assert max(len(line) for line in done.stdout.splitlines()) <= MAX_WIDTH  # no path printed here
    for outcome, row in metrics.iterrows():
        counts = f"{int(row.n_labelled)} labelled, {int(row.events)} events"
        assert f"{outcome} ({row.kind}): {counts}" + (
            f", {int(row.censored)} censored" if row.kind == "survival" else "") in section
    assert not re.search(r"\b\d+\.000\b", "\n".join(section))  # no count printed as 36.000
    auroc = metrics.loc["cirrhosis", ["auroc", "auroc_lower", "auroc_upper"]].to_numpy()
    assert re.search(r"^AUROC +{:.3f} \({:.3f}–{:.3f}\)$".format(*auroc).replace(".", r"\."),
                     "\n".join(section), re.M)
    c_index = metrics.loc["death", "harrell_c"]
    assert any(re.fullmatch(rf"Harrell's C +{c_index:.3f} \(\d\.\d{{3}}–\d\.\d{{3}}\)", line) for line in section)


def test_training_is_quiet_when_piped(small_run):
    done, _ = small_run
    for stream in (done.stdout, done.stderr):
        assert "network 1/2" not in stream and "best validation loss" not in stream
        assert "\x1b[" not in stream and "\r" not in stream


def _fit_with_progress(console, **params):
    X, Y = make_synthetic_cohort(120, random_state=0)
    with training_progress(console):
        return MultiTaskMLP(ensemble_size=2, max_epochs=4, hidden_layer_sizes=(8,), random_state=0,
                            **params).fit(X, Y)


def test_progress_on_a_terminal_shows_networks_epochs_and_the_best_validation_loss():
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    model = _fit_with_progress(console)
    text = ANSI.sub("", console.file.getvalue())
    assert "Training diagnosis, subtype, prognosis (2 networks)" in text
    history = pd.DataFrame(model.history_)
    for network in range(2):
        mine = history[history["member"] == network]
        best = mine.loc[mine["valid_loss"].idxmin()]
        assert (f"network {network + 1}/2: {model.n_iter_[network]} epochs, best validation loss "
                f"{best['valid_loss']:.4g} (epoch {int(best['epoch'])})") in text
    assert not has_progress_listeners()  # removed on leaving the block


def test_progress_is_silent_off_a_terminal_and_leaves_training_unchanged():
    console = Console(file=io.StringIO(), force_terminal=False)
    quiet = _fit_with_progress(console)
    assert console.file.getvalue() == ""
    X, _ = make_synthetic_cohort(120, random_state=0)
    shown = _fit_with_progress(Console(file=io.StringIO(), force_terminal=True))
    for name in quiet.tasks_:
        np.testing.assert_array_equal(quiet.predict(X)[name], shown.predict(X)[name])


@pytest.mark.parametrize("params", [{}, {"training": "alternate"}])  # networks trained together, then apart
def test_progress_listeners_hear_every_epoch_of_every_network_then_its_end(params):
    heard = []

    def listener(model, progress):
        heard.append(progress)

    add_progress_listener(listener)
    try:
        model = _fit_with_progress(Console(file=io.StringIO()), early_stopping=False, **params)
    finally:
        remove_progress_listener(listener)
    for network in range(2):  # every epoch in order, then the network's end (at its last epoch)
        mine = [(p.epoch, p.done) for p in heard if p.network == network]
        assert mine == [(epoch, False) for epoch in (1, 2, 3, 4)] + [(4, True)]
    assert {p.best_valid_loss for p in heard} == {None} and {p.best_epoch for p in heard} == {0}  # no validation set
    losses = sorted((p.network, p.epoch, p.train_loss) for p in heard if not p.done)
    assert [loss for *_, loss in losses] == [record["train_loss"] for record in model.history_]


@pytest.mark.parametrize("params", [{}, {"training": "alternate"}])  # networks trained together, then apart
def test_progress_tells_each_network_s_end_when_it_stops_early(params):
    heard = []

    def listener(model, progress):
        heard.append(progress)

    add_progress_listener(listener)
    try:
        X, Y = make_synthetic_cohort(120, random_state=0)
        model = MultiTaskMLP(ensemble_size=3, max_epochs=100, patience=2, learning_rate=0.01,
                             hidden_layer_sizes=(8,), random_state=0, **params).fit(X, Y)
    finally:
        remove_progress_listener(listener)
    assert len(set(model.n_iter_)) > 1  # the networks stop at different epochs
    ends = [(i, p) for i, p in enumerate(heard) if p.done]
    assert sorted(p.network for _, p in ends) == [0, 1, 2]
    for position, end in ends:
        assert end.epoch == model.n_iter_[end.network] and end.best_epoch == model.best_epoch_[end.network]
        losses = [r["valid_loss"] for r in model.history_ if r["member"] == end.network]
        assert end.best_valid_loss == min(losses) == losses[end.best_epoch - 1]
        # told right after the network's last epoch (not once the whole ensemble is done), and last
        before = heard[position - 1]
        assert (before.network, before.epoch, before.done) == (end.network, end.epoch, False)
        assert all(p.network != end.network for p in heard[position + 1:])
    assert ends[0][0] < len(heard) - len(ends)  # the first to stop is told while others still train


def test_help_shows_each_subcommands_whole_description(capsys):
    assert main(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name, command in cli.commands.items():
        first_line = " ".join(command.help.strip().splitlines()[0].split())
        assert f"{name} {first_line}" in shown


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    """A fresh working folder with a patients file, no MLflow settings."""
    folder = tmp_path / "work"
    folder.mkdir()
    X, _ = load_pbc()
    X.head(3).reset_index().to_csv(folder / "patients.csv", index=False)
    monkeypatch.chdir(folder)
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.mark.parametrize("command", ["score", "report"])
def test_an_unknown_registered_model_is_one_line_and_creates_no_database(empty_folder, capsys, command):
    argv = [command, "--model", "models:/no_such_model@champion", "--input", "patients.csv"]
    assert main(argv + (["--output", "scores.parquet"] if command == "score" else [])) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("Error: ")
    assert "models:/no_such_model@champion" in err and f"sqlite:///{empty_folder}/mlflow.db" in err
    assert "model registry" in err
    assert sorted(p.name for p in empty_folder.iterdir()) == ["patients.csv"]


def test_a_registry_without_the_name_is_named_and_a_missing_registry_is_not_created(empty_folder, tmp_path,
                                                                                   monkeypatch, capsys):
    import mlflow

    store = f"sqlite:///{tmp_path / 'store.db'}"
    mlflow.MlflowClient(tracking_uri=store).create_registered_model("another_model")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    capsys.readouterr()  # MLflow's messages on creating the store
    argv = ["score", "--model", "models:/no_such_model@champion", "--input", "patients.csv", "--output", "s.parquet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"model registry at {store}" in err and "no_such_model" in err
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "sqlite:///registry.db")  # a registry of its own, not there
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sqlite:///registry.db" in err
    assert sorted(p.name for p in empty_folder.iterdir()) == ["patients.csv"]
