"""The ``clinical-mtl`` command line: parses arguments and calls the package."""

from __future__ import annotations

import os

import click
import pandas as pd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clinical-mtl")
def cli() -> None:
    """Multi-outcome clinical prediction with one neural network."""


@cli.command()
@click.option("--test-size", default=0.25, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of PBC patients held out for evaluation.")
@click.option("--random-state", default=0, show_default=True, type=int, help="Seed of the split and the model.")
@click.option("--track/--no-track", default=True, show_default=True,
              help="Log the fit to MLflow and register the model.")
@click.option("--registered-model-name", default="pbc_mtl", show_default=True)
def demo(test_size: float, random_state: int, track: bool, registered_model_name: str) -> None:
    """Fit on the bundled PBC cohort, print per-outcome metrics on held-out patients,
    and track the fit in MLflow (by default ./mlflow.db) with the model registered."""
    from .demo import run_pbc_demo

    result = run_pbc_demo(test_size=test_size, random_state=random_state, track=track,
                          registered_model_name=registered_model_name)
    model = result.model
    click.echo(f"MultiTaskMLP on PBC: {len(model.n_iter_)} networks, epochs {model.n_iter_.tolist()}, "
               f"best epochs {model.best_epoch_.tolist()}")
    click.echo("Training labels: " + ", ".join(
        f"{name} {counts['n_labelled']}" for name, counts in model.label_counts_.items()))
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        click.echo(f"Held-out metrics ({test_size:.0%} of patients):")
        click.echo(result.metrics.dropna(axis=1, how="all").to_string())
    if result.run_id is not None:
        import mlflow

        uri = mlflow.get_tracking_uri()
        click.echo(f"Tracked in MLflow run {result.run_id} at {uri}")
        click.echo(f"Registered as models:/{registered_model_name}@champion "
                   f"(version {result.registered_version})")
        click.echo(f"Look at it with: mlflow ui --backend-store-uri {uri}")


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
    try:
        return cli.main(args=argv, prog_name="clinical-mtl", standalone_mode=False) or 0
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
