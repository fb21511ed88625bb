"""Shared concepts across modalities: SAEs on the image and caption embeddings of the MNIST
vision-language model (:func:`skmpsae.datasets.fetch_mnist_clip`, trained here on first run).

The 5,000 shipped digits go through the vision tower (``image_embeds``, one row per digit) and
each digit's caption (one of the wordings of :func:`~skmpsae.datasets.mnist_captions`, drawn per
digit) through the text tower (``text_embeds``), both captured with
:func:`skmpsae.activations.capture` and L2-normalised, as CLIP compares them. Per seed, the 4,000
training digits of that seed's stratified split and their captions train one SAE of each kind
(``MatchingPursuitSAE``, ``TopKSAE``, ``BatchTopKSAE``, ``MatryoshkaSAE``; 128 atoms, k=8) on the
image and caption rows shuffled together; on the 1,000 held-out digits and their captions:

* each atom's modality score, :func:`skmpsae.inspect.modality_scores` (share of activation mass
  from image rows, per row of each modality), its histogram, and the fraction of bimodal atoms
  (score in [0.1, 0.9]) among the atoms that fire;
* for each digit, the Jaccard overlap between the 8 atoms of highest mean activation on its image
  rows and the 8 on its caption rows, averaged over the ten digits;
* R2 of each modality's rows.

Tables show mean ± sd over ``--seeds`` seeds (split, caption draw and SAE seeds; one CLIP model).
Captures are cached under ``--cache-dir`` (default ``~/.cache/skmpsae/bench``), so a rerun
resumes; results per seed and model in ``modality_runs.json`` there.
Run: ``python benchmarks/bench_modality.py`` (about 5 minutes single-threaded, plus 5 to 10 to
train the model on first run).
"""

import json
from pathlib import Path

import numpy as np
from _common import (
    aggregate,
    limit_threads,
    markdown_table,
    parser,
    save_figure,
    use_agg,
    write_table,
)

from skmpsae import BatchTopKSAE, MatchingPursuitSAE, MatryoshkaSAE, TopKSAE
from skmpsae.activations import capture
from skmpsae.datasets import fetch_mnist_clip, load_mnist, mnist_captions
from skmpsae.inspect import modality_scores
from skmpsae.metrics import explained_variance

MODELS = {
    "MatchingPursuitSAE": MatchingPursuitSAE,
    "TopKSAE": TopKSAE,
    "BatchTopKSAE": BatchTopKSAE,
    "MatryoshkaSAE": MatryoshkaSAE,
}
N_COMPONENTS, K, N_TOP = 128, 8, 8
BINS = np.linspace(0, 1, 21)


def cached_capture(output, **kwargs):
    """The rows of a finished capture at ``output``, else captured now."""
    if Path(str(output) + ".meta.json").is_file():
        return np.load(output, mmap_mode="r")
    return capture(output=output, overwrite=True, **kwargs)


def captured(cache, seed):
    """Image and caption rows of all 5,000 digits (captions drawn with ``seed``), normalised."""
    clip = fetch_mnist_clip(verbose=1)
    y = load_mnist().target
    images = cached_capture(
        cache / "image.npy", model=str(clip.path), images="mnist", hookpoint="image_embeds"
    )
    rng = np.random.default_rng(seed)
    texts = [mnist_captions(int(d))[rng.integers(len(mnist_captions(0)))] for d in y]
    captions = cached_capture(
        cache / f"text_{seed}.npy", model=str(clip.path), texts=texts, hookpoint="text_embeds"
    )

    def unit(a):
        a = np.asarray(a, dtype=np.float32)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return unit(images), unit(captions), y, clip


def jaccard(model, X_image, X_text, y):
    """Mean over digits of |A ∩ B| / |A ∪ B|, A and B the top-8 atoms by mean activation on the
    digit's image rows and on its caption rows."""
    codes_i, codes_t = model.transform(X_image), model.transform(X_text)
    values = []
    for d in range(10):
        a = set(np.argsort(-codes_i[y == d].mean(0), kind="stable")[:N_TOP].tolist())
        b = set(np.argsort(-codes_t[y == d].mean(0), kind="stable")[:N_TOP].tolist())
        values.append(len(a & b) / len(a | b))
    return float(np.mean(values))


