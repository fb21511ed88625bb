"""
==================================================
Matching-pursuit features of a vision transformer
==================================================

The MP-SAE paper takes apart the patch tokens of pretrained vision transformers. No hub is
needed to try the workflow: :func:`~skmpsae.datasets.fetch_mnist_vit` trains a small ViT on
the digits shipped with skmpsae (a few CPU minutes on the first run, then cached under
``~/.cache/skmpsae/models``, or ``$SKMPSAE_HOME/models``), and saves it as a Hugging Face model
folder. The rest is what you would run on CLIP, DINOv2 or SigLIP (see :doc:`/vision`):
capture the patch tokens of one block, fit an SAE, score it, and browse its atoms with a heat
map over each image.

It needs the optional extra (keep your CPU build of torch by pinning it)::

    python -m pip install -e ".[activations]" torch==2.13.0

The file name has no ``plot_`` prefix, so a documentation build does not run it. The full
comparison of the six SAEs is ``benchmarks/bench_vision.py``.
"""

# %%
# A ViT trained on the digits
# ---------------------------
# 4,000 digits train it, 1,000 held-out digits score it. The folder loads with
# ``AutoModel.from_pretrained`` and ``AutoImageProcessor.from_pretrained``.
import tempfile
from pathlib import Path

from skmpsae import MatchingPursuitSAE
from skmpsae.activations import capture
from skmpsae.datasets import fetch_mnist_vit
from skmpsae.inspect import write_report
from skmpsae.metrics import explained_variance, l0

vit = fetch_mnist_vit(verbose=1)
print(f"held-out accuracy {vit.accuracy:.3f}; model folder {vit.path}")

# %%
# Capture the patch tokens of the third block
# -------------------------------------------
# One row per patch token (16 per digit: 7x7-pixel patches on a 4x4 grid); the provenance
# records each row's image and patch position, which the report uses for its heat maps.
work = Path(tempfile.mkdtemp())
X = capture(vit.path, images="mnist", hookpoint="layers.2", output=work / "patches.npy", verbose=1)
X.shape

# %%
# Fit an MP-SAE and score it on held-out digits
# ---------------------------------------------
# The shipped digits are sorted by label and each contributes 16 consecutive rows, so every
# fifth digit (all its patches) is held out, which keeps every label on both sides.
import numpy as np

held_out = (np.arange(X.shape[0]) // 16) % 5 == 0
X_train, X_test = np.asarray(X[~held_out]), np.asarray(X[held_out])
sae = MatchingPursuitSAE(n_components=384, n_nonzero_coefs=16, max_iter=10, random_state=0)
sae.fit(X_train)
codes = sae.transform(X_test)
print(f"held-out R2 {explained_variance(X_test, sae.inverse_transform(codes)):.3f}")
print(f"L0 {l0(codes):.1f}")

# %%
# Browse the atoms
# ----------------
# Each atom's page shows its top digits with the atom's activation on each patch drawn over
# them, and digits from lower activation bands. The image source is read from the capture's
# metadata; open ``report/index.html`` in a browser.
site = write_report(sae, work / "patches.npy", work / "report")
print(f"open {site / 'index.html'}")
