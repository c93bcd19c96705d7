"""Training speed: MultiTaskMLP.fit against a hand-written PyTorch loop and skorch.

All three train the same architecture (``MultiHeadNet``: inputs -> 256 -> 128 -> a binary,
a 3-class and a regression head) with the same masked per-task losses on the same
preprocessed float32 tensors of a synthetic cohort (100,000 patients, 40 raw
columns, 20% of labels missing), with Adam-family optimisers at the same learning
rate, 5 epochs, two torch threads. Reported: samples per second per epoch, and each
method's speed relative to the hand-written loop within each interleaved repeat (median over repeats).

- ``hand-written loop``: the practical ceiling; tensors in memory, a random
  permutation per epoch, ``X[idx]`` per batch, ``torch.optim.Adam``, ``loss.item()``
  per batch, and torch's usual ReLU (``UsualReLUNet``: out of place, as a user writes it).
- the same loop on the estimator's own network, whose ReLUs overwrite each linear
  layer's output while training: how much of the estimator's lead comes from that.
- ``skorch``: ``skorch.NeuralNet`` wrapping the same module (usual ReLU) and a masked criterion.
- ``MultiTaskMLP.fit``: the estimator end to end from the raw DataFrame (with
  preprocessing, ``ensemble_size=1``, ``early_stopping=False``).
- ``fit_module``: the estimator's training loop alone on the pre-made tensors.
- ``matrix products alone``: not a loop but its floor: the forward and backward matrix
  products only (no activations, losses, optimiser or autograd); its ratio caps any loop's.
- the same two with a survival head (logistic hazard on the default 4 intervals, the synthetic
  cohort's Weibull death times, about 60% censored) in place of the regression head:
  the ratio to the regression-head run of the same method is the cost of the survival
  loss (target: at least 0.8).

The default configuration, end to end (``--default-folds``; ``--skip-loops`` runs only
this part): ``MultiTaskMLP()`` against a plain multi-task MLP (one network, batch 128,
the same early stopping) on the 6,300-patient synthetic cohort and on ``nwtco``
(4,028 patients, shaped as in ``compare_models.py``: histology, relapse by the median
relapse time, log days to relapse), 5-fold cross-validation, interleaved: median fit
seconds and held-out metrics, and the earlier defaults (batch 32, learning rate 1e-3)
for accuracy (target: defaults at most 2x the plain network's time).

Run ``python benchmarks/training_speed.py``; results go to ``reports/training_speed.md``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold

from clinical_mtl import MultiTaskMLP
from clinical_mtl.datasets import make_synthetic_cohort
from clinical_mtl.model.labels import encode_targets
from clinical_mtl.model.losses import FixedWeighting, masked_task_loss
from clinical_mtl.model.network import MultiHeadNet, build_network
from clinical_mtl.model.preprocessing import ClinicalPreprocessor
from clinical_mtl.model.tasks import infer_tasks
from clinical_mtl.model.training import TaskData, TrainingSettings, fit_module

REPORTS = Path(__file__).resolve().parents[1] / "reports"
HIDDEN = (256, 128)
LEARNING_RATE = 1e-3
KINDS = ("binary", "multiclass", "regression")
SURVIVAL_KINDS = ("binary", "multiclass", "survival")
REGRESSION_LABELS = ["diagnosis", "subtype", "prognosis"]
SURVIVAL_LABELS = ["diagnosis", "subtype", "death_time", "death_event"]
SURVIVAL_FIT = "MultiTaskMLP.fit, survival head for regression"
SURVIVAL_LOOP = "fit_module, survival head for regression"
PRODUCTS_ONLY = "matrix products alone (a floor: no loop can beat it)"
IN_PLACE_HAND = "hand-written loop on the estimator's network (ReLU in place while training)"
SURVIVAL_OF = {SURVIVAL_FIT: "MultiTaskMLP.fit (raw table in)", SURVIVAL_LOOP: "fit_module (the estimator's loop)"}


def make_data(n_rows: int, seed: int):
    """The raw table, and per head set (regression or survival third head): labels, tensors, head sizes."""
    X, Y = make_synthetic_cohort(n_rows, random_state=seed, n_noise_features=30, survival=True)
    inputs = torch.from_numpy(ClinicalPreprocessor().fit_transform(X))
    heads = {}
    for name, columns in (("regression", REGRESSION_LABELS), ("survival", SURVIVAL_LABELS)):
        specs = infer_tasks(Y[columns])
        targets, labelled = encode_targets(Y[columns], specs)
        data = TaskData(inputs, [torch.from_numpy(t) for t in targets], torch.from_numpy(labelled.astype(np.float32)))
        heads[name] = (Y[columns], data, [spec.n_outputs for spec in specs])
    return X, heads


class UsualReLUNet(MultiHeadNet):
    """``MultiHeadNet`` as a user writes it: torch's usual ReLU, out of place while training too (the
    estimator's networks overwrite each Linear's output while training: ``MultiHeadNet.train``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.train()

    def train(self, mode: bool = True) -> UsualReLUNet:
        super().train(mode)
        for module in self.modules():
            if isinstance(module, torch.nn.ReLU):
                module.inplace = False
        return self


