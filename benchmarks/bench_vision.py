"""R2 against L0 on a real vision model: the patch tokens and the CLS token of the MNIST ViT
(:func:`skmpsae.datasets.fetch_mnist_vit`, trained here on first run), as the MP-SAE paper plots
them for pretrained ViTs.

The 5,000 shipped digits go through the ViT; :func:`skmpsae.activations.capture` keeps the
output of its third block (``layers.2``, width 96) for the 16 patch tokens of each digit
(``image_tokens="patches"``) and for its CLS token (``"cls"``). Per seed, the images of the
seed's stratified 4,000 / 1,000 split give the training and held-out rows (patch rows:
``--patch-rows`` drawn from the training images' 64,000, and 4,000 from the held-out images').
Compared, with 384 atoms and ``--max-iter`` epochs:

* ``MatchingPursuitSAE``, ``TopKSAE``, ``BatchTopKSAE`` and ``MatryoshkaSAE`` at k in ``KS``;
* ``ReLUSAE`` and ``JumpReLUSAE`` over a sweep of ``alpha`` (their L0 is what it reaches);
* MP-SAE's adaptive sparsity: the k=16 model encoding at k = 2..64 without refitting
  (``transform_n_nonzero_coefs``), against TopK's k=16 encoder asked for the same k;
* the coherence of each k=16 dictionary: mutual coherence and babel at p=16.

Tables show mean ± sd over ``--seeds`` seeds. Captures and per-run results are cached under
``--cache-dir`` (default ``~/.cache/skmpsae/bench``), so a rerun resumes.
Run: ``python benchmarks/bench_vision.py`` (about 15 minutes single-threaded, plus a few to train
the ViT on first run).
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
from sklearn.model_selection import train_test_split

from skmpsae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TopKSAE,
)
from skmpsae.activations import capture
from skmpsae.datasets import fetch_mnist_vit, load_mnist
from skmpsae.metrics import babel, explained_variance, l0, mutual_coherence

HOOKPOINT, N_COMPONENTS = "layers.2", 384
KS = (4, 8, 16, 32)
ADAPTIVE_KS = (2, 4, 8, 12, 16, 24, 32, 48, 64)
FITTED_AT_K = {
    "MatchingPursuitSAE": MatchingPursuitSAE,
    "TopKSAE": TopKSAE,
    "BatchTopKSAE": BatchTopKSAE,
    "MatryoshkaSAE": MatryoshkaSAE,
}
SWEPT = {"ReLUSAE": (ReLUSAE, (0.3, 1.0, 3.0)), "JumpReLUSAE": (JumpReLUSAE, (3e-3, 1e-2, 3e-2))}
TOKENS = ("patches", "cls")


def rows_of(cache, tokens):
    """The captured rows and, per row, its image's index."""
    output = cache / f"vit_{tokens}.npy"
    if not Path(str(output) + ".meta.json").is_file():
        vit = fetch_mnist_vit(verbose=1)
        capture(
            str(vit.path),
            images="mnist",
            hookpoint=HOOKPOINT,
            image_tokens=tokens,
            output=output,
            overwrite=True,
        )
    X = np.load(output)
    image = np.load(str(output) + ".tokens.npy")[:, 0]
    return X, image


def split(X, image, seed, n_train, n_test):
    y = load_mnist().target
    train, test = train_test_split(
        np.arange(len(y)), train_size=4000, test_size=1000, stratify=y, random_state=seed
    )
    rng = np.random.default_rng(seed)
    tr = np.flatnonzero(np.isin(image, train))
    te = np.flatnonzero(np.isin(image, test))
    tr = rng.choice(tr, size=min(n_train, tr.size), replace=False)
    te = rng.choice(te, size=min(n_test, te.size), replace=False)
    return X[np.sort(tr)], X[np.sort(te)]


def score(model, X):
    codes = model.transform(X)
    return float(explained_variance(X, model.inverse_transform(codes))), float(l0(codes))


def run(cache, tokens, seed, args, done, runs):
    X, image = rows_of(cache, tokens)
    X_train, X_test = split(X, image, seed, args.patch_rows, 4000)
    fits = [(n, c, {"n_nonzero_coefs": k}, k) for n, c in FITTED_AT_K.items() for k in KS]
    fits += [(n, c, {"alpha": a}, a) for n, (c, alphas) in SWEPT.items() for a in alphas]
    for name, cls, params, setting in fits:
        key = f"{tokens}/{seed}/{name}/{setting}"
        if key in done:
            continue
        model = cls(N_COMPONENTS, max_iter=args.max_iter, random_state=seed, **params)
        model.fit(X_train)
        r2, mean_l0 = score(model, X_test)
        row = {"tokens": tokens, "seed": seed, "model": name, "setting": setting}
        row.update(r2=r2, l0=mean_l0)
        if setting == 16:
            D = model.components_
            row.update(coherence=float(mutual_coherence(D)), babel=float(babel(D, 16)))
            if name in ("MatchingPursuitSAE", "TopKSAE"):
                curve = []
                for k in ADAPTIVE_KS:
                    model.set_params(transform_n_nonzero_coefs=min(k, N_COMPONENTS))
                    curve.append(score(model, X_test))
                row["adaptive"] = curve
        done[key] = row
        print(f"{key}: R2 {r2:.3f} at L0 {mean_l0:.1f}", flush=True)
        runs.write_text(json.dumps(done))


