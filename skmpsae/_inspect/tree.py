"""Atoms' parents and children from how often atoms fire together, and the tree's recovery on
data whose tree is known."""

from numbers import Real

import numpy as np
from sklearn.utils import Bunch

from .._compat import Interval, validate_params


def _hierarchy(frequency, pair_counts, ordered, min_probability):
    """parent (K,) (-1: none), its conditional probability, the share of the rows selecting
    both where the parent came first (``ordered`` counts; NaN-free, 0 without a parent), and
    P (sparse): P[i, j] = P(i fires | j fires), for the admissible pairs."""
    from scipy import sparse

    K = frequency.size
    ordered_counts = pair_counts.tocsr().astype(np.float64)
    counts = (ordered_counts + ordered_counts.T).tocoo()
    i, j, c = counts.row, counts.col, counts.data
    prob = c / np.maximum(frequency[j], 1)
    # A parent fires more often than its child (ties: the lower atom id is the parent).
    allowed = (frequency[i] > frequency[j]) | ((frequency[i] == frequency[j]) & (i < j))
    i, j, prob = i[allowed], j[allowed], prob[allowed]
    parent = np.full(K, -1, dtype=np.int64)
    probability = np.zeros(K)
    # Best candidate per child: sort by child, then probability descending, then parent id.
    order = np.lexsort((i, -prob, j))
    i, j, prob = i[order], j[order], prob[order]
    first = np.ones(j.size, dtype=bool)
    first[1:] = j[1:] != j[:-1]
    best_i, best_j, best_p = i[first], j[first], prob[first]
    accept = best_p >= min_probability
    parent[best_j[accept]] = best_i[accept]
    probability[best_j] = best_p
    conditional = sparse.csr_matrix((prob, (i, j)), shape=(K, K))
    first_share = np.zeros(K)
    kids = np.flatnonzero(parent >= 0)
    if ordered and kids.size:
        before = np.asarray(ordered_counts[parent[kids], kids]).ravel()
        after = np.asarray(ordered_counts[kids, parent[kids]]).ravel()
        first_share[kids] = before / np.maximum(before + after, 1)
    return parent, probability, first_share, conditional


def _recovery(components, parent, features, true_parent):
    """Match atoms to true features (one to one, by absolute cosine), then the share of the true
    parent -> child links that ``parent`` gives, and the share of the predicted links among
    matched atoms that are true."""
    from scipy.optimize import linear_sum_assignment

    D = components / np.linalg.norm(components, axis=1, keepdims=True)
    F = features / np.linalg.norm(features, axis=1, keepdims=True)
    cos = np.abs(F @ D.T)  # (n_features, n_components)
    feat, atom = linear_sum_assignment(-cos)
    atom_of = np.full(F.shape[0], -1)
    atom_of[feat] = atom
    feature_of = {int(a): int(f) for f, a in zip(feat, atom, strict=True)}
    children = np.flatnonzero(true_parent >= 0)
    hits = sum(int(parent[atom_of[c]] == atom_of[true_parent[c]]) for c in children)
    predicted = [
        (feature_of[int(p)], feature_of[int(c)])
        for c, p in enumerate(parent)
        if p >= 0 and int(c) in feature_of and int(p) in feature_of
    ]
    correct = sum(int(true_parent[c] == p) for p, c in predicted)
    return (
        hits / max(children.size, 1),
        correct / len(predicted) if predicted else 0.0,
        float(cos[feat, atom].mean()),
    )