def hand_written(data: TaskData, head_sizes, batch_size: int, epochs: int, seed: int,
                 network=UsualReLUNet) -> None:
    torch.manual_seed(seed)
    net = network(data.X.shape[1], HIDDEN, head_sizes)
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    n = len(data)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            outputs = net(data.X[idx])
            weights = data.weights[idx]
            loss = sum(
                masked_task_loss(outputs[t], data.targets[t][idx], weights[:, t], kind)
                for t, kind in enumerate(KINDS)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)


def products_only(data: TaskData, head_sizes, batch_size: int, epochs: int, seed: int) -> None:
    """A floor, not a loop: per batch only the network's matrix products, forward (with the biases) and
    backward (weight gradients, and input gradients below the top), in float32. Any loop that computes
    these gradients pays at least this; the ratio of its time to the hand-written loop's caps how far
    a faster loop could go."""
    torch.manual_seed(seed)
    net = MultiHeadNet(data.X.shape[1], HIDDEN, head_sizes)
    layers = [layer for layer in net.trunk if isinstance(layer, torch.nn.Linear)]
    weights = [layer.weight.detach() for layer in layers] + [torch.cat([h.weight for h in net.heads]).detach()]
    biases = [layer.bias.detach() for layer in layers] + [torch.cat([h.bias for h in net.heads]).detach()]
    n = len(data)
    for _ in range(epochs):
        shuffled = data.X[torch.randperm(n)]
        for start in range(0, n, batch_size):
            activations = [shuffled[start : start + batch_size]]
            for weight, bias in zip(weights, biases):
                activations.append(torch.addmm(bias, activations[-1], weight.t()))
            grad = activations[-1]  # stands in for the loss gradient: same shape, no extra work
            for i in reversed(range(len(weights))):
                grad.t().mm(activations[i])
                if i > 0:
                    grad = grad.mm(weights[i])


class MaskedMultiTaskCriterion(torch.nn.Module):
    """skorch criterion: y packs the three targets then the three label weights."""

    def forward(self, outputs, packed):
        targets = [packed[:, 0], packed[:, 1].long(), packed[:, 2]]
        losses = []
        for t, kind in enumerate(KINDS):
            weight = packed[:, 3 + t]
            if weight.sum() > 0:
                losses.append(masked_task_loss(outputs[t], targets[t], weight, kind))
        return torch.stack(losses).sum()


def skorch_fit(data: TaskData, head_sizes, batch_size: int, epochs: int, seed: int) -> None:
    from skorch import NeuralNet

    torch.manual_seed(seed)
    packed = torch.column_stack([t.float() for t in data.targets] + [data.weights]).numpy()
    net = NeuralNet(
        UsualReLUNet,
        module__n_features=data.X.shape[1],
        module__hidden_layer_sizes=HIDDEN,
        module__head_sizes=head_sizes,
        criterion=MaskedMultiTaskCriterion,
        optimizer=torch.optim.Adam,
        lr=LEARNING_RATE,
        batch_size=batch_size,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        verbose=0,
    )
    net.fit(data.X.numpy(), packed)


def estimator_fit(X, Y, batch_size: int, epochs: int, seed: int) -> None:
    MultiTaskMLP(
        hidden_layer_sizes=HIDDEN, dropout=0.0, weight_decay=0.0, learning_rate=LEARNING_RATE,
        batch_size=batch_size, max_epochs=epochs, early_stopping=False, ensemble_size=1,
        random_state=seed,
    ).fit(X, Y)


def loop_only(data: TaskData, head_sizes, batch_size: int, epochs: int, seed: int, kinds=KINDS) -> None:
    net = build_network(data.X.shape[1], HIDDEN, head_sizes, 0.0, seed)
    settings = TrainingSettings(learning_rate=LEARNING_RATE, weight_decay=0.0, batch_size=batch_size,
                                max_epochs=epochs, patience=epochs, verbose=0)
    fit_module(net, FixedWeighting([1.0] * 3), list(kinds), list(kinds), data, None, settings, seed)


