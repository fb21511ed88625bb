"""MNIST 5k: held-out R2, L0, dead atoms and fit time of the SAEs against scikit-learn.

4,000 stratified training digits, 1,000 held out, float32 in [0, 1], 256 atoms, k in
{4, 8, 16, 32}. Compared:

* ``MatchingPursuitSAE`` fitted at each k (and the same dictionary encoded with OMP);
* ``TopKSAE`` fitted at each k;
* ``ReLUSAE``, which has no k: a sweep of ``alpha``, each k matched with the fit whose held-out
  L0 is closest (the L0 reached is reported);
* ``MiniBatchDictionaryLearning`` and ``DictionaryLearning`` (scikit-learn), encoding with OMP at
  k. Their training (LARS lasso) does not depend on k, so one fit serves every k. Both see the
  data centred by the training mean, as they have no intercept. ``DictionaryLearning`` is too slow
  for the full set: it gets a 1,000-digit subset and 10 iterations (stated in the table).

Fit times at k=16 are the best of ``--repeats`` interleaved fits; other fit times are single runs.
Run: ``python benchmarks/bench_mnist.py`` (about 6-10 minutes single-threaded).
"""

import warnings

import numpy as np
from _common import limit_threads, markdown_table, mnist_split, parser, save_figure, timed, use_agg
from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning
from sklearn.exceptions import ConvergenceWarning

from skmpsae import MatchingPursuitSAE, ReLUSAE, TopKSAE
from skmpsae.metrics import dead_components, explained_variance, l0

KS = (4, 8, 16, 32)
GOAL_K = 16
N_COMPONENTS = 256
# Chosen from a probe so that the reached L0 brackets 4-32 on this data (alpha=16 collapses).
RELU_ALPHAS = (2.0, 4.0, 7.0, 11.0)
DL_SUBSET, DL_MAX_ITER = 1000, 10
COLUMNS = [
    ("model", "model", ""),
    ("k", "k", "d"),
    ("r2", "held-out R2", ".4f"),
    ("l0", "L0", ".2f"),
    ("dead", "dead atoms", "d"),
    ("fit_s", "fit time (s)", ".1f"),
    ("note", "note", ""),
]


def evaluate_sae(model, X_test):
    codes = model.transform(X_test)
    return {
        "r2": explained_variance(X_test, model.inverse_transform(codes)),
        "l0": l0(codes),
        "dead": int(dead_components(codes).sum()),
    }, codes


def evaluate_coder(model, X_test_centred, k):
    model.set_params(transform_n_nonzero_coefs=k)
    codes = model.transform(X_test_centred)
    return {
        "r2": explained_variance(X_test_centred, codes @ model.components_),
        "l0": l0(codes),
        "dead": int(dead_components(codes).sum()),
    }


def make_mp(k, **kw):
    return MatchingPursuitSAE(N_COMPONENTS, n_nonzero_coefs=k, random_state=0, **kw)


def make_topk(k, **kw):
    return TopKSAE(N_COMPONENTS, n_nonzero_coefs=k, random_state=0, **kw)


def make_mbdl():
    return MiniBatchDictionaryLearning(
        n_components=N_COMPONENTS, batch_size=256, transform_algorithm="omp", random_state=0
    )