@validate_params(
    {
        "statistics": [Bunch, dict],
        "min_probability": [Interval(Real, 0, 1, closed="both")],
    },
    prefer_skip_nested_validation=True,
)
def atom_hierarchy(statistics, *, min_probability=0.5):
    """A parent -> children tree of atoms from the pairs counted by :func:`feature_statistics`.

    The parent of atom ``j`` is the atom ``i`` that fires more often than ``j`` and maximises
    ``P(i | j)``, the share of the rows where ``j`` fires in which ``i`` fires too (matching
    pursuit: is selected in the same pursuit; other encoders: is active, i.e. co-activation).
    It is kept if that share is at least ``min_probability``. For matching pursuit, "fires"
    means selected among the steps that :func:`feature_statistics` counts for pairs: the
    pursuit taken to ``pair_steps`` steps, each row cut at the first step whose atom's cosine
    with the residual is below ``pair_min_cosine`` (so a parent is found where the child's
    atom absorbed part of it, and a child is not counted where an atom only fits a residual
    of overlaps). The order of selection plays no part: which of a parent and its child the
    pursuit picks first follows their magnitudes in the row. ``parent_first`` says in what
    share of the rows selecting both the parent came first.

    Parameters
    ----------
    statistics : Bunch
        The result of :func:`feature_statistics` with ``pair_steps > 0`` (its
        ``pair_frequency``, or ``frequency`` where absent, orders parent and child).
    min_probability : float, default=0.5
        Smallest conditional probability that makes ``i`` the parent of ``j``.

    Returns
    -------
    hierarchy : :class:`~sklearn.utils.Bunch`
        ``parent`` (n_components,), the parent atom or -1; ``probability`` (n_components,),
        the best candidate's conditional probability (whether kept or not);
        ``parent_first`` (n_components,), for matching pursuit the share of co-selections
        where the parent came first (0 without a parent; None for other encoders);
        ``children``, a
        list of arrays, the children of each atom; ``conditional``, the sparse matrix of
        ``P(i | j)`` over the admissible pairs.

    See Also
    --------
    hierarchy_recovery : Score the tree against a known one.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import atom_hierarchy, feature_statistics
    >>> X = np.random.RandomState(0).rand(300, 10).astype(np.float32)
    >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=3, max_iter=2,
    ...                          random_state=0).fit(X)
    >>> tree = atom_hierarchy(feature_statistics(sae, X))
    >>> tree.parent.shape
    (16,)
    """
    counts = statistics.get("pair_counts")
    if counts is None:
        raise ValueError(
            "statistics has no pair_counts: compute them with feature_statistics(pair_steps>0)."
        )
    # Statistics from before pair_frequency: the codes' frequency was the pairs' too.
    frequency = statistics.get("pair_frequency")
    if frequency is None:
        frequency = statistics["frequency"]
    parent, probability, parent_first, conditional = _hierarchy(
        np.asarray(frequency), counts, bool(statistics["ordered"]), min_probability
    )
    children = [np.flatnonzero(parent == i) for i in range(parent.size)]
    return Bunch(
        parent=parent,
        probability=probability,
        parent_first=parent_first if statistics["ordered"] else None,
        children=children,
        conditional=conditional,
    )


@validate_params(
    {
        "components": ["array-like"],
        "parent": ["array-like"],
        "features": ["array-like"],
        "true_parent": ["array-like"],
    },
    prefer_skip_nested_validation=True,
)
def hierarchy_recovery(components, parent, features, true_parent):
    """How much of a known feature tree a tree of atoms recovers.

    Atoms are matched one to one to the true features (largest total absolute cosine, Hungarian
    algorithm); a true link ``p -> c`` is recovered when the atom matched to ``c`` has the atom
    matched to ``p`` as its parent.

    Parameters
    ----------
    components : array-like of shape (n_components, n_features)
        The atoms.
    parent : array-like of shape (n_components,)
        Each atom's parent (-1: none), e.g. ``atom_hierarchy(...).parent``.
    features : array-like of shape (n_true, n_features)
        The true feature directions.
    true_parent : array-like of shape (n_true,)
        Each true feature's parent (-1: none), e.g. ``tree.parent_of`` from
        :func:`skmpsae.datasets.make_hierarchical_features`.

    Returns
    -------
    recall : float
        Share of the true links recovered.
    precision : float
        Share of the links predicted between matched atoms that are true (0 if none).
    match_cosine : float
        Mean absolute cosine of the matched (feature, atom) pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.inspect import hierarchy_recovery
    >>> F = np.eye(3)
    >>> hierarchy_recovery(F, [-1, 0, 0], F, [-1, 0, 0])
    (1.0, 1.0, 1.0)
    """
    components = np.asarray(components, dtype=float)
    features = np.asarray(features, dtype=float)
    parent = np.asarray(parent).astype(np.int64)
    true_parent = np.asarray(true_parent).astype(np.int64)
    if components.ndim != 2 or features.ndim != 2 or components.shape[1] != features.shape[1]:
        raise ValueError(
            f"components {components.shape} and features {features.shape} must be 2-D with "
            "the same number of columns."
        )
    if parent.shape != (components.shape[0],) or true_parent.shape != (features.shape[0],):
        raise ValueError("parent and true_parent need one entry per atom and per feature.")
    if components.shape[0] < features.shape[0]:
        raise ValueError(
            f"{components.shape[0]} atoms cannot be matched one to one to "
            f"{features.shape[0]} features."
        )
    recall, precision, cosine = _recovery(components, parent, features, true_parent)
    return float(recall), float(precision), cosine
