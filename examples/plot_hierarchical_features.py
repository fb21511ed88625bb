"""
======================================================
Recovering hierarchical, non-orthogonal features
======================================================

:func:`~skmpsae.datasets.make_hierarchical_features` draws data from a tree of 20 features
(3 parents with 3 children each, 8 singletons) in which features of the same group share a
chosen cosine, so they are far from orthogonal. One-layer encoders (TopK, ReLU) assume
quasi-orthogonal features; matching pursuit explains away what one atom already covers
before picking the next. :func:`~skmpsae.metrics.feature_recovery` scores a learned
dictionary by the best cosine of each true feature with an atom.

The full sweep over cosines, noise levels and seeds is ``benchmarks/bench_hierarchy.py``.
"""

# %%
# Data with a sibling cosine of 0.4
# ---------------------------------
import numpy as np

from skmpsae.datasets import make_hierarchical_features

X, features, activations, tree = make_hierarchical_features(
    3000, sibling_cosine=0.4, magnitude_noise=0.25, random_state=0, return_tree=True
)
X = X.astype(np.float32)
print("active features per sample:", (activations != 0).sum(axis=1).mean())
print("cosine between two parents:", round(float(features[0] @ features[1]), 3))

# %%
# Fit the three autoencoders
# --------------------------
# One atom per true feature; k=2 because a sample has one or two active features, and an
# ``alpha`` giving ReLU a comparable L0. The data have no offset, hence no intercept.
from skmpsae import MatchingPursuitSAE, ReLUSAE, TopKSAE
from skmpsae.metrics import feature_recovery, l0

common = dict(n_components=20, fit_intercept=False, learning_rate=1e-2, max_iter=20, random_state=0)
models = {
    "MP-SAE": MatchingPursuitSAE(n_nonzero_coefs=2, **common),
    "TopK": TopKSAE(n_nonzero_coefs=2, **common),
    "ReLU": ReLUSAE(alpha=2.0, **common),
}
cosines = {}
for name, model in models.items():
    model.fit(X)
    score, cosines[name], _ = feature_recovery(features, model.components_, return_matches=True)
    r2, mean_l0 = model.score(X), l0(model.transform(X))
    print(f"{name:7s} recovery {score:.3f}, R2 {r2:.3f}, L0 {mean_l0:.2f}")

# %%
# Which features each model finds
# -------------------------------
# Best absolute cosine of every true feature with an atom, grouped by its place in the tree.
import matplotlib.pyplot as plt

order = np.argsort(
    [{"parent": 0, "child": 1, "singleton": 2}[kind] for kind in tree.kind], kind="stable"
)
fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
width = 0.27
for offset, (name, values) in enumerate(cosines.items()):
    ax.bar(np.arange(20) + (offset - 1) * width, values[order], width, label=name)
ax.set_xticks(np.arange(20), [f"{tree.kind[i][0]}{i}" for i in order], fontsize="x-small")
ax.set_ylabel("best |cosine| with an atom")
ax.set_ylim(0, 1.05)
ax.legend(fontsize="small")
ax.set_title("p = parent, c = child, s = singleton")
plt.show()
