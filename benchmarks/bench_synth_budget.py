"""SynthSAEBench at a longer training budget: learning curves of MP-SAE, BatchTopK and Matryoshka.

``bench_synth.py`` trains every SAE on 40,000 samples for 3 epochs (120,000 samples seen),
where the one-layer SAEs are far from converged. Here each SAE sees fresh samples of the same
scaled world instead (drawn with ``random_state=1``; ``bench_synth.py``'s world is drawn with
``random_state=0``, and its last 10,000 samples stay the held-out set), fed by
``partial_fit`` in chunks of ``--chunk`` rows, one pass each, and is scored with
:func:`skmpsae.metrics.ground_truth_scores` after ``CHECKPOINTS`` samples: one run gives a
learning curve per model. ``partial_fit`` warms the learning rate up and then holds it
constant (a fit's last-20% decay needs the number of steps in advance), so every point of a
curve is trained alike; the settings are otherwise the library defaults, as in
``bench_synth.py``, at ``k = 25``. The MP-SAE trained with ``min_cosine=0.2`` is scored both as
trained and encoded with all 25 steps (``min_cosine=0`` after training, as
``bench_synth_mp.py`` does).

The runs advance together, one checkpoint at a time (every model and seed reaches 120,000
samples before any goes on), so a run stopped by a deadline leaves every curve equally long.
After each checkpoint the scores are added to ``bench_synth_budget.json`` and each estimator
(with its optimiser state) is pickled into ``bench_synth_budget/`` in the cache directory: the
next run continues from there.

Run: ``python benchmarks/bench_synth_budget.py [--samples 1000000] [--seeds 2]`` (about 40
minutes per seed and million samples single-threaded on a quiet 2-core machine, plus ~15
minutes to draw the million fresh samples the first time; they are cached); ``--plot-only``
rebuilds the table and the figure from the cache. The table goes between the markers
``synth-budget`` in ``docs/benchmarks.md``, the learning curves to
``docs/synth_budget_scaled.png``; both stop at the last checkpoint that every run reached.
"""

import json
import pickle
import time
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
from bench_synth import METRICS, SIZES, load_world

from skmpsae import BatchTopKSAE, MatchingPursuitSAE, MatryoshkaSAE
from skmpsae._atomic import atomic_write
from skmpsae.datasets import make_synthsaebench
from skmpsae.metrics import ground_truth_scores

K = 25
CHECKPOINTS = (120_000, 240_000, 480_000, 720_000, 1_000_000)
# Fresh samples drawn once and cached; a run uses the first --samples of them.
FRESH = 1_000_000
# name -> (estimator, parameters of the fit, {scored name: parameters set for scoring}).
MODELS = {
    "MatchPursuit": (MatchingPursuitSAE, {}, {"MatchPursuit": {}}),
    "MatchPursuit min_cosine=0.2": (
        MatchingPursuitSAE,
        {"min_cosine": 0.2},
        {
            "MP, trained with min_cosine=0.2, encoded with all 25 steps": {"min_cosine": 0.0},
            "MP, min_cosine=0.2": {},
        },
    ),
    "BatchTopK": (BatchTopKSAE, {}, {"BatchTopK": {}}),
    "Matryoshka": (MatryoshkaSAE, {}, {"Matryoshka": {}}),
}


def load_fresh(n_samples, cache_dir, features):
    """The first ``n_samples`` of ``FRESH`` training samples of the scaled world, drawn apart
    from ``load_world``'s (another ``random_state``) and cached on disk; ``features`` checks
    that they come from the same world."""
    if n_samples > FRESH:
        raise ValueError(f"--samples is at most {FRESH}, got {n_samples}")
    path = Path(cache_dir) / f"synthsaebench-scaled-fresh-{FRESH}.npz"
    if not path.exists():
        tic = time.perf_counter()
        world = make_synthsaebench(FRESH, config="scaled", random_state=1)
        if not np.array_equal(world.features, features):
            raise RuntimeError("the fresh samples come from another world than bench_synth.py's")
        print(f"drew {FRESH} fresh samples in {time.perf_counter() - tic:.0f}s", flush=True)
        with atomic_write(path) as file:
            np.savez(file, data=world.data)
    return np.load(path)["data"][:n_samples]


def score(est, encodings, test, test_acts, features):
    """``{scored name: scores}`` of ``est`` under each encoding's parameters (restored after)."""
    out = {}
    for name, params in encodings.items():
        saved = {k: est.get_params()[k] for k in params}
        s = ground_truth_scores(est.set_params(**params), test, test_acts, features)
        est.set_params(**saved)
        out[name] = {m: float(s[m]) for m in METRICS}
    return out


