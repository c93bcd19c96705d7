"""The ``clinical-mtl`` command line: parses arguments and calls the package."""

from __future__ import annotations

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
def demo(test_size: float, random_state: int) -> None:
    """Fit on the bundled PBC cohort and print per-outcome metrics on held-out patients."""
    from .demo import run_pbc_demo

    model, metrics = run_pbc_demo(test_size=test_size, random_state=random_state)
    click.echo(f"MultiTaskMLP on PBC: {model.n_iter_} epochs, best epoch {model.best_epoch_}")
    click.echo("Training labels: " + ", ".join(
        f"{name} {counts['n_labelled']}" for name, counts in model.label_counts_.items()))
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        click.echo(f"Held-out metrics ({test_size:.0%} of patients):")
        click.echo(metrics.dropna(axis=1, how="all").to_string())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name; None reads ``sys.argv``.
    """
    try:
        return cli.main(args=argv, prog_name="clinical-mtl", standalone_mode=False) or 0
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return 1