def make_dl():
    return DictionaryLearning(
        n_components=N_COMPONENTS, max_iter=DL_MAX_ITER, transform_algorithm="omp", random_state=0
    )


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="fits timed at k=16 (best of)")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # LARS early stops
    X_train, X_test = mnist_split()
    mean = X_train.mean(axis=0)
    Xc_train, Xc_test = X_train - mean, X_test - mean
    rows, mp_models, mp_codes = [], {}, {}

    # One interleaved round per repeat so that load changes hit every method alike.
    goal_times = {"mp": [], "topk": [], "mbdl": []}
    mbdl = None
    for repeat in range(args.repeats):
        model, t = timed(make_mp(GOAL_K).fit, X_train)
        goal_times["mp"].append(t)
        mp_models[GOAL_K] = model
        model, t = timed(make_topk(GOAL_K).fit, X_train)
        goal_times["topk"].append(t)
        topk_goal = model
        model, t = timed(make_mbdl().fit, Xc_train)
        goal_times["mbdl"].append(t)
        mbdl = model
        print(f"repeat {repeat + 1}: " + ", ".join(f"{m} {v[-1]:.1f}s" for m, v in goal_times.items()),
              flush=True)
    best = {name: min(times) for name, times in goal_times.items()}

    for k in KS:
        if k == GOAL_K:
            mp, mp_t = mp_models[k], best["mp"]
            topk, topk_t = topk_goal, best["topk"]
        else:
            mp, mp_t = timed(make_mp(k).fit, X_train)
            topk, topk_t = timed(make_topk(k).fit, X_train)
            mp_models[k] = mp
        scores, mp_codes[k] = evaluate_sae(mp, X_test)
        rows.append({"model": "MatchingPursuitSAE", "k": k, "fit_s": mp_t, **scores})
        mp.set_params(transform_algorithm="omp")
        scores, _ = evaluate_sae(mp, X_test)
        mp.set_params(transform_algorithm="mp")
        rows.append({"model": "MatchingPursuitSAE, OMP encoding", "k": k, "fit_s": mp_t,
                     "note": "same fit, transform_algorithm='omp'", **scores})
        scores, _ = evaluate_sae(topk, X_test)
        rows.append({"model": "TopKSAE", "k": k, "fit_s": topk_t, **scores})
        print(f"k={k}: MP and TopK done", flush=True)

    relu_runs = []
    for alpha in RELU_ALPHAS:
        model, t = timed(ReLUSAE(N_COMPONENTS, alpha=alpha, random_state=0).fit, X_train)
        scores, _ = evaluate_sae(model, X_test)
        relu_runs.append({"alpha": alpha, "fit_s": t, **scores})
        print(f"ReLU alpha={alpha}: L0 {scores['l0']:.1f}", flush=True)
    for k in KS:
        run = min(relu_runs, key=lambda r: abs(np.log(max(r["l0"], 1e-3) / k)))
        rows.append({"model": "ReLUSAE", "k": k, "note": f"alpha={run['alpha']:g}",
                     **{key: v for key, v in run.items() if key != "alpha"}})

    dl, dl_t = timed(make_dl().fit, Xc_train[:DL_SUBSET])
    for k in KS:
        rows.append({"model": "MiniBatchDictionaryLearning", "k": k, "fit_s": best["mbdl"],
                     "note": "OMP encoding; one fit for all k", **evaluate_coder(mbdl, Xc_test, k)})
        rows.append({"model": "DictionaryLearning", "k": k, "fit_s": dl_t,
                     "note": f"{DL_SUBSET} training digits, max_iter={DL_MAX_ITER}; OMP encoding",
                     **evaluate_coder(dl, Xc_test, k)})

    # Non-default settings at the goal k: MP-SAE at its former default learning rate (3e-3, the
    # one TopK and ReLU keep) shows what the "auto" rate of 1e-2 buys; signed codes suit centred
    # pixels; TopK at 1e-2 shows that the MP rate does not help TopK.
    tuned = (
        ("MatchingPursuitSAE", make_mp, {"learning_rate": 3e-3}),
        ("MatchingPursuitSAE", make_mp, {"positive_code": False}),
        ("TopKSAE", make_topk, {"learning_rate": 1e-2}),
    )
    for name, make, params in tuned:
        model, t = timed(make(GOAL_K, **params).fit, X_train)
        scores, _ = evaluate_sae(model, X_test)
        note = ", ".join(f"{key}={value!r}" for key, value in params.items())
        rows.append({"model": name, "k": GOAL_K, "fit_s": t, "note": note, "tuned": True,
                     **scores})

    order = {name: i for i, name in enumerate(dict.fromkeys(r["model"] for r in rows))}
    rows.sort(key=lambda r: (r["k"], order[r["model"]], r.get("note") or ""))
    print()
    print(markdown_table(rows, COLUMNS))
    print()
    print(f"fit times at k={GOAL_K}, best of {args.repeats} (all runs): "
          + "; ".join(f"{m} {', '.join(f'{t:.1f}' for t in ts)}" for m, ts in goal_times.items()))
    _report_goal(rows, best)

    if not args.no_plot:
        _plot(rows, mp_models[GOAL_K], mp_codes[GOAL_K])


def _report_goal(rows, best):
    at_goal = {(r["model"], r.get("note")): r for r in rows if r["k"] == GOAL_K}
    mp = at_goal[("MatchingPursuitSAE", None)]["r2"]
    mbdl = at_goal[("MiniBatchDictionaryLearning", "OMP encoding; one fit for all k")]["r2"]
    topk = at_goal[("TopKSAE", None)]["r2"]
    speedup = best["mbdl"] / best["mp"]
    print(f"goal k={GOAL_K}: MP R2 {mp:.4f} >= MBDL {mbdl:.4f}: {mp >= mbdl}; "
          f"MBDL/MP fit time {speedup:.1f}x >= 5x: {speedup >= 5}; "
          f"MP R2 > TopK {topk:.4f}: {mp > topk}")


def _plot(rows, mp_model, mp_codes):
    plt = use_agg()
    from skmpsae.plotting import plot_atoms, plot_r2_vs_l0

    curves = {}
    for r in rows:
        if r.get("tuned"):
            continue
        label = r["model"] if r["model"] != "DictionaryLearning" else "DictionaryLearning (subset)"
        curves.setdefault(label, []).append((r["l0"], r["r2"]))
    ax = plot_r2_vs_l0(curves, logx=True)
    ax.set_title("MNIST, 256 atoms, 1,000 held-out digits", fontsize="medium")
    ax.legend(fontsize="x-small")
    save_figure(ax.figure, "mnist_r2_vs_l0.png")
    plt.close(ax.figure)

    fig = plot_atoms(mp_model, usage=mp_codes, n_atoms=64)
    fig.suptitle(f"MatchingPursuitSAE atoms (k={GOAL_K}), most used first; usage on held-out digits",
                 fontsize="small")
    save_figure(fig, "mnist_atoms.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
