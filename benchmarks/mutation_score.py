"""Mutation score of the core modules: how many small deliberate bugs the tests catch.

Each mutant changes one operator or constant in one function of a core module
(``<`` to ``<=``, ``+`` to ``-``, ``and`` to ``or``, ``not x`` to ``x``, ``n`` to
``n + 1``, ``True`` to ``False``, ``break`` to ``continue``); the tests named for
that module then run against it. A mutant is *killed* when a test fails, errors
or runs past the time limit, and *survives* when they all pass. Survivors are
either equivalent (no input can tell them apart from the original: their reason
is kept in ``mutation_equivalents/<module>.toml``) or a gap in the tests.

Run (over an hour on 2 cores; ``--module`` and ``--survivors`` for less)::

    python benchmarks/mutation_score.py                       # every core module
    python benchmarks/mutation_score.py --module conformal    # one module
    python benchmarks/mutation_score.py --survivors           # only last run's survivors

Writes ``reports/mutation_score.md`` and ``reports/mutation_score.json``.

Our own runner rather than mutmut: mutmut 3 first runs the whole suite under
its trampolines (20+ minutes here, Spark and Chromium included) and its mutants
cannot reach the subprocesses our CLI tests start; this one forks an
interpreter that has already imported torch, pandas and scikit-learn, writes
the mutant to a private copy of the package and runs only the module's tests.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents")  # <module>.toml: [[mutant]] id, reason
REPORT = ROOT / "reports" / "mutation_score.md"
RESULTS = ROOT / "reports" / "mutation_score.json"
SCRATCH = Path(os.environ.get("TMPDIR", "/tmp")) / "clinical-mtl-mutants" / f"run-{os.getpid()}"
ORIGINAL: dict[str, str] = {}  # module -> its source when the run started (mutants and copies agree)

# module -> (functions and classes to mutate, None for all; the tests that guard them)
U, I = "tests/unit/", "tests/integration/"
SOURCES = {  # module key -> its file under clinical_mtl/
    "losses": "model/losses.py", "training": "model/training.py", "tasks": "model/tasks.py",
    "labels": "model/labels.py", "preprocessing": "model/preprocessing.py", "calibration": "model/calibration.py",
    "conformal": "model/conformal.py", "explain": "model/explanation.py", "scoring": "scoring/local.py",
    "id_register": "data/id_register.py", "run_summary": "data/run_summary.py",
    "evaluation": "model/metric_tables.py", "metrics": "model/metrics.py", "survival": "model/survival.py",
    "stacked_training": "model/stacked_training.py", "stacked_network": "model/stacked_network.py",
    "early_stopping": "model/early_stopping.py", "weighting": "model/weighting.py",
    "optimizer": "model/optimizer.py", "splitting": "model/splitting.py", "network": "model/network.py",
    "fitting": "model/fitting.py", "prediction": "model/prediction.py", "outputs": "model/outputs.py",
    "relatedness": "model/relatedness.py", "self_supervision": "model/self_supervision.py",
    "survival_metrics": "model/survival_metrics.py", "decision_curve": "model/decision_curve.py",
    "features": "model/features.py", "fitted_state": "model/fitted_state.py", "outcome_view": "model/outcome_view.py",
    "scorers": "model/scorers.py", "link_attributions": "model/link_attributions.py",
}
TARGETS = {
    "losses": (None, [U + "test_losses.py", U + "test_training.py", I + "test_estimator.py"]),
    "training": (None, [U + "test_training.py", U + "test_losses.py", I + "test_reproducibility.py",
                        I + "test_estimator.py"]),
    "tasks": (None, [U + "test_tasks.py", I + "test_label_alignment.py", I + "test_input_errors.py",
                     I + "test_estimator.py"]),
    "labels": (None, [U + "test_tasks.py", I + "test_label_alignment.py", I + "test_input_errors.py",
                      I + "test_estimator.py"]),
    "preprocessing": (None, [U + "test_preprocessing.py", U + "test_preprocessing_safety.py",
                             I + "test_estimator.py"]),
    "calibration": (None, [U + "test_calibrators.py", I + "test_calibration.py"]),
    "conformal": (None, [U + "test_conformal.py", I + "test_estimator.py"]),
    "explain": (["Background", "summarise_background", "explain_model", "_grouped_output", "_in_fixed_blocks",
                 "_attribute", "fixed_blocks", "_deeplift", "_through_link", "_node_levels", "_gauss_legendre",
                 "_through_calibration", "_to_log_odds", "_group_matrix", "_raw_values", "global_importance",
                 "contribution_ranks", "RawFeatureCodec"],
                [U + "test_explain_maths.py", U + "test_explain_small_model.py", I + "test_explain.py",
                 I + "test_chunk_invariance.py"]),
    "scoring": (["_numbered", "validated_chunks", "_preprocessed_chunks", "_commit"],
                [I + "test_scoring.py", I + "test_chunk_invariance.py"]),
    "id_register": (None, [I + "test_scoring.py"]),
    "run_summary": (["check_row_accounting"], [I + "test_scoring.py", I + "test_report_accounting.py"]),
    "evaluation": (["evaluate_model", "group_columns", "band", "too_few_to_estimate", "metric_statistic",
                    "bootstrap_intervals", "percentile_interval",
                    "_outcome_table", "_subgroup_rows"],
                   [U + "test_evaluation_helpers.py", U + "test_negative_transfer.py", I + "test_evaluation.py",
                    I + "test_model_card.py"]),
    "metrics": (None, [U + "test_metrics.py", U + "test_evaluation_helpers.py", I + "test_evaluation.py"]),
    "survival": (None, [U + "test_survival.py", U + "test_cox_head.py", U + "test_losses.py",
                        I + "test_survival_head.py"]),
    "stacked_training": (None, [U + "test_stacked_training.py", U + "test_training.py",
                                I + "test_reproducibility.py", I + "test_estimator.py"]),
    "stacked_network": (None, [U + "test_network.py", U + "test_stacked_training.py", I + "test_estimator.py"]),
    "early_stopping": (None, [U + "test_training.py", U + "test_stacked_training.py",
                              U + "test_multitask_options.py", I + "test_multitask_toolbox.py"]),
    "weighting": (None, [U + "test_multitask_options.py", U + "test_losses.py", U + "test_stacked_training.py",
                         U + "test_training.py"]),
    "optimizer": (None, [U + "test_training.py", U + "test_stacked_training.py", U + "test_losses.py"]),
    "splitting": (None, [U + "test_splitting.py", I + "test_estimator.py"]),
    "network": (None, [U + "test_network.py", U + "test_stacked_training.py", U + "test_multitask_options.py",
                       U + "test_training.py", I + "test_multitask_toolbox.py"]),
    "fitting": (None, [U + "test_multitask_options.py", U + "test_stacked_training.py", I + "test_estimator.py",
                       I + "test_calibration.py", I + "test_survival_head.py", I + "test_multitask_toolbox.py",
                       I + "test_reproducibility.py", I + "test_input_errors.py", U + "test_cox_head.py",
                       I + "test_survival_reports.py", I + "test_terminal.py"]),
    "prediction": (None, [U + "test_output_spec.py", I + "test_estimator.py", I + "test_sklearn_outcome_tools.py",
                          I + "test_sklearn_compat.py", I + "test_calibration.py", I + "test_survival_head.py",
                          I + "test_hostile_inputs.py", I + "test_input_errors.py", I + "test_chunk_invariance.py",
                          U + "test_preprocessing_safety.py", I + "test_survival_reports.py"]),
    "outputs": (None, [U + "test_output_spec.py", I + "test_scoring.py", I + "test_chunk_invariance.py",
                       I + "test_survival_head.py", I + "test_explain.py", I + "test_serving_safety.py"]),
    "relatedness": (None, [U + "test_multitask_options.py", U + "test_stacked_training.py",
                           I + "test_multitask_toolbox.py", I + "test_model_card.py"]),
    "self_supervision": (None, [U + "test_multitask_options.py", I + "test_multitask_toolbox.py"]),
    "survival_metrics": (None, [U + "test_survival_metrics.py", I + "test_survival_reports.py", I + "test_evaluation.py",
                                I + "test_survival_head.py"]),
    "decision_curve": (None, [U + "test_metrics.py", I + "test_evaluation.py", I + "test_model_card.py"]),
    "features": (None, [U + "test_features.py", U + "test_preprocessing.py", U + "test_preprocessing_safety.py",
                        U + "test_schema.py", I + "test_estimator.py"]),
    "fitted_state": (None, [U + "test_persistence.py", U + "test_calibrators.py", I + "test_calibration.py",
                            I + "test_survival_reports.py", I + "test_survival_head.py"]),
    "outcome_view": (None, [I + "test_sklearn_outcome_tools.py", I + "test_sklearn_compat.py", I + "test_estimator.py",
                            I + "test_survival_head.py"]),
    "scorers": (None, [I + "test_sklearn_outcome_tools.py"]),
    "link_attributions": (None, [U + "test_calibrators.py", U + "test_explain_maths.py", I + "test_explain.py"]),
}

BINARY = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
          ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult, ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
           ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
BOOLEAN = {ast.And: ast.Or, ast.Or: ast.And}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
          ast.Pow: "**", ast.BitAnd: "&", ast.BitOr: "|", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
          ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is", ast.IsNot: "is not", ast.In: "in",
          ast.NotIn: "not in", ast.And: "and", ast.Or: "or"}


@dataclass
class Mutant:
    """One single-point change to a module, named so that the name survives unrelated edits."""

    module: str
    function: str
    line: int
    change: str
    occurrence: int
    code: str = ""
    source: str = ""
    status: str = "not run"  # killed, timeout, survived, not reached (by any test), error (the runner's)
    exit_code: int | None = None
    seconds: float = 0.0

    @property
    def id(self) -> str:
        return f"{self.module}:{self.function}:{self.change}#{self.occurrence}"


# -- finding the mutants ------------------------------------------------------------------------


def mutants_of(module: str, functions: list[str] | None) -> list[Mutant]:
    """Every mutant of ``module`` inside ``functions`` (top-level names), with its mutated source."""
    text = ORIGINAL.setdefault(module, (ROOT / "clinical_mtl" / SOURCES[module]).read_text())
    tree, lines = ast.parse(text), text.splitlines()
    found, seen = [], {}
    for scope, edits in _edit_sites(tree, functions):
        for owner, field, index, replacement, change in edits:
            key = (scope, change)
            seen[key] = seen.get(key, 0) + 1
            mutated = _apply(tree, owner, field, index, replacement)
            if mutated is None:
                continue
            line = next(n.lineno for n in ast.walk(owner) if hasattr(n, "lineno"))
            found.append(Mutant(module, scope, line, change, seen[key], lines[line - 1].strip(), mutated))
    return found


def _edit_sites(tree: ast.Module, functions: list[str] | None):
    """(qualified name, edits) for each statement of the selected functions, in source order."""
    for top in tree.body:
        if not isinstance(top, (ast.FunctionDef, ast.ClassDef)) or (functions and top.name not in functions):
            continue
        for scope, node in _scoped_nodes(top, top.name):
            edits = list(_edits(node))
            if edits:
                yield scope, edits


def _scoped_nodes(node: ast.AST, scope: str):
    """Each node under ``node`` with the qualified name of its function, skipping what mutants must not touch."""
    for field, value in ast.iter_fields(node):
        if field in ("decorator_list", "returns", "annotation", "type_comment"):
            continue  # annotations and decorators: not behaviour
        children = value if isinstance(value, list) else [value]
        for position, child in enumerate(children):
            if not isinstance(child, ast.AST) or _skipped(child, field, position):
                continue
            inner = f"{scope}.{child.name}" if isinstance(child, (ast.FunctionDef, ast.ClassDef)) else scope
            yield inner, child
            yield from _scoped_nodes(child, inner)


def _skipped(node: ast.AST, field: str, position: int) -> bool:
    """Docstrings, error and warning messages, f-strings and ``arg`` annotations."""
    if field == "body" and position == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        return True
    if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Assert)):
        return True  # the message of a raise is not tested by value; its condition is mutated
    if isinstance(node, ast.Call) and _called_name(node) in ("warn", "warning", "info", "debug"):
        return True
    return isinstance(node, ast.arg)


def _called_name(call: ast.Call) -> str:
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")


def _edits(node: ast.AST):
    """(owner, field, index, replacement, description) for each mutation of ``node`` itself."""
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in BINARY:
        new = BINARY[type(node.op)]
        yield node, "op", None, new(), f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"
    elif isinstance(node, ast.Compare):
        for index, op in enumerate(node.ops):
            new = COMPARE[type(op)]
            yield node, "ops", index, new(), f"{SYMBOL[type(op)]} -> {SYMBOL[new]}"
    elif isinstance(node, ast.BoolOp):
        new = BOOLEAN[type(node.op)]
        yield node, "op", None, new(), f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"
    elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
        yield node, "value", None, not node.value, f"{node.value} -> {not node.value}"
    elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        new = node.value + 1
        yield node, "value", None, new, f"{node.value!r} -> {new!r}"
    elif isinstance(node, ast.Break):
        yield node, None, None, ast.Continue(), "break -> continue"
    elif isinstance(node, ast.Continue):
        yield node, None, None, ast.Break(), "continue -> break"
    for field, value in ast.iter_fields(node):
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, (ast.Not, ast.USub, ast.Invert)):
            kind = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}[type(value.op)]
            yield node, field, None, value.operand, f"drop {kind} before {ast.unparse(value.operand)[:40]}"
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, ast.UnaryOp) and isinstance(item.op, (ast.Not, ast.USub, ast.Invert)):
                    kind = {ast.Not: "not", ast.USub: "-", ast.Invert: "~"}[type(item.op)]
                    yield node, field, index, item.operand, f"drop {kind} before {ast.unparse(item.operand)[:40]}"


def _apply(tree: ast.Module, owner: ast.AST, field, index, replacement) -> str | None:
    """The module's source with one edit made (the tree is left as it was); None if it does not compile."""
    if field is None:  # replace the statement itself: find it in its parent's body
        for parent in ast.walk(tree):
            for name, value in ast.iter_fields(parent):
                if isinstance(value, list) and any(item is owner for item in value):
                    position = next(i for i, item in enumerate(value) if item is owner)
                    value[position] = ast.copy_location(replacement, owner)
                    try:
                        return _compiled(tree)
                    finally:
                        value[position] = owner
        return None
    old = getattr(owner, field)
    if index is None:
        setattr(owner, field, replacement)
    else:
        old = copy.copy(old)
        getattr(owner, field)[index] = replacement
    try:
        return _compiled(tree)
    finally:
        setattr(owner, field, old)


