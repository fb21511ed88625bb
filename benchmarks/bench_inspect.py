"""Feature inspection: hierarchy recovery from co-selection, the report's cost, the browser.

Three parts (``--part``, default all):

* ``tree``: on :func:`skmpsae.datasets.make_hierarchical_features` (sibling cosine 0.4, noise
  0.25, 4,000 rows or ``--n-samples``, 20 atoms, k=2, 30 epochs, the settings of
  ``bench_hierarchy.py``), the share of the 9 true parent -> child links that
  :func:`skmpsae.inspect.atom_hierarchy` recovers: from
  matching pursuit's co-selection for MP-SAE (the default, a pursuit cut at cosine 0.3, and
  the rule before it, the model's 2 steps), from co-activation for TopK and BatchTopK
  (``hierarchy_recovery``, atoms matched one to one to the features); also with MP-SAE's
  dictionary set to the true features (what the rule gives when the atoms are right).
  ``--seeds`` seeds (30), and MP-SAE minus TopK seed by seed; and how many links have both
  atoms well learned (cosine >= 0.8 with their features), and how many of those the tree
  recovers: the rule's share, apart from what the atoms lose.
* ``report``: ``write_report`` with its defaults (``n_top=20, window=8, n_bands=4,
  n_per_band=4``, as ``skmpsae report``
  runs it) for an MP-SAE with ``--n-components`` atoms (k=32) over ``--n-rows`` x 768
  memory-mapped activation-like rows, written chunk by chunk (one chunk in memory), with a
  provenance file as a window capture of 128-token windows writes it (random token ids), so
  that the report shades each top row's context; against one plain ``transform`` pass (sparse
  output) of the same model over the same file. ``--stages`` adds ``report-window0``
  (``window=0``: the statistics pass without the shading) and ``report-nobands``
  (``n_bands=0``: no contexts from the quantile bands; the table then goes to the markers
  ``inspect-bands``, so that a smaller run leaves the full-size table alone). Each run in its
  own process: wall and CPU seconds (CPU time is what a loaded machine distorts least), peak
  anonymous memory (sampled every 50 ms) and ``VmHWM`` (which also counts the mapped rows'
  file pages).
* ``browser``: the page weight of that report's index and its time to first render (the
  table drawn) and to open an atom, in headless Chromium.

Run: ``python benchmarks/bench_inspect.py [--n-rows 1000000 --n-components 16384]``; the
tables go between the markers ``inspect-*`` in ``docs/inspecting.md``. The default is the
issue's size, 1M rows (3 GiB of disk in ``--tmpdir``, one to two hours on one thread);
``--n-rows 20000 --no-write`` checks the script in minutes.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import (
    MeanSD,
    limit_threads,
    markdown_table,
    parser,
    write_npy,
    write_table,
)
from scipy.stats import t as student_t

from skmpsae._activations.provenance import provenance_path

N_TOP, WINDOW = 20, 8  # write_report's defaults: what `skmpsae report` does
TEXT_TOKENS = 128  # tokens per window of the synthetic provenance


MP_RULE = "MP-SAE (co-selection, pursuit cut at cosine 0.3)"
TOPK = "TopK (co-activation)"
WELL_LEARNED = 0.8  # cosine of an atom with the feature it is matched to


def _well_learned_links(components, parent, features, true_parent):
    """Of the true links whose two atoms (matched as ``hierarchy_recovery`` matches them)
    both have a cosine of at least ``WELL_LEARNED`` with their features: how many, and how
    many the tree recovers. The links outside tell what the atoms, not the rule, lose."""
    from scipy.optimize import linear_sum_assignment

    D = components / np.linalg.norm(components, axis=1, keepdims=True)
    cos = np.abs(features @ D.T)
    feat, atom = linear_sum_assignment(-cos)
    atom_of = atom[np.argsort(feat)]
    good = hits = 0
    for child in np.flatnonzero(true_parent >= 0):
        p = true_parent[child]
        if min(cos[child, atom_of[child]], cos[p, atom_of[p]]) >= WELL_LEARNED:
            good += 1
            hits += int(parent[atom_of[child]] == atom_of[p])
    return good, hits


def part_tree(seeds, n_samples=4000):
    from skmpsae import BatchTopKSAE, MatchingPursuitSAE, TopKSAE
    from skmpsae.datasets import make_hierarchical_features
    from skmpsae.inspect import atom_hierarchy, feature_statistics, hierarchy_recovery

    common = {"n_nonzero_coefs": 2, "fit_intercept": False, "learning_rate": 1e-2}
    mp = (MatchingPursuitSAE, {**common, "max_iter": 30})
    # name: (estimator, its parameters, feature_statistics' pair parameters); the rows of one
    # seed with the same estimator share its fit.
    models = {
        MP_RULE: (*mp, {}),
        "MP-SAE (co-selection, the model's 2 steps: the rule before)": (
            *mp,
            {"pair_steps": 2, "pair_min_cosine": 0.0},
        ),
        TOPK: (TopKSAE, {**common, "max_iter": 30}, {}),
        "BatchTopK (co-activation)": (BatchTopKSAE, {**common, "max_iter": 30}, {}),
        "MP-SAE, true features as atoms": (
            MatchingPursuitSAE,
            {**common, "max_iter": 1, "learning_rate": 1e-9},
            {},
        ),
    }
    results = {name: [] for name in models}
    for seed in seeds:
        X, F, _, tree = make_hierarchical_features(n_samples, random_state=seed, return_tree=True)
        X = X.astype(np.float32)
        fitted = {}
        for name, (cls, params, pairs) in models.items():
            extra = {"dict_init": F} if "true" in name else {}
            key = (cls, repr(params), bool(extra))
            if key not in fitted:
                fitted[key] = cls(20, random_state=seed, **params, **extra).fit(X)
            model = fitted[key]
            stats = feature_statistics(model, X, threshold=1e-3, **pairs)
            h = atom_hierarchy(stats)
            recall, precision, cosine = hierarchy_recovery(
                model.components_, h.parent, F, tree.parent_of
            )
            first = h.parent_first[h.parent >= 0].mean() if h.parent_first is not None else None
            good = _well_learned_links(model.components_, h.parent, F, tree.parent_of)
            results[name].append((recall, precision, cosine, first, good))
            print(f"seed {seed} {name}: recall {recall:.2f} precision {precision:.2f}", flush=True)
    rows = []
    for name, runs in results.items():
        r = np.array([x[:3] for x in runs])
        firsts = [x[3] for x in runs if x[3] is not None and np.isfinite(x[3])]
        good, hits = np.sum([x[4] for x in runs], axis=0)
        rows.append(
            {
                "model": name,
                "good": f"{good} of {9 * len(runs)}",
                "good_hits": hits / max(good, 1),
                "recall": MeanSD(r[:, 0]),
                "precision": MeanSD(r[:, 1]),
                "cosine": MeanSD(r[:, 2]),
                "first": MeanSD(firsts) if firsts else None,
            }
        )
    table = markdown_table(
        rows,
        [
            ("model", "model (tree from)", ""),
            ("recall", "true links recovered", ".2f"),
            ("precision", "predicted links true", ".2f"),
            ("cosine", "atom-feature cosine", ".3f"),
            ("first", "parent selected first", ".2f"),
            ("good", f"links with both atoms at cosine >= {WELL_LEARNED}", ""),
            ("good_hits", "of those recovered", ".2f"),
        ],
    )
    # The spread from seed to seed is mostly the atoms each fit learns: the paired
    # difference on the same data and seed is the fair comparison.
    diff = np.array([m[0] - t[0] for m, t in zip(results[MP_RULE], results[TOPK], strict=True)])
    per_seed = ", ".join(f"{d:+.2f}" for d in diff)
    spread = MeanSD(diff)
    # Student's t interval of the mean paired difference: with a spread of about 0.3 from
    # seed to seed, 10 seeds cannot tell apart means closer than about 0.2.
    half = np.nan
    if diff.size > 1:
        half = student_t.ppf(0.975, diff.size - 1) * spread.sd / np.sqrt(diff.size)
    return (
        f"{table}\n\nSeeds {seeds[0]} to {seeds[-1]}. True links recovered, MP-SAE (cut at "
        f"cosine 0.3) minus TopK, seed by seed: {per_seed}; mean {spread.mean:+.2f} ± "
        f"{spread.sd:.2f} (SD; 95% interval of the mean {spread.mean - half:+.2f} to "
        f"{spread.mean + half:+.2f}), MP-SAE at least as good on "
        f"{int((diff >= -1e-12).sum())} of {diff.size} seeds."
    )


def _rss_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _stage(args):
    """One measured run in this process: 'transform', 'report' or 'report-window0'; prints
    JSON. Peak anonymous memory is sampled, since the peak resident set (``VmHWM``) also
    counts the memory-mapped rows' file pages, which the kernel keeps or drops at will."""
    import threading

    from skmpsae import io

    peak = {"anon": 0}

    def sample():
        while True:
            peak["anon"] = max(peak["anon"], _rss_kib("RssAnon"))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    sae = io.load(args.model)
    X = np.load(args.acts, mmap_mode="r")
    tic, cpu = time.perf_counter(), time.process_time()
    if args.stage == "transform":
        sae.set_params(sparse_output=True).transform(X)
    else:
        from skmpsae.inspect import write_report

        window = 0 if args.stage == "report-window0" else WINDOW
        n_bands = 0 if args.stage == "report-nobands" else 4
        write_report(
            sae, args.acts, args.out, n_top=N_TOP, window=window, n_bands=n_bands, force=True
        )
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    peak["anon"] = max(peak["anon"], _rss_kib("RssAnon"))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu,
                # Not ru_maxrss: Linux carries the parent's peak into a child.
                "peak_mb": _rss_kib("VmHWM") / 1024,
                "anon_mb": peak["anon"] / 1024,
            }
        )
    )


