"""Typed pipeline configurations: every key checked, defaults defined once, the CLI builds the same objects."""

import re
from pathlib import Path

import pytest
import yaml

from clinical_mtl import cli, pipelines
from clinical_mtl.cli import main
from clinical_mtl.config import (
    DataConfig,
    ModelCardConfig,
    OutputsConfig,
    ReportConfig,
    ScoreConfig,
    SplitConfig,
    SubgroupBand,
    TrackingConfig,
    TrainConfig,
    load_pipeline,
    parse_pipeline,
)
from clinical_mtl.exceptions import PipelineConfigError
from clinical_mtl.reporting import DEFAULT_INTENDED_USE, DEFAULT_LIMITS

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
TRAIN = yaml.safe_load((PIPELINES / "pbc_train.yaml").read_text())


def _write(folder: Path, mapping: dict, name: str = "pipeline.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(mapping))
    return path


def _train(**changes) -> dict:
    """The bundled train pipeline's mapping with top-level ``changes`` (None removes a key)."""
    mapping = yaml.safe_load((PIPELINES / "pbc_train.yaml").read_text()) | changes
    return {key: value for key, value in mapping.items() if value is not None}


def _refused(mapping: dict, tmp_path: Path) -> str:
    path = _write(tmp_path, mapping)
    with pytest.raises(PipelineConfigError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message[len(f"{path}: "):]


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.update(splt=m.pop("split")), "unknown key 'splt' (did you mean 'split'?)"),
    (lambda m: m["outputs"].update(modle_card="card.md"), "unknown key 'outputs.modle_card' (did you mean 'model_card'?)"),
    (lambda m: m["split"].update(test_sise=0.3), "unknown key 'split.test_sise' (did you mean 'test_size'?)"),
    (lambda m: m["tracking"].update(experimnt="x"), "unknown key 'tracking.experimnt' (did you mean 'experiment'?)"),
    (lambda m: m["data"].update(datset="pbc"), "unknown key 'data.datset' (did you mean 'dataset'?)"),
    (lambda m: m["model"].update(hiden_layer_sizes=[8]),
     "unknown key 'model.hiden_layer_sizes' (did you mean 'hidden_layer_sizes'?)"),
    (lambda m: m["model_card"].update(n_bootstraps=10),
     "unknown key 'model_card.n_bootstraps' (did you mean 'n_bootstrap'?)"),
    (lambda m: m["model_card"]["subgroups"]["age_band"].update(cut=[40]),
     "unknown key 'model_card.subgroups.age_band.cut' (did you mean 'cuts'?)"),
])
def test_an_unknown_key_at_any_level_is_named_with_a_suggestion(tmp_path, change, expected):
    mapping = _train()
    change(mapping)
    assert _refused(mapping, tmp_path) == expected


def test_an_unknown_key_without_a_close_match_lists_the_allowed_ones(tmp_path):
    message = _refused({"kind": "score", "model": "m", "input": "a.csv", "output": "b.parquet", "zzz": 1}, tmp_path)
    assert message == ("unknown key 'zzz' (allowed: chunk_size, engine, input, model, name, output, rejects, "
                       "spark_master, top_k)")


def test_model_parameters_are_checked_against_the_estimator(tmp_path):
    from clinical_mtl import MultiTaskMLP

    every = {name: 1 for name in MultiTaskMLP().get_params() if name != "tasks"}  # values: the estimator's to check
    assert load_pipeline(_write(tmp_path, _train(model=every))).model == every
    assert _refused(_train(model={"tasks": []}), tmp_path) == (
        "key 'model.tasks' cannot be set: the outcomes come from the schema.")


