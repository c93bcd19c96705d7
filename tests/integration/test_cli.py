import pytest

from clinical_mtl.cli import main


def test_demo_prints_per_outcome_metrics(capsys):
    assert main(["demo", "--test-size", "0.3", "--random-state", "1"]) == 0
    out = capsys.readouterr().out
    assert "Held-out metrics (30% of patients)" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert lines["cirrhosis"][1] == "binary"
    assert lines["log_survival_days"][1] == "regression"
    auroc = float(lines["cirrhosis"][3])
    assert 0.5 < auroc <= 1.0


def test_bad_option_is_a_usage_error(capsys):
    assert main(["demo", "--test-size", "2"]) == 2
    assert "Invalid value for '--test-size'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help(argv, capsys):
    assert main(argv) == 0
    assert "Usage: clinical-mtl" in capsys.readouterr().out
