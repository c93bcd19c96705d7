"""The ``clinical-mtl`` command line: parses arguments and calls the package."""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from pathlib import Path

import click

from .config import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_COVERAGE,
    DEFAULT_ENGINE,
    DEFAULT_EXPLAIN_TOP_K,
    DEFAULT_REPORT_OUTPUT,
    DEFAULT_REPORT_TOP_K,
    ENGINES,
    ReportConfig,
    ScoreConfig,
    parse_pipeline,
)
from .exceptions import ClinicalMTLError, one_line
from .scoring.allocation import tune_for_streaming


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clinical-mtl")
def cli() -> None:
    """Multi-outcome clinical prediction with one neural network."""


def command(function):
    """A subcommand of ``cli`` whose docstring's first line shows whole in ``clinical-mtl --help``
    (click cuts a description it derives at about 45 characters)."""
    return cli.command(short_help=function.__doc__.strip().splitlines()[0])(function)


@command
@click.argument("pipeline", type=click.Path(exists=True, dir_okay=False))
def run(pipeline: str) -> None:
    """Run a pipeline file (kind: train, score or report); see pipelines/."""
    from .pipelines import load_pipeline, run_report, run_score, run_train

    config = load_pipeline(pipeline)
    if isinstance(config, ReportConfig):
        _echo_report_summary(run_report(config))
        return
    if isinstance(config, ScoreConfig):
        tune_for_streaming()  # for good: this process only scores now
        _echo_summary(run_score(config))
        return
    from .console import metrics_tables, stdout_console, training_progress
    from .model.early_stopping import kept_other_epochs

    with training_progress():
        result = run_train(config)
    model = result.model
    click.echo(f"Trained MultiTaskMLP: {len(model.n_iter_)} networks, epochs {model.n_iter_.tolist()}, "
               f"best epochs {model.best_epoch_.tolist()}")
    if kept_other_epochs(model.outcome_best_epoch_, model.best_epoch_):  # per-outcome stopping
        for t, spec in enumerate(model.task_specs_):
            click.echo(f"  {spec.name} keeps the weights of epochs {model.outcome_best_epoch_[:, t].tolist()}")
    click.echo("Training labels: " + ", ".join(
        f"{name} {counts['n_labelled']:,}" for name, counts in model.label_counts_.items())
        + f"; rows rejected by the schema: {result.n_rejected:,}")
    click.echo("Held-out metrics:")
    stdout_console().print(metrics_tables(result.metrics))
    if result.model_dir is not None:
        click.echo(f"Model saved to {result.model_dir}")
    if result.model_card_path is not None:
        click.echo(f"Model card: {result.model_card_path} and {result.model_card_path.with_suffix('.html')}")
    if result.run_id is not None:
        import mlflow

        uri = mlflow.get_tracking_uri()
        click.echo(f"Tracked in MLflow run {result.run_id} at {uri}")
        if result.registered:
            click.echo(f"Registered as {result.registered}")
        click.echo(f"Look at it with: mlflow ui --backend-store-uri {uri}")


@command
@click.option("--model", "model_reference", required=True,
              help="A saved model folder, runs:/<run>/model or models:/<name>@<alias>.")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True),
              help="A CSV or Parquet file, or a folder of them.")
@click.option("--output", required=True, type=click.Path(dir_okay=False), help="Output .parquet or .csv file.")
@click.option("--rejects", type=click.Path(dir_okay=False), default=None,
              help="Rejected rows file (default: <output>.rejects.<suffix>).")
@click.option("--explain/--no-explain", default=False, show_default=True,
              help="Add the largest SHAP contributions per outcome.")
@click.option("--top-k", default=DEFAULT_EXPLAIN_TOP_K, show_default=True, type=click.IntRange(1),
              help="Contributions per outcome.")
@click.option("--chunk-size", default=DEFAULT_CHUNK_SIZE, show_default=True, type=click.IntRange(1),
              help="Rows per chunk; bounds memory.")
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
              help="local: stream in this process; spark: Apache Spark (Parquet in and out).")
@click.option("--spark-master", default=None,
              help="Spark master URL (local[4], spark://host:7077, yarn); default: Spark's own configuration.")
@click.option("--id-column", default=None, help="Id column for models saved without a cohort schema.")
def score(model_reference, input_path, output, rejects, explain, top_k, chunk_size, engine, spark_master,
          id_column) -> None:
    """Score patients: validate against the model's cohort schema, predict, write, account for every row."""
    from .pipelines import run_score

    config = _config_from_options("score", model=model_reference, input=input_path, output=output, rejects=rejects,
                                  top_k=top_k if explain else 0, chunk_size=chunk_size, engine=engine,
                                  spark_master=spark_master)
    tune_for_streaming()  # for good: this process only scores
    _echo_summary(run_score(config, id_column=id_column))


