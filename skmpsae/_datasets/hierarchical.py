"""The hierarchical toy data's tree (arXiv:2506.03093), behind
:func:`skmpsae.datasets.make_hierarchical_features`: which features are parents, children and
singletons, how often each fires, and the frames that give siblings a set cosine."""

import numpy as np
from sklearn.utils import Bunch

# The tree of arXiv:2506.03093's synthetic benchmark (docs/design.md, "The hierarchical toy
# data"), in feature order: parents, then children (parent by parent), then singletons.
_N_PARENTS, _N_CHILDREN_PER_PARENT, _N_SINGLETONS = 3, 3, 8
_N_TREE_FEATURES = _N_PARENTS * (1 + _N_CHILDREN_PER_PARENT) + _N_SINGLETONS  # 20
_PARENT_PROB, _SINGLETON_PROB, _CHILD_PROB = 0.2, 0.05, 0.2
_MAGNITUDE_MEAN = 1.5


def _tree():
    parents = np.arange(_N_PARENTS)
    children = _N_PARENTS + np.arange(_N_PARENTS * _N_CHILDREN_PER_PARENT).reshape(
        _N_PARENTS, _N_CHILDREN_PER_PARENT
    )
    singletons = np.arange(_N_PARENTS * (1 + _N_CHILDREN_PER_PARENT), _N_TREE_FEATURES)
    top_level = np.concatenate([parents, singletons])
    parent_of = np.full(_N_TREE_FEATURES, -1)
    for p in parents:
        parent_of[children[p]] = p
    kind = np.array(
        ["parent"] * _N_PARENTS + ["child"] * children.size + ["singleton"] * _N_SINGLETONS
    )
    top_level_prob = np.where(np.isin(top_level, parents), _PARENT_PROB, _SINGLETON_PROB)
    return Bunch(
        parents=parents,
        children=children,
        singletons=singletons,
        top_level=top_level,
        parent_of=parent_of,
        kind=kind,
        groups=[top_level] + list(children),
        top_level_prob=top_level_prob,
        child_prob=np.full(_N_CHILDREN_PER_PARENT, _CHILD_PROB),
    )


def _equal_cosine_frame(m, cosine):
    """Matrix ``A`` (m, m) with ``A A^T = (1 - c) I + c 11^T``: rows are unit vectors
    with pairwise cosine ``c`` expressed in an m-dimensional orthonormal basis.

    ``A`` is the symmetric square root of that Gram matrix, whose eigenvalues are
    ``1 - c`` (on the complement of the all-ones vector) and ``1 + (m - 1) c`` (on it).
    Keeping each group inside its own m basis vectors is what makes a parent exactly
    orthogonal to its children, and needs no more than 20 dimensions for 20 features.
    """
    ones = np.full((m, m), 1.0 / m)
    return np.sqrt(1.0 - cosine) * (np.eye(m) - ones) + np.sqrt(1.0 + (m - 1) * cosine) * ones
