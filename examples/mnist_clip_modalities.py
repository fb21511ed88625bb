"""
======================================================
Concepts shared by images and captions (MNIST CLIP)
======================================================

The MP-SAE paper finds that in a vision-language model MP-SAE learns concepts shared by the
image and the text embeddings, where one-layer SAEs split them by modality. Here the
vision-language model is a small CLIP trained on the shipped digits and captions written
several ways ("a handwritten seven", "the digit 7", "7", ...) by
:func:`~skmpsae.datasets.fetch_mnist_clip` (minutes on the first run, then cached). Its
image and caption embeddings share the digit across a real modality gap.

It needs the optional extra (keep your CPU build of torch by pinning it)::

    python -m pip install -e ".[activations]" torch==2.13.0

The file name has no ``plot_`` prefix, so a documentation build does not run it. The measured
comparison, with error bars over seeds, is ``benchmarks/bench_modality.py``.
"""

# %%
# Capture both towers
# -------------------
# ``image_embeds`` and ``text_embeds`` are the projected embeddings, one row per image or
# caption, in the space the two towers share. (CLIP compares them after L2 normalisation, and
# ``benchmarks/bench_modality.py`` normalises them; here they stay as captured, so that the
# report below encodes the very rows the SAEs were fitted on.)
import tempfile
from pathlib import Path

import numpy as np

from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae.activations import capture
from skmpsae.datasets import fetch_mnist_clip, load_mnist, mnist_captions
from skmpsae.inspect import modality_scores, write_report

clip = fetch_mnist_clip(verbose=1)
print(f"zero-shot accuracy {clip.accuracy:.3f}, modality gap {clip.modality_gap:.3f}")
y = load_mnist().target
rng = np.random.default_rng(0)
captions = [mnist_captions(int(d))[rng.integers(8)] for d in y]
work = Path(tempfile.mkdtemp())
(work / "captions.txt").write_text("\n".join(captions) + "\n")
X_image = capture(clip.path, images="mnist", hookpoint="image_embeds", output=work / "i.npy")
X_text = capture(clip.path, texts=captions, hookpoint="text_embeds", output=work / "t.npy")


# %%
# One SAE on both modalities, and each atom's modality
# ----------------------------------------------------
# A score of 0 means an atom fires on captions only, 1 on images only; an atom between 0.1
# and 0.9 is bimodal.
X = np.concatenate([X_image, X_text])
X = X[rng.permutation(len(X))]
mp = MatchingPursuitSAE(n_components=128, n_nonzero_coefs=8, random_state=0)
topk = TopKSAE(n_components=128, n_nonzero_coefs=8, random_state=0)
for model in (mp, topk):
    model.fit(X)
    scores = modality_scores(model, X_image, X_text)
    print(
        f"{type(model).__name__}: {scores.bimodal_fraction:.1%} of the "
        f"{scores.n_firing} firing atoms are bimodal"
    )

# %%
# Browse: top images and top captions side by side
# ------------------------------------------------
# The report takes the image capture and the caption capture together; the index sorts by
# modality score.
site = write_report(mp, [work / "i.npy", work / "t.npy"], work / "report", texts=captions)
print(f"open {site / 'index.html'}")