def run_seed(cache, seed, done):
    from sklearn.model_selection import train_test_split

    X_image, X_text, y, _ = captured(cache, seed)
    idx = np.arange(len(y))
    train, test = train_test_split(
        idx, train_size=4000, test_size=1000, stratify=y, random_state=seed
    )
    X_train = np.concatenate([X_image[train], X_text[train]])
    X_train = X_train[np.random.default_rng(seed).permutation(len(X_train))]
    for name, cls in MODELS.items():
        key = f"{name}/{seed}"
        if key in done:
            continue
        model = cls(n_components=N_COMPONENTS, n_nonzero_coefs=K, random_state=seed)
        model.fit(X_train)
        scores = modality_scores(model, X_image[test], X_text[test])
        r2 = {
            m: explained_variance(X[test], model.inverse_transform(model.transform(X[test])))
            for m, X in (("image", X_image), ("text", X_text))
        }
        done[key] = {
            "model": name,
            "seed": seed,
            "bimodal": scores.bimodal_fraction,
            "n_firing": scores.n_firing,
            "jaccard": jaccard(model, X_image[test], X_text[test], y[test]),
            "r2_image": float(r2["image"]),
            "r2_text": float(r2["text"]),
            "scores": [None if np.isnan(s) else float(s) for s in scores.scores],
        }
        print(f"{key}: bimodal {scores.bimodal_fraction:.3f}, Jaccard {done[key]['jaccard']:.3f}")
        (cache / "modality_runs.json").write_text(json.dumps(done))


def plot(done):
    plt = use_agg()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(13, 3), sharey=True)
    for ax, name in zip(axes, MODELS, strict=True):
        values = [
            s for r in done.values() if r["model"] == name for s in r["scores"] if s is not None
        ]
        runs = sum(r["model"] == name for r in done.values())
        ax.hist(values, bins=BINS, weights=np.full(len(values), 1 / max(runs, 1)), color="#e07b00")
        ax.axvspan(0.1, 0.9, color="#ddd", zorder=0)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("modality score (0 text, 1 image)")
    axes[0].set_ylabel("atoms per run")
    fig.suptitle("Per-atom modality scores on the MNIST vision-language model (grey: bimodal)")
    fig.tight_layout()
    save_figure(fig, "modality_scores.png")


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "skmpsae" / "bench")
    args = p.parse_args()
    limit_threads(args.threads)
    cache = args.cache_dir / "modality"
    cache.mkdir(parents=True, exist_ok=True)
    runs = cache / "modality_runs.json"
    done = json.loads(runs.read_text()) if runs.is_file() else {}
    for seed in range(args.seeds):
        run_seed(cache, seed, done)
    _, _, _, clip = captured(cache, 0)
    rows = aggregate(
        [{k: v for k, v in r.items() if k != "scores"} for r in done.values()], ["model"]
    )
    table = markdown_table(
        rows,
        [
            ("model", "model", ""),
            ("bimodal", "bimodal atoms", ".3f"),
            ("jaccard", "image/caption Jaccard (top 8)", ".3f"),
            ("n_firing", "firing atoms", ".1f"),
            ("r2_image", "R2 images", ".3f"),
            ("r2_text", "R2 captions", ".3f"),
            ("n_runs", "seeds", ""),
        ],
    )
    note = (
        f"\n\nMNIST CLIP: zero-shot accuracy {clip.accuracy:.3f} on its 1,000 held-out digits, "
        f"modality gap {clip.modality_gap:.3f} (distance between the mean unit image and caption "
        "embeddings)."
    )
    print(table + note)
    if not args.no_write:
        write_table("modality", table + note)
    if not args.no_plot:
        plot(done)


if __name__ == "__main__":
    main()