def _compiled(tree: ast.Module) -> str | None:
    source = ast.unparse(ast.fix_missing_locations(tree))
    try:
        compile(source, "<mutant>", "exec")
    except SyntaxError:
        return None
    return source


# -- running them -------------------------------------------------------------------------------


def prepare_copies(n: int) -> list[Path]:
    """``n`` private copies of the package, tests and schemas, byte-compiled."""
    copies = []
    for k in range(n):
        target = SCRATCH / f"worker{k}"
        shutil.rmtree(target, ignore_errors=True)
        for name in ("clinical_mtl", "tests", "data_schemas", "pipelines"):
            shutil.copytree(ROOT / name, target / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(ROOT / "pyproject.toml", target / "pyproject.toml")
        copies.append(target)
    return copies


def preload() -> None:
    """Import the heavy third-party libraries once, before forking (never clinical_mtl itself)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    import matplotlib

    matplotlib.use("Agg")
    import numpy, pandas, pyarrow.csv, pyarrow.parquet, pytest, scipy.stats, shap, sklearn.metrics, torch  # noqa: F401,E401,I001


@dataclass
class Job:
    """One child process: the tests of ``files`` against ``module`` (mutated by ``mutant`` unless None)."""

    module: str
    files: list[str]
    mutant: Mutant | None = None
    limit: float = 3600.0
    profile: Path | None = None  # record here which functions of the core modules the tests reach


def run_tests(copy_root: Path, job: Job) -> int:
    """Fork a child that runs the job's tests in ``copy_root``; return its pid."""
    if job.mutant is not None:
        (copy_root / "clinical_mtl" / SOURCES[job.module]).write_text(job.mutant.source)
    pid = os.fork()
    if pid:
        return pid
    try:  # the child
        os.setsid()
        sys.dont_write_bytecode = True
        os.chdir(copy_root)
        sys.path.insert(0, str(copy_root))
        os.environ["PYTHONPATH"] = str(copy_root)
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        import pytest

        reached = _start_profile(copy_root) if job.profile else None
        stop_early = [] if job.profile else ["-x"]
        code = pytest.main([*job.files, *stop_early, "-q", "-p", "no:cacheprovider",
                            "-o", "addopts=--strict-markers", "--rootdir", str(copy_root)])
        if reached is not None:
            sys.setprofile(None)
            job.profile.write_text(json.dumps(sorted(reached)))
        os._exit(int(code))
    except BaseException:
        os._exit(99)


def _start_profile(copy_root: Path) -> set:
    """Record (module, qualified name) of every core-module function called from now on, in any thread."""
    import threading

    files = {str(copy_root / "clinical_mtl" / SOURCES[module]): module for module in TARGETS}
    reached = set()

    def on_call(frame, event, arg):
        if event == "call":
            module = files.get(frame.f_code.co_filename)
            if module:
                reached.add((module, frame.f_code.co_qualname.replace(".<locals>", "")))

    sys.setprofile(on_call)
    threading.setprofile(on_call)
    return reached


def run_all(jobs: list[Job], copies: list[Path], on_done) -> None:
    """Run the jobs, one per copy of the package at a time; ``on_done(job, exit code or None, seconds)``."""
    free, running, pending = list(copies), {}, list(jobs)
    while pending or running:
        while free and pending:
            job, copy_root = pending.pop(0), free.pop()
            running[run_tests(copy_root, job)] = (job, copy_root, time.monotonic())
        time.sleep(0.05)
        for pid, (job, copy_root, started) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            elapsed = time.monotonic() - started
            if not done and elapsed > job.limit:
                os.killpg(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                code = None
            elif not done:
                continue
            else:
                code = os.waitstatus_to_exitcode(status)
            del running[pid]
            if job.mutant is not None:
                (copy_root / "clinical_mtl" / SOURCES[job.module]).write_text(ORIGINAL[job.module])
            free.append(copy_root)
            on_done(job, code, elapsed)


def reaches(profile: list, module: str, function: str) -> bool:
    """Whether a test file's profile shows ``function`` of ``module`` (or code nested in it) being run."""
    return any(m == module and (name == function or name.startswith(function + ".")) for m, name in profile)


def _changed_line(mutant: Mutant) -> str:
    """The mutant's version of its line (as ``ast.unparse`` writes it)."""
    original = ast.unparse(ast.parse(ORIGINAL[mutant.module])).splitlines()
    changed = mutant.source.splitlines()
    return next((new for old, new in zip(original, changed) if old != new), "(no change found)")


def save(mutants: list[Mutant], kept: dict, reasons: dict, baseline: dict) -> dict:
    """Write the results of ``mutants`` over those ``kept`` from earlier runs; return the counts."""
    results = {m.id: {k: v for k, v in asdict(m).items() if k != "source"} | {"id": m.id} for m in mutants}
    merged = {**kept, **results}
    everything = [Mutant(**{k: v for k, v in row.items() if k != "id"}) for row in merged.values()]
    everything.sort(key=lambda m: (list(TARGETS).index(m.module), m.line, m.id))
    score = write_report(everything, reasons, baseline)
    RESULTS.write_text(json.dumps({"mutants": list(merged.values()), **score}, indent=1) + "\n")
    return score


# -- the report ---------------------------------------------------------------------------------


ALIVE = ("survived", "not reached", "error")  # what the tests did not catch


def write_report(mutants: list[Mutant], reasons: dict[str, tuple[str, str]], baseline: dict[str, float]) -> dict:
    """Write the Markdown report; return the per-module and overall counts.

    ``reasons``: id -> (kind, reason), kind "equivalent" or "alive" (not equivalent, left alive on
    purpose: shown with its reason, counted as not killed).
    """
    equivalents = {key: reason for key, (kind, reason) in reasons.items() if kind == "equivalent"}
    alive_reasons = {key: reason for key, (kind, reason) in reasons.items() if kind == "alive"}
    rows, summary = [], {}
    for module in TARGETS:
        own = [m for m in mutants if m.module == module]
        if not own:
            continue
        killed = sum(m.status in ("killed", "timeout") for m in own)
        equivalent = sum(m.status in ALIVE and m.id in equivalents for m in own)
        alive = sum(m.status in ALIVE and m.id not in equivalents for m in own)
        scored = len(own) - equivalent
        summary[module] = {"mutants": len(own), "killed": killed, "equivalent": equivalent, "survived": alive,
                           "score": killed / scored if scored else 1.0}
        seconds = f"{baseline[module]:.0f} s" if module in baseline else "earlier run"
        rows.append(f"| {module} | {len(own)} | {killed} | {equivalent} | {alive} | "
                    f"{summary[module]['score']:.1%} | {seconds} |")
    total = {key: sum(s[key] for s in summary.values()) for key in ("mutants", "killed", "equivalent", "survived")}
    total["score"] = total["killed"] / max(total["mutants"] - total["equivalent"], 1)
    explained = [f"- `{m.id}` (line {m.line}: `{m.code}`): {equivalents[m.id]}" for m in mutants
                 if m.status in ALIVE and m.id in equivalents]
    gaps = [f"- `{m.id}` ({m.status}; line {m.line}: `{m.code}`)"
            + f": {alive_reasons.get(m.id, 'no test yet')}"
            for m in mutants if m.status in ALIVE and m.id not in equivalents]
    lines = [
        "# Mutation score of the core modules",
        "",
        f"`python benchmarks/mutation_score.py` on {time.strftime('%Y-%m-%d')}. Each mutant changes one operator",
        "or constant in one function; it runs against the test files of its module that reach that function",
        "(found by profiling each file once), quickest first. Killed = a test failed or ran past 3x its time.",
        "Score = killed / (mutants - equivalent). Target: at least 90% per module.",
        "",
        "| module | mutants | killed | equivalent | not killed | score | tests' time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| **all** | {total['mutants']} | {total['killed']} | {total['equivalent']} | {total['survived']} | "
        f"**{total['score']:.1%}** | |",
        "",
        "## Equivalent mutants: no input tells them from the code, and why",
        "",
        *(explained or ["None."]),
        "",
        "## Mutants the tests do not catch: not equivalent, with why no test kills them",
        "",
        *(gaps or ["None."]),
        "",
    ]
    REPORT.write_text("\n".join(lines))
    return {"summary": summary, "total": total}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="only these modules")
    parser.add_argument("--survivors", action="store_true", help="rerun only the last run's survivors")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--show", metavar="ID", action="append", help="print this mutant's changed line and stop")
    parser.add_argument("--only", metavar="ID", action="append",
                        help="run only this mutant (repeatable) and print its status; the reports are left alone")
    parser.add_argument("--rewrite", action="store_true",
                        help="rewrite the report from the last results (after editing the reasons) and stop")
    args = parser.parse_args(argv)
    if args.show or args.only:
        args.module = sorted({name.split(":")[0] for name in (args.show or args.only)})
    modules = args.module or list(TARGETS)
    reasons = {entry["id"]: (entry.get("kind", "equivalent"), entry["reason"])
               for path in sorted(EQUIVALENTS.glob("*.toml")) for entry in tomllib.loads(path.read_text())["mutant"]}
    if args.rewrite:
        rows = json.loads(RESULTS.read_text())["mutants"]
        print(json.dumps(save([], {row["id"]: row for row in rows}, reasons, {})["total"]))
        return 0
    mutants = [m for module in modules for m in mutants_of(module, TARGETS[module][0])]
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"mutants": []}
    kept = {row["id"]: row for row in previous["mutants"] if row["module"] not in modules or args.survivors}
    current = {m.id for m in mutants}  # rows of mutants that no longer exist (the code changed) are dropped
    kept = {key: row for key, row in kept.items()
            if row["module"] in TARGETS and (row["module"] not in modules or key in current)}
    if args.survivors:
        mutants = [m for m in mutants if kept.get(m.id, {}).get("status", "survived") in ALIVE]
    if args.show or args.only:
        mutants = [m for m in mutants if m.id in (args.show or args.only)]
        missing = set(args.show or args.only) - {m.id for m in mutants}
        if missing:
            raise SystemExit(f"no such mutant: {', '.join(sorted(missing))} (see --list)")
    if args.list or args.show:
        for m in mutants:
            print(f"{m.id}  (line {m.line})")
            if args.show:
                print(f"  - {m.code}\n  + {_changed_line(m)}")
        return 0
    print(f"{len(mutants)} mutants in {', '.join(modules)}", flush=True)

    preload()
    copies = prepare_copies(max(1, args.jobs))
    files = sorted({name for module in modules for name in TARGETS[module][1]})
    profiles, seconds = {}, {}

    def profiled(job, code, elapsed):
        if code != 0:
            raise SystemExit(f"{job.files[0]} fails on the unmutated code (exit {code}): fix it first")
        profiles[job.files[0]], seconds[job.files[0]] = json.loads(job.profile.read_text()), elapsed

    run_all([Job("", [name], profile=SCRATCH / f"profile-{k}.json") for k, name in enumerate(files)], copies,
            profiled)
    print("tests' time per file: " + ", ".join(f"{f} {seconds[f]:.0f} s" for f in files), flush=True)
    baseline = {module: sum(seconds[f] for f in TARGETS[module][1]) for module in modules}

    jobs, done = [], [0]
    for mutant in mutants:
        reaching = sorted((f for f in TARGETS[mutant.module][1] if reaches(profiles[f], mutant.module,
                                                                            mutant.function)), key=seconds.get)
        if reaching:  # the quickest first: most mutants die in the first file
            jobs.append(Job(mutant.module, reaching, mutant, 3 * sum(seconds[f] for f in reaching) + 10))
        else:
            mutant.status = "not reached"

    def mutant_done(job, code, elapsed):
        mutant = job.mutant
        # pytest: 1 tests failed, 2 collection failed (the mutant does not import); others are the runner's
        mutant.status = {None: "timeout", 0: "survived", 1: "killed", 2: "killed"}.get(code, "error")
        mutant.exit_code = code
        mutant.seconds = round(elapsed, 1)
        done[0] += 1
        if mutant.status in ALIVE:
            print(f"[{done[0]}/{len(jobs)}] {mutant.status} {mutant.id} (line {mutant.line})", flush=True)
        if done[0] % 10 == 0 and not args.only:  # an interrupted run keeps what it found
            save([m for m in mutants if m.status != "not run"], kept, reasons, baseline)

    run_all(jobs, copies, mutant_done)

    if args.only:
        for m in mutants:
            print(f"{m.id}: {m.status} ({m.seconds} s)")
        shutil.rmtree(SCRATCH, ignore_errors=True)
        return 0
    score = save(mutants, kept, reasons, baseline)
    print(json.dumps(score["total"]), flush=True)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
