"""The Mayo Clinic primary biliary cholangitis (PBC) cohort.

418 patients seen at the Mayo Clinic between 1974 and 1984 (312 in a
randomised trial of D-penicillamine, 106 followed for survival only). Source:
the ``pbc`` data set of the R package ``survival`` (T. Therneau), from
Fleming and Harrington, *Counting Processes and Survival Analysis*, Wiley
1991, appendix D. The CSV is shipped unchanged in ``data/pbc.csv`` with its
data dictionary in ``data/README.md``.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

PBC_CSV = resources.files("clinical_mtl.datasets") / "data" / "pbc.csv"

_TREATMENTS = {1.0: "D-penicillamine", 2.0: "placebo"}
_FINDINGS = ["ascites", "hepato", "spiders"]
_LABS = ["bili", "chol", "albumin", "copper", "alk_phos", "ast", "trig", "platelet", "protime"]


def load_pbc() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Load the PBC cohort as a clinical feature table and two outcomes.

    Returns
    -------
    X : DataFrame of shape (418, 16)
        Indexed by the case number ``id``. ``trt`` (D-penicillamine, placebo;
        missing for the 106 patients outside the trial) and ``sex`` (f, m) are
        categorical; ``ascites``, ``hepato`` and ``spiders`` are nullable
        booleans; ``age`` (years), ``edema`` (0, 0.5, 1) and the laboratory
        values ``bili``, ``chol``, ``albumin``, ``copper``, ``alk_phos``
        (``alk.phos`` in the source), ``ast``, ``trig``, ``platelet`` and
        ``protime`` are numeric, NaN where not measured. Follow-up ``time``
        and ``status`` are not features.
    Y : DataFrame of shape (418, 3)
        ``cirrhosis``: histologic stage 4 (1) or stages 1-3 (0), nullable
        integer, missing for the 6 patients without a biopsy.
        ``death_time`` and ``death_event``: the survival outcome ``death``,
        days from registration to death (``death_event`` 1, 161 patients) or
        to the end of follow-up, censored (0): alive at the end of the study
        (232) or at liver transplantation (25), transplant being censored as
        in Fleming and Harrington. Every patient is labelled.

    Both carry ``attrs["dataset"] = "pbc"``, the name MLflow tracking gives
    the data (``clinical_mtl.tracking.dataset_name``).

    Examples
    --------
    >>> from clinical_mtl.datasets import load_pbc
    >>> X, Y = load_pbc()
    >>> X.shape, Y.notna().sum().tolist(), int(Y["death_event"].sum())
    ((418, 16), [412, 418, 418], 161)
    """
    raw = pd.read_csv(PBC_CSV).set_index("id")
    X = pd.DataFrame(index=raw.index)
    X["trt"] = pd.Categorical(raw["trt"].map(_TREATMENTS), categories=sorted(_TREATMENTS.values()))
    X["age"] = raw["age"].astype(float)
    X["sex"] = pd.Categorical(raw["sex"], categories=["f", "m"])
    for finding in _FINDINGS:
        X[finding] = raw[finding].map({0.0: False, 1.0: True}).astype("boolean")
    X["edema"] = raw["edema"].astype(float)
    for lab in _LABS:
        X[lab] = raw[lab.replace("_", ".")].astype(float)

    Y = pd.DataFrame(index=raw.index)
    Y["cirrhosis"] = (raw["stage"] == 4).astype("Int64").mask(raw["stage"].isna())
    Y["death_time"] = raw["time"].astype(float)
    Y["death_event"] = (raw["status"] == 2).astype(float)  # status 0 censored, 1 transplant (censored), 2 dead
    X.attrs["dataset"] = Y.attrs["dataset"] = "pbc"
    return X, Y