DEFAULT_FIT_COHORTS = {"synthetic": 6300, "nwtco": None}
PLAIN_NETWORK = "plain multi-task MLP (1 network, batch 128)"
DEFAULT_CONFIGS = {
    "MultiTaskMLP defaults": {},
    PLAIN_NETWORK: {"ensemble_size": 1, "batch_size": 128},
    "defaults with per-outcome early stopping": {"early_stopping": "per_outcome"},
    "earlier defaults (batch 32, learning rate 1e-3)": {"batch_size": 32, "learning_rate": 1e-3},
}


def default_fit_comparison(folds: int, seed: int) -> pd.DataFrame:
    """Per cohort, fold, configuration and outcome: fit seconds and held-out metrics."""
    from compare_models import fold_metrics, load, model_outputs  # a sibling script

    rows = []
    for cohort, n_rows in DEFAULT_FIT_COHORTS.items():
        X, Y = make_synthetic_cohort(n_rows, random_state=seed) if n_rows else load(cohort, seed)
        specs = {spec.name: spec for spec in infer_tasks(Y)}
        for fold, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(X)):
            configs = list(DEFAULT_CONFIGS.items())
            turn = fold % len(configs)  # interleaved, each fold starting at the next, so drifts and the first fit's
            for config, params in configs[turn:] + configs[:turn]:  # place hit every configuration alike
                start = time.perf_counter()
                model = MultiTaskMLP(random_state=seed + fold, **params).fit(X.iloc[train], Y.iloc[train])
                seconds = time.perf_counter() - start
                for name, output in model_outputs(model, X.iloc[test]).items():
                    rows.append({"cohort": f"{cohort} ({len(X):,} patients)", "fold": fold, "configuration": config,
                                 "outcome": name, "seconds": seconds, "epochs": int(model.n_iter_.max())}
                                | fold_metrics(specs[name], Y.iloc[test], output))
            print(f"  {cohort} fold {fold + 1}/{folds} done", flush=True)
    return pd.DataFrame(rows)


def default_fit_lines(results: pd.DataFrame, folds: int) -> list[str]:
    """The report's section on the default configuration."""
    per_fit = results.drop_duplicates(["cohort", "fold", "configuration"])
    seconds = per_fit.groupby(["cohort", "configuration"], sort=False)["seconds"].median()
    fold_seconds = per_fit.set_index(["cohort", "fold", "configuration"])["seconds"].unstack("configuration")
    ratios = fold_seconds.div(fold_seconds[PLAIN_NETWORK], axis=0).groupby(level="cohort", sort=False).median()
    lines = ["", "## The default configuration", "",
             f"`MultiTaskMLP()` against a plain multi-task MLP, {folds}-fold cross-validation, fits interleaved; "
             "seconds are medians over folds of the whole `fit` (preprocessing, every network, calibration), "
             "ratios the medians over folds of each fold's ratio to the plain network's fit of that fold, "
             "metrics are means over folds on the held-out rows (target: defaults at most 2x the plain network).", "",
             "| cohort | configuration | fit seconds | ratio to plain | longest member's epochs |",
             "|---|---|---|---|---|"]
    epochs = per_fit.groupby(["cohort", "configuration"], sort=False)["epochs"].median()
    for (cohort, config), value in seconds.items():
        lines.append(f"| {cohort} | {config} | {value:.1f} | {ratios.loc[cohort, config]:.2f} | "
                     f"{epochs[cohort, config]:.0f} |")
    metrics = [m for m in ("auroc", "log_loss", "rmse") if m in results]
    means = results.groupby(["cohort", "outcome", "configuration"], sort=False)[metrics].mean()
    lines += ["", "| cohort | outcome | configuration | " + " | ".join(metrics) + " |",
              "|---|---|---|" + "---|" * len(metrics)]
    for (cohort, outcome, config), row in means.iterrows():
        cells = ["" if np.isnan(row[m]) else f"{row[m]:.3f}" for m in metrics]
        lines.append(f"| {cohort} | {outcome} | {config} | " + " | ".join(cells) + " |")
    return lines


