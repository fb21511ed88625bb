"""Atoms' parents and children from how often atoms fire together, and the tree's recovery on
data whose tree is known."""

import numpy as np


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