def _write_rows(acts, n_rows):
    """The activation-like rows, written chunk by chunk into the memory-mapped file (one chunk
    in memory at a time), and a provenance file beside them as a window capture of
    ``TEXT_TOKENS``-token windows writes it, with random token ids: the report then shades
    each top row's context window, as it does for a real capture."""
    write_npy(acts, n_rows, 768, seed=0)
    table = np.lib.format.open_memmap(
        provenance_path(acts), mode="w+", dtype="<i4", shape=(n_rows, 3)
    )
    rows = np.arange(n_rows)
    table[:, 0] = rows // TEXT_TOKENS
    table[:, 1] = rows % TEXT_TOKENS
    table[:, 2] = np.random.default_rng(0).integers(0, 50_000, n_rows)
    table.flush()
    del table


def part_report(n_rows, n_components, threads, workdir, stages):
    from skmpsae import MatchingPursuitSAE, io

    acts = workdir / "acts.npy"
    _write_rows(acts, n_rows)
    X = np.load(acts, mmap_mode="r")
    rng = np.random.default_rng(0)
    D = rng.standard_normal((n_components, 768)).astype(np.float32)
    sae = MatchingPursuitSAE(
        n_components,
        n_nonzero_coefs=32,
        max_iter=1,
        dict_init=D,
        learning_rate=1e-9,
        batch_size=512,
        random_state=0,
    )
    sae.fit(np.asarray(X[:512]))
    del X
    io.save(sae, workdir / "mp.safetensors")
    measured = {}
    for stage in stages:
        cmd = [
            sys.executable,
            __file__,
            "--stage",
            stage,
            "--model",
            str(workdir / "mp.safetensors"),
            "--acts",
            str(acts),
            "--out",
            str(workdir / "report"),
            "--threads",
            str(threads),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        measured[stage] = json.loads(done.stdout.strip().splitlines()[-1])
        print(stage, measured[stage], flush=True)
    t = measured["transform"]
    names = {
        "transform": "transform (sparse output)",
        "report": f"write_report (n_top={N_TOP}, window={WINDOW}, n_bands=4, n_per_band=4)",
        "report-window0": f"write_report (n_top={N_TOP}, window=0)",
        "report-nobands": f"write_report (n_top={N_TOP}, window={WINDOW}, n_bands=0)",
    }
    rows = [
        {
            "run": names[stage],
            "s": m["seconds"],
            "cpu": m["cpu_seconds"],
            "ratio": m["cpu_seconds"] / t["cpu_seconds"],
            "anon": m["anon_mb"],
            "mb": m["peak_mb"],
        }
        for stage, m in measured.items()
    ]
    data_mb = n_rows * 768 * 4 / 2**20
    head = f"{n_rows:,} x 768 rows ({data_mb:,.0f} MiB), {n_components:,} atoms, k=32"
    table = markdown_table(
        rows,
        [
            ("run", head, ""),
            ("s", "wall seconds", ".0f"),
            ("cpu", "CPU seconds", ".0f"),
            ("ratio", "CPU time / transform", ".2f"),
            ("anon", "peak anonymous memory (MiB)", ".0f"),
            ("mb", "peak resident, file pages too (VmHWM, MiB)", ".0f"),
        ],
    )
    return table, workdir / "report"


def part_browser(site):
    import shutil

    from playwright.sync_api import sync_playwright

    index_bytes = sum(
        p.stat().st_size
        for p in [site / "index.html", site / "data" / "index.js", *(site / "static").iterdir()]
    )
    chunk_bytes = [p.stat().st_size for p in (site / "data").glob("atoms_*.js")]
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    times = {"index": [], "atom": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=args)
        for _ in range(3):
            page = browser.new_page()
            tic = time.perf_counter()
            page.goto((site / "index.html").resolve().as_uri())
            page.wait_for_selector("#atoms tbody tr")
            times["index"].append(time.perf_counter() - tic)
            tic = time.perf_counter()
            page.evaluate("location.hash = '#atom/12345'")
            page.wait_for_selector("#contexts")
            times["atom"].append(time.perf_counter() - tic)
            page.close()
        browser.close()
    rows = [
        {
            "index": index_bytes / 2**20,
            "chunk": np.mean(chunk_bytes) / 2**10,
            "n_chunks": len(chunk_bytes),
            "first": MeanSD(times["index"]),
            "atom": MeanSD(times["atom"]),
        }
    ]
    return markdown_table(
        rows,
        [
            ("index", "index page weight (MiB)", ".2f"),
            ("n_chunks", "atom chunks", ""),
            ("chunk", "mean chunk (KiB)", ".0f"),
            ("first", "first render of the index (s)", ".2f"),
            ("atom", "open an atom (s)", ".2f"),
        ],
    )


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "tree", "report", "browser"), default="all")
    p.add_argument(
        "--n-samples",
        type=int,
        default=4000,
        help="rows of the toy hierarchy per seed in --part tree (default: 4000)",
    )
    p.add_argument("--seeds", type=int, default=30, help="seeds of --part tree (default: 30)")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="--part tree runs seeds FIRST to FIRST + SEEDS - 1 (default 0; the cut of MP's "
        "tree was chosen on 100)",
    )
    p.add_argument("--n-rows", type=int, default=1_000_000, help="default: the issue's 1M")
    p.add_argument("--n-components", type=int, default=16_384)
    p.add_argument(
        "--stages",
        default="transform,report",
        help="the measured runs of --part report, comma-separated: transform (always run), "
        "report, report-window0, report-nobands (default: transform,report)",
    )
    p.add_argument("--tmpdir", default=None, help="where the rows are written (default: $TMPDIR)")
    p.add_argument("--stage", help=argparse_hidden())
    p.add_argument("--model", help=argparse_hidden())
    p.add_argument("--acts", help=argparse_hidden())
    p.add_argument("--out", help=argparse_hidden())
    args = p.parse_args(argv)
    limit_threads(args.threads)
    if args.stage:
        _stage(args)
        return
    load = open("/proc/loadavg").read().split()[0]
    print(f"load average {load}")
    if args.part in ("all", "tree"):
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        table = part_tree(seeds, args.n_samples)
        print(table)
        if not args.no_write:
            write_table("inspect-tree", table, page="inspecting.md")
    if args.part in ("all", "report", "browser"):
        stages = ["transform"] + [s for s in args.stages.split(",") if s and s != "transform"]
        with tempfile.TemporaryDirectory(dir=args.tmpdir) as tmp:
            table, site = part_report(
                args.n_rows, args.n_components, args.threads, Path(tmp), stages
            )
            print(table)
            note = f"\n\n{args.threads} thread(s); load average at the start: {load}."
            if args.no_write:
                pass
            elif "report-nobands" in stages:
                write_table("inspect-bands", table + note, page="inspecting.md")
            else:
                write_table("inspect-report", table + note, page="inspecting.md")
            if args.part in ("all", "browser"):
                table = part_browser(site)
                print(table)
                if not args.no_write:
                    write_table("inspect-browser", table, page="inspecting.md")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
