"""SynthSAEBench: where MP-SAE loses F1, step by step, and the MP-SAE variants tried.

On the scaled world of ``bench_synth.py`` (4,096 true features, 1,024 atoms, k = 25), for
MP-SAEs fitted with the bench's settings, on held-out samples:

- per pursuit step: the share of selections whose atom's best-matching true feature is present
  in the sample (the step's precision), the mean coefficient, and the share that re-select an
  atom already chosen for the sample;
- per atom: how many atoms share a best-matching true feature (duplicates), how many sit between
  two true features (second-best |cosine| above 0.3: merged parent and child, or blends), and
  the mean F1 of well-aligned (best |cosine| >= 0.9) and poorly aligned atoms;
- the frontier of a threshold on the codes at inference (drop the steps whose coefficient is
  below ``t``): F1 and variance explained for each ``t``.

Variants (``VARIANTS``) are trained on the same data and seeds and scored with
:func:`skmpsae.metrics.ground_truth_scores`.

Run: ``python benchmarks/bench_synth_mp.py [--seeds 3]`` (about 10 minutes single-threaded
on a shared 2-core machine after ``bench_synth.py`` has cached the world); tables between the
markers ``synth-mp-steps``, ``synth-mp-atoms`` and ``synth-mp-variants`` in
``docs/benchmarks.md``.
"""

import json
from pathlib import Path

import numpy as np
import torch
from _common import aggregate, limit_threads, markdown_table, parser, write_table
from bench_synth import SIZES, load_world, plot

from skmpsae import MatchingPursuitSAE
from skmpsae._pursuit.selection import _select_mp
from skmpsae.metrics import detection_scores, explained_variance, ground_truth_scores

K = 25
STEP_GROUPS = ((1, 5), (6, 10), (11, 15), (16, 20), (21, 25))
THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
# Variants of MatchingPursuitSAE tried at k = 25, each a parameter of the estimator:
# name -> (parameters of the fit, parameters set after it for transform). An empty fit dict
# reuses the default model's dictionary (an encoding-only change).
VARIANTS = {
    "OMP encoding (transform_algorithm='omp')": ({}, {"transform_algorithm": "omp"}),
    "min_cosine=0.2": ({"min_cosine": 0.2}, {}),
    "trained with min_cosine=0.2, encoded with all 25 steps": (
        {"min_cosine": 0.2},
        {"min_cosine": 0.0},
    ),
    "min_cosine=0.3": ({"min_cosine": 0.3}, {}),
    "trained with min_cosine=0.3, encoded with all 25 steps": (
        {"min_cosine": 0.3},
        {"min_cosine": 0.0},
    ),
}
SCORES = ("f1", "mcc", "uniqueness", "explained_variance", "l0")


def step_diagnostics(model, test, test_acts, features):
    """Per-step precision, mean coefficient and re-selection share (numpy arrays of length k)."""
    D = model.components_
    cos = np.abs(D @ features.T)
    best = np.argmax(cos, axis=1)
    X = torch.as_tensor(test - model.intercept_)
    indices, values, *_ = _select_mp(X, torch.as_tensor(D), K, positive=True)
    indices, values = indices.numpy(), values.numpy()
    taken = values != 0
    truth = test_acts.tocsr()
    present = np.asarray(truth[np.arange(len(test))[:, None], best[indices]].todense()) > 0
    reselect = np.zeros_like(taken)
    for s in range(1, K):
        reselect[:, s] = (indices[:, :s] == indices[:, s : s + 1]).any(axis=1)
    share = taken.sum(axis=0)
    precision = (present & taken).sum(axis=0) / np.maximum(share, 1)
    coef = np.where(taken, values, 0).sum(axis=0) / np.maximum(share, 1)
    return precision, coef, (reselect & taken).sum(axis=0) / np.maximum(share, 1)


def atom_diagnostics(model, test, test_acts, features):
    D = model.components_ / np.linalg.norm(model.components_, axis=1, keepdims=True)
    cos = np.sort(np.abs(D @ features.T), axis=1)
    best_cos, second = cos[:, -1], cos[:, -2]
    best = np.argmax(np.abs(D @ features.T), axis=1)
    _, counts = np.unique(best, return_counts=True)
    f1 = detection_scores(model.transform(test), test_acts, D, features).f1_per_component
    aligned = best_cos >= 0.9
    return {
        "aligned": float(aligned.mean()),
        "f1 aligned": float(f1[aligned].mean()) if aligned.any() else 0.0,
        "f1 others": float(f1[~aligned].mean()) if (~aligned).any() else 0.0,
        "duplicates": float(counts[counts > 1].sum() - (counts > 1).sum()),
        "merged": float((second > 0.3).mean()),
        "f1 zero": float((f1 == 0).mean()),
    }


def threshold_frontier(model, test, test_acts, features):
    codes = model.transform(test)
    out = []
    for t in THRESHOLDS:
        kept = np.where(codes >= t, codes, 0.0) if t else codes
        det = detection_scores(kept, test_acts, model.components_, features)
        ve = explained_variance(test, model.inverse_transform(kept))
        out.append(
            {
                "threshold": t,
                "f1": det.f1,
                "explained_variance": ve,
                "l0": float((kept != 0).sum(1).mean()),
            }
        )
    return out


