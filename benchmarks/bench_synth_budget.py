"""SynthSAEBench at a longer training budget: learning curves of MP-SAE, BatchTopK and Matryoshka.

``bench_synth.py`` trains every SAE on 40,000 samples for 3 epochs (120,000 samples seen),
where the one-layer SAEs are far from converged. Here each SAE sees fresh samples of the same
scaled world instead (drawn with ``random_state=1``; ``bench_synth.py``'s world is drawn with
``random_state=0``, and its last 10,000 samples stay the held-out set), fed by
``partial_fit`` in chunks of ``--chunk`` rows, one pass each, and is scored with
:func:`skmpsae.metrics.ground_truth_scores` after ``CHECKPOINTS`` samples: one run gives a
learning curve per model. ``partial_fit`` warms the learning rate up and then holds it
constant, so every point of a curve is trained alike; ``--cool-down N`` then gives each run
the final decay a fit has (the rate falling linearly to zero, here over ``N`` more samples)
and scores it again. The settings are otherwise the library defaults, as in
``bench_synth.py``, at ``k = 25``. The MP-SAE trained with ``min_cosine=0.2`` is scored both
with its stop and encoded with all 25 steps (``min_cosine=0`` after training, as
``bench_synth_mp.py`` does). Its stop leaves L0 near 12, so BatchTopK and Matryoshka are also
trained at ``k = 12``: the comparison at the same L0; and MP-SAE with ``k = 40`` and a slightly
lower stop (``min_cosine=0.185``) is a point between the two L0. ``synth_budget_frontier.png``
plots F1 and MCC against variance explained at the last point every run reached.

The runs advance together, one checkpoint at a time (every model and seed reaches 120,000
samples before any goes on), so a run stopped by a deadline leaves every curve equally long.
After each checkpoint the scores are added to ``bench_synth_budget.json`` and each estimator
(with its optimiser state) is pickled into ``bench_synth_budget/`` in the cache directory: the
next run continues from there.

Run: ``python benchmarks/bench_synth_budget.py --samples 1000000 --seeds 3 --cool-down 200000``
(about 15 minutes per seed single-threaded on a shared 2-core machine, plus ~16 minutes to draw
the million fresh samples the first time; they are cached); ``--plot-only`` rebuilds the
table and the figure from the cache. The table (120,000 and 1M samples seen, and after the
decay) goes between the markers ``synth-budget`` in ``docs/benchmarks.md``, the learning
curves to ``docs/synth_budget_scaled.png``; both leave out a checkpoint that not every model
has reached with the same seeds.
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
from bench_synth import METRICS, SCORE_COLUMNS, SIZES, load_world

from skmpsae import BatchTopKSAE, MatchingPursuitSAE, MatryoshkaSAE
from skmpsae._atomic import atomic_write
from skmpsae.datasets import make_synthsaebench
from skmpsae.metrics import ground_truth_scores

K = 25
CHECKPOINTS = (120_000, 240_000, 480_000, 720_000, 1_000_000)
# The checkpoints in the table (with the last one every run reached).
TABLE_BUDGETS = (120_000, 1_000_000)
# Fresh samples are drawn and cached in parts of FRESH; a run uses the first --samples.
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
    # A larger k with a slightly lower stop: does the stop help nearer L0 25?
    "MatchPursuit k=40 min_cosine=0.185": (
        MatchingPursuitSAE,
        {"n_nonzero_coefs": 40, "min_cosine": 0.185},
        {"MP, k=40, min_cosine=0.185": {}},
    ),
    # At the L0 that MP-SAE's min_cosine=0.2 stop reaches (11.8): the comparison at the same L0.
    "BatchTopK k=12": (BatchTopKSAE, {"n_nonzero_coefs": 12}, {"BatchTopK, k=12": {}}),
    "Matryoshka k=12": (MatryoshkaSAE, {"n_nonzero_coefs": 12}, {"Matryoshka, k=12": {}}),
}


def load_fresh(n_samples, cache_dir, features):
    """``n_samples`` training samples of the scaled world, drawn apart from ``load_world``'s:
    parts of ``FRESH`` samples, part ``i`` drawn with ``random_state=1 + i`` and cached on disk
    (drawing one takes ~15 minutes on a shared CPU); ``features`` checks that they come from
    the same world."""
    parts = []
    for i in range(-(-n_samples // FRESH)):
        path = Path(cache_dir) / f"synthsaebench-scaled-fresh-{FRESH}-seed{1 + i}.npz"
        if not path.exists():
            tic = time.perf_counter()
            world = make_synthsaebench(FRESH, config="scaled", random_state=1 + i)
            if not np.array_equal(world.features, features):
                raise RuntimeError("the fresh samples come from another world than bench_synth's")
            print(f"drew {FRESH} fresh samples in {time.perf_counter() - tic:.0f}s", flush=True)
            with atomic_write(path) as file:
                np.savez(file, data=world.data)
        parts.append(np.load(path)["data"])
    return np.concatenate(parts)[:n_samples]


def score(est, encodings, test, test_acts, features):
    """``{scored name: scores}`` of ``est`` under each encoding's parameters (restored after)."""
    out = {}
    for name, params in encodings.items():
        saved = {k: est.get_params()[k] for k in params}
        s = ground_truth_scores(est.set_params(**params), test, test_acts, features)
        est.set_params(**saved)
        out[name] = {m: float(s[m]) for m in METRICS}
    return out