@pytest.mark.parametrize("mapping, expected", [
    (_train(split={"test_size": "0.25"}), "'split.test_size' must be a number, got text."),
    (_train(split=[0.25]), "'split' must be a mapping, got a list."),
    (_train(outputs="out"), "'outputs' must be a mapping, got text."),
    (_train(model_card={"n_bootstrap": 2.5}), "'model_card.n_bootstrap' must be a whole number, got a number."),
    (_train(model_card={"n_bootstrap": True}), "'model_card.n_bootstrap' must be a whole number, got true/false."),
    (_train(model_card={"n_bootstrap": -1}), "'model_card.n_bootstrap' must be at least 0, got -1."),
    (_train(model_card={"limitations": "one"}), "'model_card.limitations' must be a list, got text."),
    (_train(model_card={"subgroups": {"age_band": {"column": "age", "cuts": ["fifty"]}}}),
     "'model_card.subgroups.age_band.cuts[0]' must be a number, got text."),
    (_train(model_card={"subgroups": {"age_band": 50}}),
     "'model_card.subgroups.age_band' must be text or a mapping, got a whole number."),
    (_train(tracking={"enabled": "no"}), "'tracking.enabled' must be true or false, got text."),
    (_train(data={"dataset": "pbcc"}), "'data.dataset' must be one of 'pbc', 'synthetic', got 'pbcc'."),
    (_train(data={}), "'data' must name either 'dataset' (pbc or synthetic) or 'path' (a CSV or Parquet file)."),
    (_train(schema=None), "missing key 'schema' (a train pipeline needs it)."),
    ({"kind": "score", "model": "m", "input": "a.csv", "output": "b.parquet", "top_k": "6"},
     "'top_k' must be a whole number, got text."),
    ({"kind": "score", "model": "m", "input": "a.csv", "output": "b.parquet", "engine": "sparc"},
     "'engine' must be one of 'local', 'spark', got 'sparc'."),
    ({"kind": "score", "model": "m", "input": "a.csv", "output": "", "chunk_size": 10},
     "'output' must be a path (text), got empty text."),
    ({"kind": "score", "model": "m", "input": "a.csv", "output": "b.parquet", "chunk_size": 0},
     "'chunk_size' must be at least 1, got 0."),
    ({"kind": "report", "model": "m", "input": "a.csv", "coverage": 1}, "'coverage' must be between 0 and 1 "
                                                                         "(both excluded), got 1."),
    ({"kind": "report", "model": "m", "input": "a.csv", "pdf": "yes"}, "'pdf' must be true or false, got text."),
    ({"kind": "report", "model": 7, "input": "a.csv"}, "'model' must be text, got a whole number."),
    ({"kind": "deploy"}, "'kind' must be 'train', 'score' or 'report', got 'deploy'."),
])
def test_a_wrong_type_or_missing_key_is_refused_naming_the_key(tmp_path, mapping, expected):
    assert _refused(mapping, tmp_path) == expected


def test_an_unreadable_file_is_a_pipeline_error(tmp_path):
    (tmp_path / "broken.yaml").write_text("kind: [train\n")
    with pytest.raises(PipelineConfigError, match=re.escape(f"Cannot read the pipeline file {tmp_path}")):
        load_pipeline(tmp_path / "broken.yaml")


def test_defaults_are_the_documented_ones(tmp_path):
    train = load_pipeline(_write(tmp_path, {"kind": "train", "schema": "s.yaml", "data": {"dataset": "pbc"}}))
    assert train.split == SplitConfig(test_size=0.25, random_state=0, stratify=None)
    assert train.data == DataConfig(dataset="pbc", path=None, n_patients=1000, random_state=0)
    assert train.model == {} and train.tracking is None and train.outputs == OutputsConfig(None, None, None, None)
    assert train.model_card == ModelCardConfig(title="Model card", intended_use=DEFAULT_INTENDED_USE, limitations=(),
                                               subgroups={}, single_task_comparison=True, n_bootstrap=200)
    tracked = load_pipeline(_write(tmp_path, _train(tracking={})))
    assert tracked.tracking == TrackingConfig(enabled=True, experiment="clinical_mtl", run_name=None,
                                              registered_model_name=None, alias=None)

    score = load_pipeline(_write(tmp_path, {"kind": "score", "model": "m", "input": "a.csv", "output": "b.parquet"}))
    assert (score.top_k, score.chunk_size, score.engine, score.rejects, score.spark_master) == (
        0, 65_536, "local", None, None)

    report = load_pipeline(_write(tmp_path, {"kind": "report", "model": "m", "input": "a.csv"}))
    assert (report.top_k, report.coverage, report.pdf, report.scores) == (6, 0.9, False, None)
    assert report.output == Path.cwd().resolve() / "reports" / "patients"  # like clinical-mtl report's default
    assert (report.intended_use, report.limits) == (DEFAULT_INTENDED_USE, DEFAULT_LIMITS)


def test_relative_paths_are_read_from_the_file_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "pipelines"
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # not the file's folder
    mapping = _train(schema="../schemas/s.yaml", data={"path": "cohort.parquet"},
                     outputs={"model_dir": "../out/model", "metrics": str(tmp_path / "abs" / "metrics.csv")})
    train = load_pipeline(_write(folder, mapping))
    project = (tmp_path / "project").resolve()
    assert train.schema == project / "schemas" / "s.yaml"
    assert train.data.path == project / "pipelines" / "cohort.parquet"
    assert train.outputs.model_dir == project / "out" / "model"
    assert train.outputs.metrics == (tmp_path / "abs" / "metrics.csv").resolve()
    assert train.outputs.patients is None

    score = load_pipeline(_write(folder, {"kind": "score", "model": "../models/m", "input": "in.csv",
                                          "output": "../out/scores.parquet", "rejects": "rejects.parquet"}))
    assert score.model == str(project / "models" / "m")  # a model folder is a path too
    assert (score.input, score.output, score.rejects) == (
        project / "pipelines" / "in.csv", project / "out" / "scores.parquet", project / "pipelines" / "rejects.parquet")
    for uri in ("models:/pbc_mtl@champion", "runs:/abc/model", "s3://bucket/model"):
        assert load_pipeline(_write(folder, {"kind": "report", "model": uri, "input": "in.csv"})).model == uri