def plot_frontier(cache_dir):
    """The six SAEs of ``bench_synth.py`` and the MP-SAE variants (same world, epochs and seeds)
    on one figure, from the per-seed results both scripts keep in ``cache_dir``."""
    names = ("bench_synth_scaled", "bench_synth_mp_variants")
    paths = [Path(cache_dir) / f"{name}.json" for name in names]
    if not all(p.exists() for p in paths):
        print("run bench_synth.py and bench_synth_mp.py first: no figure")
        return
    rows, variants = (json.loads(p.read_text()) for p in paths)
    variants = [r for r in variants if r["model"] != "MP-SAE (default)"]
    plot(aggregate(rows, ["model", "target"]), aggregate(variants, ["model"]), "scaled")


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "skmpsae"))
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from the cache")
    args = p.parse_args(argv)
    if args.plot_only:
        plot_frontier(args.cache_dir)
        return
    limit_threads(args.threads)
    n_components, n_train, n_test, epochs = SIZES["scaled"]
    epochs = args.epochs or epochs
    (train, test), (_, test_acts), features = load_world("scaled", n_train, n_test, args.cache_dir)

    step_rows, atom_rows, frontier_rows, variant_rows = [], [], [], []
    for seed in range(args.seeds):
        model = MatchingPursuitSAE(
            n_components, n_nonzero_coefs=K, max_iter=epochs, random_state=seed
        ).fit(train)
        precision, coef, reselect = step_diagnostics(model, test, test_acts, features)
        for lo, hi in STEP_GROUPS:
            sl = slice(lo - 1, hi)
            step_rows.append(
                {
                    "steps": f"{lo}-{hi}",
                    "precision": float(precision[sl].mean()),
                    "coef": float(coef[sl].mean()),
                    "reselect": float(reselect[sl].mean()),
                }
            )
        atom_rows.append({"model": "MP-SAE", **atom_diagnostics(model, test, test_acts, features)})
        for row in threshold_frontier(model, test, test_acts, features):
            frontier_rows.append(row)
        scores = ground_truth_scores(model, test, test_acts, features)
        variant_rows.append({"model": "MP-SAE (default)", **{k: float(scores[k]) for k in SCORES}})
        for name, (fit_params, transform_params) in VARIANTS.items():
            est = model
            if fit_params:
                est = MatchingPursuitSAE(
                    n_components,
                    n_nonzero_coefs=K,
                    max_iter=epochs,
                    random_state=seed,
                    **fit_params,
                ).fit(train)
            defaults = {k: est.get_params()[k] for k in transform_params}
            s = ground_truth_scores(est.set_params(**transform_params), test, test_acts, features)
            est.set_params(**defaults)
            variant_rows.append({"model": name, **{k: float(s[k]) for k in SCORES}})
            print(
                f"{name}: f1 {s.f1:.3f}, ve {s.explained_variance:.3f}, l0 {s.l0:.1f}", flush=True
            )
        print(f"seed {seed} done", flush=True)

    steps = markdown_table(
        aggregate(step_rows, ["steps"]),
        [
            ("steps", "pursuit steps", ""),
            ("precision", "precision", ".3f"),
            ("coef", "mean coefficient", ".2f"),
            ("reselect", "re-selections", ".3f"),
        ],
    )
    atoms = markdown_table(
        aggregate(atom_rows, ["model"]),
        [
            ("model", "", ""),
            ("aligned", "atoms with |cos| >= 0.9", ".3f"),
            ("f1 aligned", "their F1", ".3f"),
            ("f1 others", "F1 of the others", ".3f"),
            ("f1 zero", "atoms with F1 0", ".3f"),
            ("duplicates", "duplicate atoms", ".1f"),
            ("merged", "atoms between two features", ".3f"),
        ],
    )
    frontier = markdown_table(
        aggregate(frontier_rows, ["threshold"]),
        [
            ("threshold", "code threshold", ".1f"),
            ("f1", "F1", ".3f"),
            ("explained_variance", "var. explained", ".3f"),
            ("l0", "L0", ".1f"),
        ],
    )
    variants = markdown_table(
        aggregate(variant_rows, ["model"]),
        [
            ("model", "MP-SAE, k = 25", ""),
            ("f1", "F1", ".3f"),
            ("mcc", "MCC", ".3f"),
            ("uniqueness", "uniqueness", ".3f"),
            ("explained_variance", "var. explained", ".3f"),
            ("l0", "L0", ".1f"),
        ],
    )
    for title, table in (
        ("per step", steps),
        ("per atom", atoms),
        ("code threshold at inference", frontier),
        ("variants", variants),
    ):
        print(f"\n{title}\n{table}")
    (Path(args.cache_dir) / "bench_synth_mp_variants.json").write_text(json.dumps(variant_rows))
    if not args.no_plot:
        plot_frontier(args.cache_dir)
    if not args.no_write:
        write_table("synth-mp-steps", steps)
        write_table("synth-mp-atoms", atoms)
        write_table("synth-mp-threshold", frontier)
        write_table("synth-mp-variants", variants)


if __name__ == "__main__":
    main()