def tables(done):
    out = {}
    for tokens in TOKENS:
        rows = [r for r in done.values() if r["tokens"] == tokens]
        merged = aggregate(
            [{k: v for k, v in r.items() if k not in ("adaptive", "seed")} for r in rows],
            ["model", "setting"],
        )
        out[f"vision-{tokens}"] = markdown_table(
            merged,
            [
                ("model", "model", ""),
                ("setting", "k or alpha", ""),
                ("r2", "held-out R2", ".3f"),
                ("l0", "L0", ".1f"),
                ("coherence", "coherence (k=16)", ".3f"),
                ("babel", "babel p=16 (k=16)", ".2f"),
                ("n_runs", "seeds", ""),
            ],
        )
    adaptive = []
    for tokens in TOKENS:
        for i, k in enumerate(ADAPTIVE_KS):
            row = {"tokens": tokens, "k": k}
            for name, short in (("MatchingPursuitSAE", "mp"), ("TopKSAE", "topk")):
                runs = [r for r in done.values() if r["tokens"] == tokens and "adaptive" in r]
                runs = [r for r in runs if r["model"] == name]
                for j, what in enumerate(("r2", "l0")):
                    row[f"{short}_{what}"] = [r["adaptive"][i][j] for r in runs]
            adaptive.append(row)
    flat = []
    for row in adaptive:
        for s in range(min(len(v) for k, v in row.items() if isinstance(v, list))):
            flat.append({k: (v[s] if isinstance(v, list) else v) for k, v in row.items()})
    out["vision-adaptive"] = markdown_table(
        aggregate(flat, ["tokens", "k"]),
        [
            ("tokens", "tokens", ""),
            ("k", "k at encoding", "d"),
            ("mp_r2", "MP-SAE R2", ".3f"),
            ("mp_l0", "MP-SAE L0", ".1f"),
            ("topk_r2", "TopK R2", ".3f"),
            ("topk_l0", "TopK L0", ".1f"),
        ],
    )
    return out


def plot(done):
    plt = use_agg()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, tokens in zip(axes, TOKENS, strict=True):
        for name in list(FITTED_AT_K) + list(SWEPT):
            pts = {}
            for r in done.values():
                if r["tokens"] == tokens and r["model"] == name:
                    pts.setdefault(r["setting"], []).append((r["l0"], r["r2"]))
            xy = sorted(
                (np.mean([p[0] for p in v]), np.mean([p[1] for p in v])) for v in pts.values()
            )
            if xy:
                ax.plot(*zip(*xy, strict=True), marker="o", label=name)
        runs = [r for r in done.values() if r["tokens"] == tokens and "adaptive" in r]
        mp = [r["adaptive"] for r in runs if r["model"] == "MatchingPursuitSAE"]
        if mp:
            curve = np.mean(np.array(mp), axis=0)
            ax.plot(curve[:, 1], curve[:, 0], "k--", label="MP-SAE k=16, encoded at k")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("L0 (held-out)")
        ax.set_ylabel("R2 (held-out)")
        shown = {"patches": "patch tokens", "cls": "CLS token"}[tokens]
        ax.set_title(f"MNIST ViT, block 3 output, {shown} (mean of seeds)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, "vision_r2_vs_l0.png")


def main():
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--only-seed",
        type=int,
        help="run this one seed into its own results file (several processes, one seed each, "
        "can then share the cache), then write the tables from every results file",
    )
    p.add_argument("--max-iter", type=int, default=10)
    p.add_argument("--patch-rows", type=int, default=12000)
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "skmpsae" / "bench")
    args = p.parse_args()
    limit_threads(args.threads)
    cache = args.cache_dir / "vision"
    cache.mkdir(parents=True, exist_ok=True)
    seeds = range(args.seeds) if args.only_seed is None else [args.only_seed]
    suffix = "" if args.only_seed is None else f"_seed{args.only_seed}"
    runs = cache / f"vision_runs{suffix}.json"
    done = json.loads(runs.read_text()) if runs.is_file() else {}
    for seed in seeds:
        for tokens in TOKENS:
            run(cache, tokens, seed, args, done, runs)
    for other in sorted(cache.glob("vision_runs*.json")):
        done = {**json.loads(other.read_text()), **done}
    for name, text in tables(done).items():
        print(text)
        if not args.no_write:
            write_table(name, text)
    if not args.no_plot:
        plot(done)


if __name__ == "__main__":
    main()