def test_the_bundled_pipelines_parse():
    root = PIPELINES.parent.resolve()
    train = load_pipeline(PIPELINES / "pbc_train.yaml")
    assert isinstance(train, TrainConfig) and train.name == "pbc_train"
    assert train.schema == root / "data_schemas" / "pbc.yaml" and train.data.dataset == "pbc"
    assert train.split == SplitConfig(0.25, 0, "cirrhosis") and train.model == {"random_state": 0, "survival_horizons": [365, 1826, 3652]}
    assert train.tracking == TrackingConfig(experiment="clinical_mtl_pbc", registered_model_name="pbc_mtl",
                                            alias="champion")
    assert train.outputs.model_card == root / "reports" / "generated" / "pbc_model_card.md"
    assert train.model_card.subgroups == {"sex": "sex", "age_band": SubgroupBand("age", (50, 65))}
    assert len(train.model_card.limitations) == 4 and train.model_card.n_bootstrap == 200

    score = load_pipeline(PIPELINES / "pbc_score.yaml")
    assert score == ScoreConfig(model="models:/pbc_mtl@champion", input=root / "reports/generated/pbc_patients.csv",
                                output=root / "reports/generated/pbc_scores.parquet", name="pbc_score",
                                rejects=root / "reports/generated/pbc_rejects.parquet", top_k=6)
    report = load_pipeline(PIPELINES / "pbc_report.yaml")
    assert isinstance(report, ReportConfig) and report.output == root / "reports" / "generated" / "pbc_reports"
    assert report.scores == root / "reports/generated/pbc_scores.parquet" and report.coverage == 0.9
    assert report.limits.startswith("Trained on 418 patients of one centre")


class _Captured(Exception):
    """Raised by the stand-in runners: carries the configuration the command line built."""


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """The configurations that ``clinical-mtl`` passes to the runners, the runners not run (from ``tmp_path``)."""
    def capture(config, **_):
        raise _Captured(config)

    for name in ("run_score", "run_report", "run_train"):
        monkeypatch.setattr(pipelines, name, capture)
    monkeypatch.setattr(cli, "tune_for_streaming", lambda: True)  # no allocator settings in the test process
    monkeypatch.chdir(tmp_path)
    (tmp_path / "patients.csv").write_text("id\n1\n")

    def config_of(argv):
        with pytest.raises(_Captured) as info:
            main(argv)
        return info.value.args[0]
    return config_of


@pytest.mark.parametrize("options, pipeline", [
    ([], {}),
    (["--explain", "--top-k", "4", "--chunk-size", "100", "--rejects", "bad.csv", "--engine", "spark",
      "--spark-master", "local[2]"],
     {"top_k": 4, "chunk_size": 100, "rejects": "bad.csv", "engine": "spark", "spark_master": "local[2]"}),
    (["--top-k", "4"], {}),  # no --explain: no contributions
])
def test_the_score_command_builds_the_pipeline_file_config(captured, tmp_path, options, pipeline):
    for model in ("models:/pbc_mtl@champion", "saved_model"):
        argv = ["score", "--model", model, "--input", "patients.csv", "--output", "scores.parquet", *options]
        file = {"kind": "score", "model": model, "input": "patients.csv", "output": "scores.parquet"} | pipeline
        from_options = captured(argv)
        assert isinstance(from_options, ScoreConfig)
        assert from_options == load_pipeline(_write(tmp_path, file)) == captured(["run", "pipeline.yaml"])


@pytest.mark.parametrize("options, pipeline", [
    ([], {}),
    (["--output", "pages", "--top-k", "3", "--coverage", "0.8", "--pdf", "--intended-use", "Research only.",
      "--limits", "Few patients.", "--scores", "patients.csv"],
     {"output": "pages", "top_k": 3, "coverage": 0.8, "pdf": True, "intended_use": "Research only.",
      "limits": "Few patients.", "scores": "patients.csv"}),
    (["--training-ids", "patients.csv"], {"training_ids": "patients.csv"}),
])
def test_the_report_command_builds_the_pipeline_file_config(captured, tmp_path, options, pipeline):
    argv = ["report", "--model", "models:/pbc_mtl@champion", "--input", "patients.csv", *options]
    file = {"kind": "report", "model": "models:/pbc_mtl@champion", "input": "patients.csv"} | pipeline
    from_options = captured(argv)
    assert isinstance(from_options, ReportConfig)
    assert from_options == load_pipeline(_write(tmp_path, file)) == captured(["run", "pipeline.yaml"])


def test_the_cli_builds_the_config_with_parse_pipeline():
    """The command line's configurations are parse_pipeline's, so its errors have the same form."""
    with pytest.raises(PipelineConfigError, match=r"^the command line: 'chunk_size' must be at least 1, got 0\.$"):
        cli._config_from_options("score", model="m", input="a.csv", output="b.parquet", chunk_size=0)
    assert cli._config_from_options("score", model="m", input="a.csv", output="b.parquet", rejects=None) == (
        parse_pipeline({"kind": "score", "model": "m", "input": "a.csv", "output": "b.parquet"}))