@command
@click.option("--model", "model_reference", required=True,
              help="A saved model folder, runs:/<run>/model or models:/<name>@<alias>.")
@click.option("--input", "input_path", required=True, type=click.Path(exists=True),
              help="Patient rows: a CSV or Parquet file, or a folder of them.")
@click.option("--scores", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A 'clinical-mtl score --explain' file of these patients: show its predictions and "
                   "contributions instead of computing them.")
@click.option("--training-ids", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The ids the model was trained on (a training pipeline's training_ids file): their pages "
                   "say their predictions are optimistic.")
@click.option("--output", default=str(DEFAULT_REPORT_OUTPUT), show_default=True, type=click.Path(file_okay=False),
              help="Report folder (replaced when the new one is complete).")
@click.option("--top-k", default=DEFAULT_REPORT_TOP_K, show_default=True, type=click.IntRange(1),
              help="Contributions shown per outcome.")
@click.option("--coverage", default=DEFAULT_COVERAGE, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Coverage of the prediction intervals of regression outcomes.")
@click.option("--pdf/--no-pdf", default=False, show_default=True,
              help="Also print every page to PDF with headless Chromium.")
@click.option("--intended-use", default=None, help="Statement of intended use printed on every page.")
@click.option("--limits", default=None, help="Statement of known limits printed on every page.")
@click.option("--id-column", default=None, help="Id column for models saved without a cohort schema.")
def report(model_reference, input_path, scores, training_ids, output, top_k, coverage, pdf, intended_use, limits,
           id_column) -> None:
    """Write one HTML page per patient (and an index) explaining every outcome's prediction."""
    from .pipelines import run_report

    config = _config_from_options("report", model=model_reference, input=input_path, scores=scores,
                                  training_ids=training_ids, output=output,
                                  top_k=top_k, coverage=coverage, pdf=pdf, intended_use=intended_use or None,
                                  limits=limits or None)
    _echo_report_summary(run_report(config, id_column=id_column))


def _config_from_options(kind: str, **options):
    """The configuration a pipeline file of ``kind`` with these options would give (paths read from the
    working directory); an option that is None takes the pipeline's default."""
    return parse_pipeline({"kind": kind} | {key: value for key, value in options.items() if value is not None})


@command
@click.option("--model", "model_uri", required=True,
              help="An MLflow model URI (models:/<name>@<alias>, runs:/<run>/model) or an MLflow model folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port.")
@click.option("--max-bytes", default=None, type=click.IntRange(1),
              help="Largest request body (default: CLINICAL_MTL_MAX_REQUEST_BYTES or 8 MiB).")
def serve(model_uri, host, port, max_bytes) -> None:
    """Serve a model like 'mlflow models serve --env-manager local', with values-free error answers."""
    import uvicorn

    from .tracking.serving import create_app

    uvicorn.run(create_app(model_uri, max_bytes=max_bytes), host=host, port=port)


def _echo_report_summary(summary) -> None:
    click.echo(f"Wrote {summary.pages:,} patient pages for {summary.rows_in:,} rows ({summary.rows_rejected:,} not "
               f"reported, listed on the index) in {summary.seconds:.2f} s ({summary.pages_per_second:,.0f} pages/s)"
               + (f", {summary.pdfs:,} PDFs" if summary.pdfs else "") + ".")
    click.echo(f"Index: {Path(summary.output) / 'index.html'}")


def _echo_summary(summary) -> None:
    click.echo(
        f"Scored {summary.rows_scored:,} of {summary.rows_in:,} rows, rejected {summary.rows_rejected:,}, "
        f"in {summary.seconds:.2f} s ({summary.rows_per_second:,.0f} rows/s)."
    )
    click.echo(f"Output: {summary.output}\nRejects: {summary.rejects}")
    click.echo("Summary: " + json.dumps({k: v for k, v in summary.to_dict().items() if k in (
        "rows_in", "rows_scored", "rows_rejected", "seconds", "rows_per_second")}))


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; None reads ``sys.argv``.
    """
    # Quiet, private defaults for a tool that handles patient data; explicit settings win.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # pandera concatenates its failure cases with a pandas rule that is deprecated; nothing for users to do.
    warnings.filterwarnings("ignore", "The behavior of DataFrame concatenation with empty or all-NA", FutureWarning)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a scheduler's kill, a container stop) then unwinds like Ctrl-C: partial files are removed.
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return cli.main(args=argv, prog_name="clinical-mtl", standalone_mode=False) or 0
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except ClinicalMTLError as error:  # bad input, paths or model: one line, no traceback; bugs keep theirs
        click.echo(f"Error: {one_line(error)}", err=True)
        return 1


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    raise SystemExit(main())