def point(row):
    """``(samples seen, samples of the final decay)`` of a row: where on the curves it is."""
    return row["samples"], row.get("cool_down", 0)


def done_points(rows):
    return {(r["model"], r["seed"], *point(r)) for r in rows}


def scored_names(models):
    return [m for name in models for m in MODELS[name][2]]


def advance(name, seed, stop, train, chunk, state_dir):
    """Train run ``(name, seed)`` on to ``stop`` samples seen, from its pickle in ``state_dir``
    if there is one; return ``(estimator, seconds of training so far)``, pickled again."""
    cls, fit_params, _ = MODELS[name]
    path = Path(state_dir) / f"{name.replace(' ', '_')}-seed{seed}.pkl"
    if path.exists():
        est, seen, seconds = pickle.loads(path.read_bytes())
    else:
        est = cls(SIZES["scaled"][0], random_state=seed, **{"n_nonzero_coefs": K} | fit_params)
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
    ("lr", "learning rate", ""),
    ("model", "SAE", ""),
    *SCORE_COLUMNS,
    ("l0", "L0", ".1f"),
    ("n_runs", "seeds", ""),
]


def table(rows, budgets):
    """Mean ± sd over the seeds at each point in ``budgets`` (see :func:`point`), models in
    ``MODELS``'s order."""
    order = scored_names(MODELS)
    at = [r | {"lr": lr_label(r)} for r in rows if point(r) in budgets]
    merged = aggregate(at, ["samples", "lr", "model"])
    merged.sort(key=lambda r: (r["samples"], order.index(r["model"])))
    return markdown_table(merged, COLUMNS)


def lr_label(row):
    n = row.get("cool_down", 0)
    return f"decayed to 0 over the last {n:,}" if n else "constant"


def plot(rows, name="synth_budget_scaled.png"):
    """F1 and variance explained against samples seen: one colour per model, a thin line per
    seed, the mean over seeds bold (constant learning rate); a star for the mean after the
    final decay of the learning rate, where measured."""
    plt = use_agg()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    models = scored_names(MODELS)
    for i, model in enumerate(models):
        mine = [r for r in rows if r["model"] == model and not r.get("cool_down")]
        cooled = [r for r in rows if r["model"] == model and r.get("cool_down")]
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
            for r in aggregate(cooled, ["samples"]):
                ax.plot(r["samples"], float(r[metric]), color=colour, marker="*", markersize=14)
    for ax, label in zip(
        axes, ("F1 (latent as detector of its true feature)", "variance explained"), strict=True
    ):
        ax.set_xscale("log")
        ax.set_xlabel("training samples seen (fresh, held-out scoring)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    if any(r.get("cool_down") for r in rows):
        axes[0].plot([], [], "k*", markersize=12, linestyle="none", label="after the decay")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    fig.suptitle("SynthSAEBench scaled, 1,024 latents, k = 25 unless named: learning curves")
    save_figure(fig, name)
    plt.close(fig)


def frontier(rows, name="synth_budget_frontier.png"):
    """F1 and MCC against variance explained at the last point every run reached: mean ± sd
    over the seeds, each model labelled with its L0 (squares: matching pursuit)."""
    plt = use_agg()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), layout="constrained")
    order = scored_names(MODELS)
    mean = {r["model"]: r for r in aggregate(rows, ["model"])}
    for i, model in enumerate(m for m in order if m in mean):
        r = mean[model]
        for ax, metric in zip(axes, ("f1", "mcc"), strict=True):
            ax.errorbar(
                r["explained_variance"].mean,
                r[metric].mean,
                xerr=r["explained_variance"].sd,
                yerr=r[metric].sd,
                color=f"C{i}",
                marker="s" if "MP" in model or "Match" in model else "o",
                markersize=8,
                label=f"{model} (L0 {r['l0'].mean:.1f})",
            )
    for ax, label in zip(axes, ("F1", "MCC"), strict=True):
        ax.set_xlabel("variance explained")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=2)
    n = max(r["samples"] for r in rows)
    fig.suptitle(f"SynthSAEBench scaled, 1,024 latents, {n:,} samples seen: up and right is better")
    save_figure(fig, name)
    plt.close(fig)