def advance(name, seed, stop, train, chunk, state_dir):
    """Train run ``(name, seed)`` on to ``stop`` samples seen, from its pickle in ``state_dir``
    if there is one; return ``(estimator, seconds of training so far)``, pickled again."""
    cls, fit_params, _ = MODELS[name]
    path = Path(state_dir) / f"{name.replace(' ', '_')}-seed{seed}.pkl"
    if path.exists():
        est, seen, seconds = pickle.loads(path.read_bytes())
    else:
        est = cls(SIZES["scaled"][0], n_nonzero_coefs=K, random_state=seed, **fit_params)
        seen, seconds = 0, 0.0
    if seen > stop:
        raise RuntimeError(f"{path} has seen {seen} samples, past {stop}: remove it to restart")
    while seen < stop:
        tic = time.perf_counter()
        est.partial_fit(train[seen : min(seen + chunk, stop)])
        seconds += time.perf_counter() - tic
        seen = min(seen + chunk, stop)
    with atomic_write(path) as file:
        pickle.dump((est, seen, seconds), file)
    return est, seconds


COLUMNS = [
    ("samples", "samples seen", ","),
    ("model", "SAE", ""),
    ("f1", "F1", ".3f"),
    ("mcc", "MCC", ".3f"),
    ("uniqueness", "uniqueness", ".3f"),
    ("explained_variance", "var. explained", ".3f"),
    ("n_dead", "dead", ".1f"),
    ("l0", "L0", ".1f"),
    ("n_runs", "seeds", ""),
]


def table(rows, budgets):
    """Mean ± sd over the seeds at each budget in ``budgets``, models in ``MODELS``'s order."""
    order = [m for _, _, encodings in MODELS.values() for m in encodings]
    at = [r for r in rows if r["samples"] in budgets]
    merged = aggregate(at, ["samples", "model"])
    merged.sort(key=lambda r: (r["samples"], order.index(r["model"])))
    return markdown_table(merged, COLUMNS)


def plot(rows, name="synth_budget_scaled.png"):
    """F1 and variance explained against samples seen: one colour per model, a thin line per
    seed, the mean over seeds bold."""
    plt = use_agg()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    models = [m for _, _, encodings in MODELS.values() for m in encodings]
    for i, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        colour = f"C{i}"
        seeds = sorted({r["seed"] for r in mine})
        for ax, metric in zip(axes, ("f1", "explained_variance"), strict=True):
            for seed in seeds:
                run = sorted((r["samples"], r[metric]) for r in mine if r["seed"] == seed)
                ax.plot(*zip(*run, strict=True), color=colour, linewidth=0.7, alpha=0.5)
            mean = aggregate(mine, ["samples"])
            mean.sort(key=lambda r: r["samples"])
            ax.plot(
                [r["samples"] for r in mean],
                [float(r[metric]) for r in mean],
                color=colour,
                marker="o",
                linewidth=2,
                label=f"{model} ({len(seeds)} seeds)",
            )
    for ax, label in zip(
        axes, ("F1 (latent as detector of its true feature)", "variance explained"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_xlabel("training samples seen (fresh, held-out scoring)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("SynthSAEBench scaled, 1,024 latents, L0 = 25: learning curves")
    save_figure(fig, name)
    plt.close(fig)


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=CHECKPOINTS[-1])
    p.add_argument("--chunk", type=int, default=40_000)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "skmpsae"))
    p.add_argument("--plot-only", action="store_true", help="table and figure from the cache")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    results = Path(args.cache_dir) / "bench_synth_budget.json"
    rows = json.loads(results.read_text()) if results.exists() else []
    checkpoints = tuple(c for c in CHECKPOINTS if c < args.samples) + (args.samples,)
    if not args.plot_only:
        n_train, n_test = SIZES["scaled"][1:3]
        (_, test), (_, test_acts), features = load_world("scaled", n_train, n_test, args.cache_dir)
        train = load_fresh(args.samples, args.cache_dir, features)
        state_dir = Path(args.cache_dir) / "bench_synth_budget"
        state_dir.mkdir(exist_ok=True)
        for stop in checkpoints:
            for seed in range(args.seeds):
                for name in args.models:
                    encodings = MODELS[name][2]
                    done = {(r["model"], r["seed"], r["samples"]) for r in rows}
                    if all((m, seed, stop) in done for m in encodings):
                        continue
                    est, seconds = advance(name, seed, stop, train, args.chunk, state_dir)
                    scores = score(est, encodings, test, test_acts, features)
                    rows += [
                        {"model": m, "seed": seed, "samples": stop, "seconds": seconds, **s}
                        for m, s in scores.items()
                    ]
                    with atomic_write(results) as file:
                        file.write(json.dumps(rows).encode())
                    print(
                        f"{stop} samples, seed {seed}: "
                        + ", ".join(
                            f"{m} F1 {s['f1']:.3f} VE {s['explained_variance']:.3f}"
                            for m, s in scores.items()
                        )
                        + f" ({seconds:.0f}s training)",
                        flush=True,
                    )
    # The last checkpoint every run has reached (the runs advance together).
    runs = {(r["model"], r["seed"]) for r in rows}
    reached = min(max(r["samples"] for r in rows if (r["model"], r["seed"]) == run) for run in runs)
    rows = [r for r in rows if r["samples"] <= reached]
    budgets = sorted({CHECKPOINTS[0], reached})
    text = table(rows, budgets)
    print(f"\nSynthSAEBench scaled at longer budgets (mean ± sd over seeds)\n{text}")
    if not args.no_write:
        write_table("synth-budget", text)
    if not args.no_plot:
        plot(rows)


if __name__ == "__main__":
    main()