def paired_ratio(timings: dict, name: str, other: str, batch_size: int) -> float:
    """Median over repeats of ``other``'s seconds over ``name``'s in the same repeat (its speed relative to
    ``other``): pairs run minutes apart at most, so the machine's slow drifts cancel."""
    return statistics.median(b / a for a, b in zip(timings[name, batch_size], timings[other, batch_size]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--output", type=Path, default=REPORTS / "training_speed.md")
    parser.add_argument("--default-folds", type=int, default=5)
    parser.add_argument("--skip-loops", action="store_true", help="only the default configuration")
    args = parser.parse_args()
    torch.set_num_threads(2)
    default_lines = default_fit_lines(default_fit_comparison(args.default_folds, seed=0), args.default_folds)
    print("\n".join(default_lines))
    if args.skip_loops:
        return

    X, heads = make_data(args.rows, seed=0)
    Y, data, head_sizes = heads["regression"]
    Y_survival, survival_data, survival_sizes = heads["survival"]
    runs = {
        "hand-written loop": lambda bs, seed: hand_written(data, head_sizes, bs, args.epochs, seed),
        IN_PLACE_HAND: lambda bs, seed: hand_written(data, head_sizes, bs, args.epochs, seed, MultiHeadNet),
        "skorch NeuralNet": lambda bs, seed: skorch_fit(data, head_sizes, bs, args.epochs, seed),
        "MultiTaskMLP.fit (raw table in)": lambda bs, seed: estimator_fit(X, Y, bs, args.epochs, seed),
        "fit_module (the estimator's loop)": lambda bs, seed: loop_only(data, head_sizes, bs, args.epochs, seed),
        SURVIVAL_FIT: lambda bs, seed: estimator_fit(X, Y_survival, bs, args.epochs, seed),
        SURVIVAL_LOOP: lambda bs, seed: loop_only(survival_data, survival_sizes, bs, args.epochs, seed,
                                                  SURVIVAL_KINDS),
        PRODUCTS_ONLY: lambda bs, seed: products_only(data, head_sizes, bs, args.epochs, seed),
    }
    rates: dict[tuple[str, int], float] = {}
    timings: dict[tuple[str, int], list[float]] = {(name, bs): [] for name in runs for bs in args.batch_sizes}
    for batch_size in args.batch_sizes:
        for repeat in range(args.repeats):  # interleaved, so drifts in machine load hit every method
            for name, run in runs.items():
                start = time.perf_counter()
                run(batch_size, repeat)
                timings[name, batch_size].append(time.perf_counter() - start)
        for name in runs:
            rates[name, batch_size] = args.rows * args.epochs / statistics.median(timings[name, batch_size])
            print(f"batch {batch_size:5d}  {name:36s} {rates[name, batch_size]:>10,.0f} samples/s")

    lines = [
        "# Training speed",
        "",
        f"Generated by `benchmarks/training_speed.py`: {args.rows:,} synthetic patients (40 raw columns, "
        f"{data.X.shape[1]} network inputs after preprocessing), network {data.X.shape[1]} -> "
        f"{' -> '.join(map(str, HIDDEN))} -> heads (binary, 3-class, regression or survival), 20% of labels missing, "
        f"{args.epochs} epochs, median of {args.repeats} interleaved runs, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads on {platform.processor() or platform.machine()} "
        f"({torch.get_num_threads()} cores).",
        "",
        "| method | " + " | ".join(f"batch {bs}: samples/s | ratio" for bs in args.batch_sizes) + " |",
        "|---|" + "---|---|" * len(args.batch_sizes),
    ]
    for name in runs:
        cells = []
        for bs in args.batch_sizes:
            rate = rates[name, bs]
            cells += [f"{rate:,.0f}", f"{paired_ratio(timings, name, 'hand-written loop', bs):.2f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "A survival head in place of the regression head, against the same method with the regression head "
        "(target: at least 0.80):",
        "",
        "| method | " + " | ".join(f"batch {bs}: ratio to its regression-head run" for bs in args.batch_sizes) + " |",
        "|---|" + "---|" * len(args.batch_sizes),
        *[f"| {name} | " + " | ".join(f"{paired_ratio(timings, name, other, bs):.2f}" for bs in args.batch_sizes) + " |"
          for name, other in SURVIVAL_OF.items()],
    ]
    lines += [
        "",
        "Ratios are against the hand-written loop at the same batch size (target: MultiTaskMLP.fit >= 1.00), each",
        "the median over repeats of the ratio within a repeat (the two runs next to each other in time).",
        "`MultiTaskMLP.fit` includes fitting the preprocessor and transforming the raw table; the loop draws one",
        "permutation per epoch, walks contiguous slices and steps a fused AdamW, and its networks apply their",
        "ReLUs in place while training. The hand-written loop and skorch train the same architecture with torch's",
        "usual (out-of-place) ReLU, as a user writes it; the second row is the hand-written loop on the estimator's",
        "network, so that the share of the lead due to the in-place ReLU shows.",
        "The last row is not a loop: only the network's forward and backward matrix products, which every loop",
        "computing these gradients in float32 must do; its ratio is the most any loop could reach here.",
        *default_lines,
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines) + "\n")
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
