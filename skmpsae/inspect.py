"""What each atom responds to: top-activating rows and their contexts, firing statistics,
effects on a language model's logits, and matching pursuit's hierarchy of atoms.

Every function streams over the rows (a ``numpy.memmap`` is read chunk by chunk, never copied)
and keeps O(n_components x n_top) per-atom state; the numbers are exact, except the quantiles,
which are read off each atom's histogram (to within one bin, at most ``2 * max / n_bins``).
Works for the six estimators. ``skmpsae report`` turns the results into a feature browser.

Matching pursuit selects atoms one after another; :func:`feature_statistics` records the step
at which each atom is selected and how often atom ``j`` is selected after atom ``i`` in the
same row, and :func:`atom_hierarchy` turns that into a parent -> children tree (the MP-SAE
paper's claim: a parent is selected before its children). For the other encoders the pairs
are unordered co-activations.

:func:`explain` and :func:`score_explanations` run automated interpretability with any
explainer and scorer (a local or remote language model behind a callable), by the detection
protocol of SAEBench and delphi; the shipped baselines make the score a number offline.
"""

# Each function lives in the private module of its job; all are published here.
from ._inspect.autointerp import (
    baseline_explainer,
    baseline_scorer,
    explain,
    score_explanations,
)
from ._inspect.contexts import context_activations, context_windows, logit_effects
from ._inspect.modality import ModalityScores, modality_scores
from ._inspect.report import write_report
from ._inspect.stats import feature_statistics
from ._inspect.tree import atom_hierarchy, hierarchy_recovery

__all__ = [
    "atom_hierarchy",
    "baseline_explainer",
    "baseline_scorer",
    "explain",
    "score_explanations",
    "context_activations",
    "context_windows",
    "feature_statistics",
    "hierarchy_recovery",
    "logit_effects",
    "modality_scores",
    "ModalityScores",
    "write_report",
]
