"""
=========================================
Matching-pursuit atoms learned from MNIST
=========================================

A :class:`~skmpsae.MatchingPursuitSAE` learns a dictionary whose atoms are used by a
matching-pursuit encoder: each of ``k`` greedy steps picks the atom most correlated with
what is left of the digit. Here it is fitted on 4,000 real MNIST digits, compared on
1,000 held-out digits with a :class:`~skmpsae.TopKSAE` at the same sparsity, and its most
used atoms are shown as images.

The full comparison, with scikit-learn's dictionary learning and timings, is
``benchmarks/bench_mnist.py`` (see ``docs/benchmarks.md``).
"""

# %%
# Load the digits and hold out 1,000
# -----------------------------------
# The shipped digits are sorted by label, so the split is shuffled and stratified.
from sklearn.model_selection import train_test_split

from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae.datasets import load_mnist
from skmpsae.metrics import dead_fraction, l0

X, y = load_mnist(return_X_y=True)
X_train, X_test = train_test_split(X, train_size=4000, test_size=1000, stratify=y, random_state=0)
X_train.shape, X_train.dtype

# %%
# Fit both autoencoders at k=16
# -----------------------------
# Six epochs keep this example quick; the defaults (35 epochs for MP-SAE, 50 for TopK)
# reconstruct better.
mp = MatchingPursuitSAE(n_components=256, n_nonzero_coefs=16, max_iter=6, random_state=0)
topk = TopKSAE(n_components=256, n_nonzero_coefs=16, max_iter=6, random_state=0)
for model in (mp, topk):
    model.fit(X_train)
    codes = model.transform(X_test)
    print(
        f"{type(model).__name__:20s} held-out R2 {model.score(X_test):.3f}, "
        f"L0 {l0(codes):.1f}, dead atoms {dead_fraction(codes):.1%}"
    )

# %%
# The most used atoms
# -------------------
# Titles give each atom's index and the share of held-out digits that use it. Atoms are
# strokes and digit parts, not whole digits: 16 of them add up to one digit.
import matplotlib.pyplot as plt

from skmpsae.plotting import plot_atoms

fig = plot_atoms(mp, usage=mp.transform(X_test), n_atoms=36)
fig.suptitle("MatchingPursuitSAE atoms, most used first")
plt.show()

# %%
# One digit, step by step
# -----------------------
# Encoding the same digit with 1, 2, 4, ... 64 steps, without refitting: every matching
# pursuit step can only shrink the residual, so the reconstruction sharpens steadily.
steps = [1, 2, 4, 8, 16, 32, 64]
fig, axes = plt.subplots(1, len(steps) + 1, figsize=(10, 1.8), layout="constrained")
digit = X_test[:1]
for ax, k in zip(axes, steps, strict=False):  # the last axes shows the digit
    mp.set_params(transform_n_nonzero_coefs=k)
    ax.imshow(mp.inverse_transform(mp.transform(digit)).reshape(28, 28), cmap="gray_r")
    ax.set_title(f"k={k}", fontsize="small")
axes[-1].imshow(digit.reshape(28, 28), cmap="gray_r")
axes[-1].set_title("original", fontsize="small")
for ax in axes:
    ax.set_axis_off()
mp.set_params(transform_n_nonzero_coefs=None)
plt.show()