def record(rows, results, scores, at, label):
    """Add one run's ``{scored name: scores}`` to ``rows`` with the point ``at``, save them all
    to ``results`` (atomically: the next run continues from there) and print a line."""
    rows += [{"model": m, **at, **s} for m, s in scores.items()]
    with atomic_write(results) as file:
        file.write(json.dumps(rows).encode())
    summary = ", ".join(
        f"{m} F1 {s['f1']:.3f} VE {s['explained_variance']:.3f}" for m, s in scores.items()
    )
    print(f"{label}: {summary}", flush=True)


def cool_down(name, seed, start, n_samples, train, chunk, state_dir):
    """Run ``(name, seed)`` from its pickle at ``start`` samples seen, trained on
    ``n_samples`` more with the learning rate falling linearly to zero, one constant step per
    chunk (what a fit's final decay does, which ``partial_fit`` alone cannot); the pickle is
    kept. The decay re-reads the first ``n_samples`` of ``train``, seen once ``start -
    n_samples`` samples earlier (drawing more fresh ones takes ~15 minutes per million)."""
    if n_samples > start:
        raise ValueError(f"--cool-down is at most --samples ({start}), got {n_samples}")
    path = Path(state_dir) / f"{name.replace(' ', '_')}-seed{seed}.pkl"
    est, seen, seconds = pickle.loads(path.read_bytes())
    if seen != start:
        raise RuntimeError(f"{path} has seen {seen} samples, not {start}")
    peak, n_chunks = est._learning_rate(), -(-n_samples // chunk)
    tic = time.perf_counter()
    for i in range(n_chunks):
        est.set_params(learning_rate=peak * (1 - (i + 0.5) / n_chunks))
        est.partial_fit(train[i * chunk : min((i + 1) * chunk, n_samples)])
    return est, seconds + time.perf_counter() - tic


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=CHECKPOINTS[-1])
    p.add_argument("--chunk", type=int, default=40_000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "skmpsae"))
    p.add_argument(
        "--cool-down",
        type=int,
        default=0,
        help="after --samples, train this many more with the learning rate decaying to zero",
    )
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
                    if all((m, seed, stop, 0) in done_points(rows) for m in encodings):
                        continue
                    est, seconds = advance(name, seed, stop, train, args.chunk, state_dir)
                    scores = score(est, encodings, test, test_acts, features)
                    at = {"seed": seed, "samples": stop, "seconds": seconds}
                    label = f"{stop} samples, seed {seed}"
                    record(rows, results, scores, at, f"{label} ({seconds:.0f}s training)")
        for seed in range(args.seeds) if args.cool_down else ():
            for name in args.models:
                encodings = MODELS[name][2]
                key = (args.samples + args.cool_down, args.cool_down)
                if all((m, seed, *key) in done_points(rows) for m in encodings):
                    continue
                est, seconds = cool_down(
                    name, seed, args.samples, args.cool_down, train, args.chunk, state_dir
                )
                scores = score(est, encodings, test, test_acts, features)
                at = {"seed": seed, "samples": key[0], "cool_down": key[1], "seconds": seconds}
                label = f"{args.samples} + {args.cool_down} decayed, seed {seed}"
                record(rows, results, scores, at, label)
    # The seeds asked for (--plot-only --seeds 2 leaves out a third seed), at the checkpoints
    # that every model has reached with the same seeds (a run stopped part-way through a
    # checkpoint leaves it out).
    names = scored_names(args.models)
    rows = [r for r in rows if r["seed"] < args.seeds and r["model"] in names]
    points = sorted({point(r) for r in rows})
    seeds = {
        (c, m): {r["seed"] for r in rows if point(r) == c and r["model"] == m}
        for c in points
        for m in names
    }
    complete = [
        c
        for c in points
        if seeds[c, names[0]] and all(seeds[c, m] == seeds[c, names[0]] for m in names)
    ]
    rows = [r for r in rows if point(r) in complete]
    constant = [c for c in complete if not c[1]]
    budgets = sorted(
        {c for c in constant if c[0] in TABLE_BUDGETS}
        | set(constant[-1:])
        | set(complete) - set(constant)
    )
    text = table(rows, budgets)
    print(f"\nSynthSAEBench scaled at longer budgets (mean ± sd over seeds)\n{text}")
    if not args.no_write:
        write_table("synth-budget", text)
    if not args.no_plot:
        plot(rows)
        final = [r for r in rows if point(r) == max(complete, key=lambda c: (c[1] > 0, c))]
        frontier(final)


if __name__ == "__main__":
    main()
