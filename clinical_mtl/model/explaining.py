"""``MultiTaskMLP.explain``: the estimator's door to :mod:`clinical_mtl.model.explanation`.

Kept apart from :mod:`clinical_mtl.model.estimator` (the 500-line cap) as the
one method whose contract is the explanations' own: what is attributed, on
which scale, at which horizons, and what the returned objects hold.
"""

from __future__ import annotations

from sklearn.utils.validation import check_is_fitted

from .explanation import PROBABILITY, explain_model


class ExplanationMixin:
    """SHAP explanations of a fitted ``MultiTaskMLP``.

    Reads the fitted ``task_specs_``, ``preprocessor_``, ``module_``,
    ``calibrators_`` and ``explanation_background_``.
    """

    def explain(self, X, outcomes=None, *, output=PROBABILITY, horizons=None):
        """SHAP values of every outcome, on the original clinical features.

        The networks' outputs are attributed with DeepLIFT's rescale rule
        (what ``shap.DeepExplainer`` computes), batched over patients and over
        a background of weighted k-means centres of the training rows fixed
        at fit time; the output link (sigmoid, softmax, target scale, the
        survival curve) is carried through exactly, and the columns that each
        clinical variable produced (value and missing indicator, one-hot
        columns) are summed back into it. Where the outcome is recalibrated
        (``calibrators_``), the attributions are carried through the
        recalibration map too. So for every patient and output,
        ``base_values + values summed over features`` equals the model's
        output, the (recalibrated) probability of ``predict_proba``, the value
        of ``predict`` or ``1 - predict_survival_function`` at the horizon
        (see :mod:`clinical_mtl.model.explanation` for why).

        Parameters
        ----------
        X : DataFrame or array-like of shape (n_samples, n_features)
            Raw features of the patients to explain.
        outcomes : list of str, default=None
            Outcomes to explain; None explains all.
        output : {"probability", "log_odds"}, default="probability"
            Scale of classification and survival explanations: the predicted
            probability (what ``predict_proba`` returns), or its log-odds.
            Regression outcomes are always explained in their units.
        horizons : sequence of float, dict of str to sequence or None, default=None
            Times (in the outcome's unit) by which survival outcomes' event
            probabilities are explained, for every survival outcome or per
            outcome (a dict; outcomes it does not name keep their own). Any
            positive times, not only the fitted ``survival_horizons``; sorted,
            duplicates dropped. None explains each survival outcome at all of
            its horizons. Each horizon costs one more output in the backward
            pass, so asking only for the horizon one needs is faster. Ignored
            for the other kinds of outcome.

        Returns
        -------
        dict of str to shap.Explanation
            Per outcome: ``values`` of shape (n_samples, n_features) (binary:
            the probability of ``classes_[outcome][1]``; regression: the value;
            survival explained at one horizon: the probability of the event by
            then) or (n_samples, n_features, n_outputs) (multi-class: one per
            class; survival: the probability of the event by each horizon),
            ``base_values`` per row, ``feature_names`` the columns of ``X``,
            ``data`` the patients' values (categories as their index among the
            training categories), ``display_data`` the values as given
            (category labels, True/False, None for missing), ``output_names``
            naming the outcome and class or horizon.

        Raises
        ------
        ValueError
            For an unknown outcome, ``output`` or a dict of ``horizons`` naming
            no survival outcome being explained; ``horizons`` that are not
            positive finite times.
        """
        check_is_fitted(self)
        return explain_model(self, X, outcomes, output=output, horizons=horizons)
