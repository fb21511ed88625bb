"""Metrics for sparse autoencoders: reconstruction, sparsity, dictionary geometry, the
recovery of known ground-truth features (SynthSAEBench's MCC, uniqueness, F1, shrinkage), the
fidelity of an SAE spliced into its model, and the usefulness of its latents as SAEBench
measures it (sparse probing, first-letter feature absorption).

Every function takes plain array-likes (NumPy arrays, SciPy sparse matrices where noted)
and returns Python floats or NumPy arrays, never NaN. Dictionaries follow the
scikit-learn convention of ``components_``: one atom per **row**, shape
``(n_components, n_features)``.

:func:`explained_variance_scorer` and :func:`neg_l0_scorer` have the
``scorer(estimator, X, y=None)`` signature that scikit-learn accepts wherever it takes
``scoring=`` (``cross_validate``, ``GridSearchCV``...), so they need no ``make_scorer``
wrapping.
"""

# Each family of metrics lives in a private module of its own; all are published here.
from ._activations.splice import spliced_embedding_cosine, spliced_lm_metrics
from ._metrics.absorption import absorption
from ._metrics.detection import detection_scores, ground_truth_scores, shrinkage
from ._metrics.dictionary import babel, feature_recovery, mutual_coherence
from ._metrics.ground_truth import feature_uniqueness, mean_correlation_coefficient
from ._metrics.probing import sparse_probing
from ._metrics.reconstruction import (
    component_usage,
    dead_components,
    dead_fraction,
    explained_variance,
    explained_variance_scorer,
    l0,
    neg_l0_scorer,
)
from ._metrics.tasks import token_task_labels

__all__ = [
    "explained_variance",
    "l0",
    "component_usage",
    "dead_components",
    "dead_fraction",
    "mutual_coherence",
    "babel",
    "feature_recovery",
    "mean_correlation_coefficient",
    "feature_uniqueness",
    "detection_scores",
    "shrinkage",
    "ground_truth_scores",
    "explained_variance_scorer",
    "neg_l0_scorer",
    "spliced_lm_metrics",
    "spliced_embedding_cosine",
    "sparse_probing",
    "token_task_labels",
    "absorption",
]
