"""Small models of the synthetic cohort saved with its cohort schema, shared by the scoring-side tests."""

from clinical_mtl import MultiTaskMLP
from clinical_mtl.data.persistence import save_model
from clinical_mtl.datasets import make_synthetic_cohort, synthetic_schema


def save_schema_model(folder, n_patients=200, random_state=0, **params):
    """Fit a model of the synthetic cohort (small by default) and save it with its cohort schema: its folder."""
    X, Y = make_synthetic_cohort(n_patients, random_state=random_state)
    schema = synthetic_schema()
    settings = {"hidden_layer_sizes": (8,), "max_epochs": 10, "ensemble_size": 1, "random_state": 0} | params
    return save_model(MultiTaskMLP(tasks=schema.tasks, **settings).fit(X, Y), folder, schema=schema)
