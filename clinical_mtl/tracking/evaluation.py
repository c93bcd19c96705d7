"""One outcome of a logged model through ``mlflow.models.evaluate``.

MLflow's default evaluator (3.17) scores one column of predictions: its
classifier takes the labels the model returns (and probabilities only from
the ``predict_proba`` of a scikit-learn, XGBoost or CatBoost flavour, never
from a pyfunc), its regressor the column named by ``predictions=``; and its
SHAP step stops on a categorical, nullable or pyarrow column
(``np.issubdtype`` raises). :func:`evaluate_outcome` therefore predicts
with the logged pyfunc model once, hands MLflow the outcome's labels as the
prediction column, adds the probability metrics as ``extra_metrics`` computed
by scikit-learn from the probability column, and turns MLflow's SHAP step
off (the fit logs the model's own exact explanations).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..exceptions import InputDataError
from ..model.features import as_frame
from ..model.estimator import MultiTaskMLP
from ..model.outputs import PRED, PROBA, column_name
from ..model.tasks import BINARY, REGRESSION, SURVIVAL

_TARGET, _PREDICTION, _PROBABILITY = "target", "prediction", "probability"


def evaluate_outcome(model_uri, data: pd.DataFrame, outcome: str, *, targets: str | None = None,
                     evaluator_config: dict | None = None, extra_metrics: list | None = None):
    """Evaluate one outcome of a logged clinical_mtl model with ``mlflow.models.evaluate``.

    The metrics and MLflow's plots (confusion matrix, residuals...) are logged
    to the active run (or a new one) and linked to the logged model. A
    classification outcome is evaluated as MLflow's ``classifier`` (on the
    predicted labels) plus ``roc_auc``, ``log_loss`` and ``brier_score``
    from the positive class's probability (binary outcomes), a regression
    outcome as MLflow's ``regressor`` on ``<outcome>_pred``. Rows without a
    label are left out. Only aggregates are logged, with MLflow's record of the
    evaluation data (digest, column types and counts, no rows).

    Parameters
    ----------
    model_uri : str or mlflow.pyfunc.PyFuncModel
        A model logged by :func:`clinical_mtl.tracking.log_model` (``runs:/``,
        ``models:/``...), or that model loaded.
    data : DataFrame
        The model's feature columns, with the types the estimator takes
        (category, nullable, pyarrow), and the outcome's labels.
    outcome : str
        A classification or regression outcome of the model.
    targets : str, default=None
        The column of ``data`` holding the labels; default ``outcome``.
    evaluator_config : dict, default=None
        Passed on to MLflow's evaluator, over this function's settings.
    extra_metrics : list of mlflow.models.EvaluationMetric, default=None
        More metrics; their ``eval_fn`` gets ``predictions``, ``targets`` and,
        for a binary outcome, ``probability``.

    Returns
    -------
    mlflow.models.EvaluationResult

    Raises
    ------
    InputDataError
        An outcome the model does not have, a survival outcome (MLflow has no
        survival evaluator: use ``MultiTaskMLP.evaluate``), a missing label
        column or labels that are not the outcome's classes; no value is quoted.

    Examples
    --------
    >>> result = tracking.evaluate_outcome("models:/pbc_mtl@champion", X_test.join(Y_test),
    ...                                    "cirrhosis")  # doctest: +SKIP
    >>> result.metrics["roc_auc"], result.metrics["f1_score"]  # doctest: +SKIP
    """
    import mlflow

    pyfunc = mlflow.pyfunc.load_model(model_uri) if isinstance(model_uri, str) else model_uri
    model = getattr(pyfunc.unwrap_python_model(), "model", None)
    if not isinstance(model, MultiTaskMLP):
        raise InputDataError("evaluate_outcome takes a model logged by clinical_mtl.tracking.log_model.")
    spec = next((spec for spec in model.task_specs_ if spec.name == outcome), None)
    if spec is None:
        raise InputDataError(f"The model has no outcome '{outcome}'; its outcomes are {list(model.tasks_)}.")
    if spec.kind == SURVIVAL:
        raise InputDataError(f"'{outcome}' is a survival outcome, which mlflow.models.evaluate cannot score: "
                             "use MultiTaskMLP.evaluate (concordance, Brier score, calibration by horizon).")
    frame = as_frame(data)
    target = targets or outcome
    if target not in frame.columns:
        raise InputDataError(f"The data has no column '{target}' with the labels of the outcome '{outcome}'.")
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise InputDataError(f"Column '{target}' labels no row.")
    features = [name for name in pyfunc.metadata.get_input_schema().input_names() if name in frame.columns]
    outputs = pyfunc.predict(labelled[features])
    table = pd.DataFrame({_PREDICTION: outputs[column_name(outcome, PRED)].to_numpy()})
    config = {"log_model_explainability": False}
    metrics = list(extra_metrics or [])
    if spec.kind == REGRESSION:
        table[_TARGET] = labelled[target].to_numpy(dtype=np.float64)
        model_type = "regressor"
    else:
        table[_TARGET] = _class_labels(labelled[target], spec, target)
        config |= {"label_list": list(spec.classes)}
        model_type = "classifier"
        if spec.kind == BINARY:
            config |= {"pos_label": spec.classes[1]}
            table[_PROBABILITY] = outputs[column_name(outcome, PROBA, label=spec.classes[1])].to_numpy()
            metrics += _probability_metrics(spec.classes)
    with warnings.catch_warnings():  # MLflow's hint about integer columns concerns model signatures
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        return mlflow.models.evaluate(
            data=table, targets=_TARGET, predictions=_PREDICTION, model_type=model_type, extra_metrics=metrics,
            evaluator_config=config | (evaluator_config or {}), model_id=getattr(pyfunc, "model_id", None),
        )


def _class_labels(labels: pd.Series, spec, column: str) -> np.ndarray:
    """The labels as the outcome's class values (nullable integers become plain ones)."""
    classes = np.asarray(spec.classes)
    values = np.asarray(labels.astype(object).tolist())
    known = np.isin(values, classes)
    if not known.all():
        raise InputDataError(f"Column '{column}' holds {int((~known).sum())} label(s) that are not classes of "
                             f"the outcome '{spec.name}' (expected one of {spec.classes}).")
    return values.astype(classes.dtype)


def _probability_metrics(classes) -> list:
    """roc_auc, log_loss and brier_score of a binary outcome, by scikit-learn, from its probability column."""
    from mlflow.models import make_metric
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    positive = classes[1]

    # Three parameters: MLflow passes (eval_df, builtin_metrics) to a two-parameter function not
    # named (predictions, targets). MLflow first tries each metric on one row: AUROC is NaN there.
    def roc_auc(predictions, targets, probability):
        events = np.asarray(targets == positive)
        return float(roc_auc_score(events, probability)) if 0 < events.sum() < len(events) else float("nan")

    def log_loss_(predictions, targets, probability):
        return float(log_loss(targets == positive, probability, labels=[False, True]))

    def brier_score(predictions, targets, probability):
        return float(brier_score_loss(targets == positive, probability))

    return [make_metric(eval_fn=roc_auc, greater_is_better=True, name="roc_auc"),
            make_metric(eval_fn=log_loss_, greater_is_better=False, name="log_loss"),
            make_metric(eval_fn=brier_score, greater_is_better=False, name="brier_score")]
