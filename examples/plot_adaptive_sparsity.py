"""
===================================================
Adaptive sparsity: change k at inference, not refit
===================================================

A matching-pursuit encoder removes the best atom's contribution from the residual at every
step, so the residual norm can only go down: a :class:`~skmpsae.MatchingPursuitSAE` trained
with 16 steps can encode with 4 or 64 steps, or until a residual tolerance, and more steps
never reconstruct worse. A :class:`~skmpsae.TopKSAE` can be asked for another k too, but its
encoder was trained for one k only, and extra latents need not help.

The full sweep is ``benchmarks/bench_adaptive.py``.
"""

# %%
# Train both at k=16
# ------------------
from sklearn.model_selection import train_test_split

from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae.datasets import load_mnist
from skmpsae.metrics import l0

X, y = load_mnist(return_X_y=True)
X_train, X_test = train_test_split(X, train_size=4000, test_size=1000, stratify=y, random_state=0)
mp = MatchingPursuitSAE(n_nonzero_coefs=16, max_iter=5, random_state=0).fit(X_train)
topk = TopKSAE(n_nonzero_coefs=16, max_iter=5, random_state=0).fit(X_train)

# %%
# Encode at other sparsities
# --------------------------
# ``transform_n_nonzero_coefs`` is read at every ``transform``; no refitting happens.
results = {"MP-SAE": [], "MP-SAE, OMP encoding": [], "TopK": []}
for k in (2, 4, 8, 16, 32, 64, 128):
    for label, model, algorithm in (
        ("MP-SAE", mp, "mp"),
        ("MP-SAE, OMP encoding", mp, "omp"),
        ("TopK", topk, None),
    ):
        if algorithm is not None:
            model.set_params(transform_algorithm=algorithm)
        model.set_params(transform_n_nonzero_coefs=k)
        codes = model.transform(X_test)
        results[label].append((l0(codes), model.score(X_test)))
    scores = ", ".join(f"{label} R2 {pts[-1][1]:.3f}" for label, pts in results.items())
    print(f"k={k:3d}: {scores}")

# %%
# Or stop at a residual tolerance
# -------------------------------
# With ``transform_tol`` each digit gets as many atoms as it needs: simple digits stop early.
import numpy as np

mp.set_params(transform_algorithm="mp", transform_n_nonzero_coefs=None)
energy = np.mean(np.sum((X_test - mp.intercept_) ** 2, axis=1))
for fraction in (0.3, 0.1):
    codes = mp.set_params(transform_tol=fraction * energy).transform(X_test)
    per_digit = (codes != 0).sum(axis=1)
    print(
        f"residual <= {fraction:.0%} of the mean energy: L0 from {per_digit.min()} to "
        f"{per_digit.max()} (mean {per_digit.mean():.1f}), R2 {mp.score(X_test):.3f}"
    )
mp.set_params(transform_tol=None)

# %%
# The trade-off curves
# --------------------
import matplotlib.pyplot as plt

from skmpsae.plotting import plot_r2_vs_l0

ax = plot_r2_vs_l0(results, logx=True)
ax.axvline(16, color="grey", linestyle=":")
ax.set_title("Trained at k=16 (dotted), encoded at other k")
plt.show()
