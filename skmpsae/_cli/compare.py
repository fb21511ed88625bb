"""The side-by-side comparison behind ``skmpsae compare`` (and ``make demo``).

The SAEs and scikit-learn's ``MiniBatchDictionaryLearning`` are fitted on the same training
split and scored on the same held-out split, with the same dictionary size and the same
sparsity where a model lets one set it.
"""

import copy
import time

import numpy as np

from .._models.registry import estimator_specs
from .._models.relu import ReLUSAE
from .._train.progress import Progress
from ..metrics import dead_components, explained_variance, l0
from .common import CommandError, _defaults, _non_negative_float, _positive_int, _report
from .inputs import _load_npy

# ReLUSAE has no k: its L0 emerges from the L1 weight. Its default alpha was chosen to give a
# held-out L0 near 16 on MNIST (256 latents, 50 epochs), the k of the other models.
DEFAULT_RELU_ALPHA = ReLUSAE().alpha


def _classes():
    return [spec.estimator.__name__ for spec in estimator_specs().values()]


def model_names():
    """Every registered SAE, then scikit-learn's MiniBatchDictionaryLearning ("mbdl")."""
    return (*estimator_specs(), "mbdl")


def load_comparison_data(data, random_state=0, test=None):
    """Training and held-out splits for ``skmpsae compare``.

    Parameters
    ----------
    data : str
        ``"digits"`` (scikit-learn's 8x8 digits scaled to [0, 1], 20% held out), ``"mnist"``
        (the packaged 5,000 digits, 4,000 train / 1,000 held out) or the path of a 2-D ``.npy``
        file (20% held out: whole texts when the file has a per-row text index, so that no
        text has tokens on both sides, else rows at random).
    random_state : int, default=0
        Seed of the shuffle before splitting (MNIST rows are sorted by label).
    test : str, default=None
        A ``.npy`` file of held-out rows: ``data`` is then all training rows.

    Returns
    -------
    X_train, X_test : ndarray of dtype float32
    description : str
    """
    if test is not None:
        X_train = np.asarray(np.load(data, mmap_mode="r"), dtype=np.float32)
        X_test = np.asarray(np.load(test, mmap_mode="r"), dtype=np.float32)
        return X_train, X_test, f"{data} (held out: {test})"
    if data not in ("digits", "mnist"):
        from .._activations.metadata import row_text_index, split_by_group

        groups = row_text_index(data)
        if groups is not None:
            X = np.asarray(np.load(data, mmap_mode="r"), dtype=np.float32)
            train, held = split_by_group(groups, 0.2, random_state)
            n_texts = np.unique(groups[held]).shape[0]
            return X[train], X[held], f"{data} (split by text: {n_texts} texts held out)"
    rng = np.random.RandomState(random_state)
    if data == "digits":
        from sklearn.datasets import load_digits

        X = (load_digits().data / 16.0).astype(np.float32)
        n_train = round(0.8 * X.shape[0])
        name = "scikit-learn digits (8x8, scaled to [0, 1])"
    elif data == "mnist":
        from ..datasets import load_mnist

        X = load_mnist().data
        n_train = 4000
        name = "MNIST 5k (28x28, scaled to [0, 1])"
    else:
        X = np.asarray(np.load(data, mmap_mode="r"), dtype=np.float32)
        n_train = round(0.8 * X.shape[0])
        name = f"{data} (rows split at random: it has no per-row text index)"
    order = rng.permutation(X.shape[0])
    return X[order[:n_train]], X[order[n_train:]], name


def _make_estimators(models, n_components, k, alpha, max_iter, device, random_state):
    from sklearn.decomposition import MiniBatchDictionaryLearning

    specs = estimator_specs()
    common = {"n_components": n_components, "random_state": random_state, "device": device}
    if max_iter is not None:
        common["max_iter"] = max_iter

    def make(name):
        if name == "mbdl":
            mbdl = MiniBatchDictionaryLearning(
                n_components=n_components,
                transform_algorithm="omp",
                transform_n_nonzero_coefs=k,
                batch_size=256,
                random_state=random_state,
            )
            return mbdl, f"OMP k={k}"
        spec = specs[name]
        if not spec.penalised:
            scope = f" {spec.sparsity_scope}" if spec.sparsity_scope else ""
            return spec.estimator(n_nonzero_coefs=k, **common), f"k={k}{scope}"
        # --alpha is ReLU's L1 weight; the other penalised SAEs keep their default weight,
        # chosen (as ReLU's default) for a held-out L0 near 16 on MNIST.
        weight = alpha if name == "relu" else spec.estimator().alpha
        return spec.estimator(alpha=weight, **common), f"alpha={weight:g}, L0 emergent"

    return [(name, *make(name)) for name in models]


def compare_models(
    X_train,
    X_test,
    *,
    models=None,
    n_components=256,
    k=16,
    alpha=DEFAULT_RELU_ALPHA,
    max_iter=None,
    device="auto",
    random_state=0,
    on_result=None,
    on_fitted=None,
):
    """Fit each model on ``X_train`` and score it on ``X_test``.

    ``MiniBatchDictionaryLearning`` has no intercept, so it is fitted on data centred by the
    training mean and that mean is added back to its reconstructions; the SAEs learn their own
    bias. Dead atoms are those never used on ``X_test``.

    Returns
    -------
    rows : list of dict
        One per model: ``model``, ``sparsity``, ``r2``, ``l0``, ``dead``, ``n_components``,
        ``fit_seconds``.

    ``on_result(row)`` is called after each fitted model is scored, ``on_fitted(name,
    estimator)`` with its short name and the fitted estimator (e.g. to save it).
    """
    models = model_names() if models is None else models
    mean = X_train.mean(axis=0)
    rows = []
    estimators = _make_estimators(models, n_components, k, alpha, max_iter, device, random_state)
    for name, estimator, sparsity in estimators:
        centre = mean if name == "mbdl" else 0
        tic = time.perf_counter()
        estimator.fit(X_train - centre)
        fit_seconds = time.perf_counter() - tic
        if on_fitted is not None:
            on_fitted(name, estimator)
        variants = [(type(estimator).__name__, sparsity, estimator)]
        if name == "mp":
            # The same fitted dictionary, encoded by OMP at inference: no refit, so it shares
            # the fit time; it shows what the adaptive encoder buys against MBDL's OMP codes.
            # deepcopy is the supported copy of a fitted estimator (pickling drops the
            # training state); transform_algorithm is an inference-time parameter.
            omp = copy.deepcopy(estimator).set_params(transform_algorithm="omp")
            variants.append(("MatchingPursuitSAE+OMP", f"k={k}, OMP at inference", omp))
        for model, label, encoder in variants:
            codes = encoder.transform(X_test - centre)
            if name == "mbdl":
                X_hat = codes @ encoder.components_ + centre
            else:
                X_hat = encoder.inverse_transform(codes)
            row = {
                "model": model,
                "sparsity": label,
                "r2": explained_variance(X_test, X_hat),
                "l0": l0(codes),
                "dead": int(dead_components(codes).sum()),
                "n_components": n_components,
                "fit_seconds": fit_seconds,
            }
            rows.append(row)
        if on_result is not None:
            on_result(rows[-len(variants)])  # once per fitted model
    return rows


def format_table(rows):
    """The comparison as one plain-text table."""
    header = ("model", "sparsity set by", "held-out R2", "mean L0", "dead atoms", "fit s")
    lines = [
        (
            r["model"],
            r["sparsity"],
            f"{r['r2']:.3f}",
            f"{r['l0']:.1f}",
            f"{r['dead']}/{r['n_components']}",
            f"{r['fit_seconds']:.1f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def render(cells):
        left = [cells[i].ljust(widths[i]) for i in range(2)]
        right = [cells[i].rjust(widths[i]) for i in range(2, len(cells))]
        return "  ".join(left + right).rstrip()

    rule = "-" * len(render(header))
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def plot_comparison(rows, path, title=""):
    """Save held-out R2 against L0, and fit time, for each model, as an image at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_quality, ax_time) = plt.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for row in rows:
        ax_quality.scatter(row["l0"], row["r2"], s=40, label=row["model"])
        ax_quality.annotate(
            row["model"].replace("MiniBatchDictionaryLearning", "MBDL"),
            (row["l0"], row["r2"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax_quality.set_xlabel("mean L0 (held out)")
    ax_quality.set_ylabel("held-out $R^2$")
    ax_quality.grid(True, alpha=0.3)
    labels = [r["model"].replace("MiniBatchDictionaryLearning", "MBDL") for r in rows]
    ax_time.barh(labels, [r["fit_seconds"] for r in rows], color="tab:gray")
    ax_time.set_xlabel("fit time (s)")
    ax_time.invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the command ----------------------------------------------------------------------------
def add_parser(commands):
    compare = commands.add_parser(
        "compare",
        help=f"compare the {len(estimator_specs())} SAEs with MiniBatchDictionaryLearning",
        description=f"Fit {', '.join(_classes())} and scikit-learn's "
        "MiniBatchDictionaryLearning (OMP codes) on one split and print one table of held-out "
        "R2, mean L0, dead atoms and fit time (MatchingPursuitSAE is also scored with OMP at "
        "inference, without refitting).",
    )
    compare.add_argument(
        "--data",
        default="mnist",
        metavar="{digits,mnist,PATH.npy}",
        help="mnist: 4000 train / 1000 held out (default); digits or a .npy file: 20%% held "
        "out (whole texts when the file has a per-row text index)",
    )
    compare.add_argument(
        "--test",
        metavar="HELD.npy",
        default=None,
        help="a fixed held-out file: --data (a .npy file) is then all training rows",
    )
    compare.add_argument(
        "--save-dir",
        metavar="DIR",
        default=None,
        help="save each fitted model there (NAME.safetensors; mbdl.joblib)",
    )
    compare.add_argument("--k", type=_positive_int, default=16, help="default: 16")
    compare.add_argument("--n-components", type=_positive_int, default=256, help="default: 256")
    compare.add_argument(
        "--alpha",
        type=_non_negative_float,
        default=None,
        help="ReLUSAE's L1 strength (default: ReLUSAE's, chosen for L0 near 16 on mnist)",
    )
    compare.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help=f"epochs of the SAEs (default: the estimators', {_defaults('max_iter')})",
    )
    compare.add_argument(
        "--models",
        default=",".join(model_names()),
        help=f"comma-separated subset of {','.join(model_names())} (default: all)",
    )
    compare.add_argument("--device", default="auto")
    compare.add_argument("--random-state", type=int, default=0, help="default: 0")
    compare.add_argument("--plot", metavar="PNG", default=None, help="also save a figure")
    compare.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    compare.set_defaults(subparser=compare, run=run)


def run(args):
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(model_names()))
    if unknown or not models:
        args.subparser.error(
            f"--models takes a subset of {','.join(model_names())}, got {args.models!r}"
        )
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 (only whether it is installed)
        except ImportError:
            raise CommandError(
                "--plot needs matplotlib: pip install -e '.[plot]' in the skmpsae checkout"
            ) from None
    if args.data not in ("digits", "mnist"):
        _load_npy(args.data)  # the same one-line errors as fit and encode
    if args.test is not None:
        if args.data in ("digits", "mnist"):
            args.subparser.error("--test takes the held-out rows of a --data .npy file")
        if _load_npy(args.test).shape[1] != _load_npy(args.data).shape[1]:
            raise CommandError(f"--test {args.test}: not as many features as {args.data}")
    save = _saver(args)
    X_train, X_test, name = load_comparison_data(args.data, args.random_state, args.test)
    report = _report(args.quiet)
    report(
        f"{name}: {X_train.shape[0]} train / {X_test.shape[0]} held out, "
        f"{X_train.shape[1]} features, {args.n_components} atoms"
    )
    alpha = DEFAULT_RELU_ALPHA if args.alpha is None else args.alpha
    progress = Progress(len(models), "compare", "model", not args.quiet)
    try:
        rows = compare_models(
            X_train,
            X_test,
            models=models,
            n_components=args.n_components,
            k=args.k,
            alpha=alpha,
            max_iter=args.max_iter,
            device=args.device,
            random_state=args.random_state,
            on_result=lambda row: progress.update(f"{row['model']} {row['fit_seconds']:.1f}s"),
            on_fitted=save,
        )
    finally:
        progress.close()
    print(
        f"{name}: {X_train.shape[0]} train / {X_test.shape[0]} held out, "
        f"{X_train.shape[1]} features"
    )
    print(format_table(rows))
    if args.plot is not None:
        plot_comparison(rows, args.plot, title=name)
        print(f"figure saved to {args.plot}")
    if args.save_dir is not None:
        print(f"models saved to {args.save_dir}")
    return 0


def _saver(args):
    """``on_fitted`` that saves each model in ``--save-dir`` (None without it)."""
    if args.save_dir is None:
        return None
    from pathlib import Path

    from .._activations.metadata import read_capture_metadata
    from .._atomic import atomic_write

    directory = Path(args.save_dir)
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"--save-dir {directory}: a file, not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    provenance = None
    if args.data not in ("digits", "mnist"):
        provenance = read_capture_metadata(args.data)

    def save(name, estimator):
        if name == "mbdl":
            import joblib

            with atomic_write(directory / "mbdl.joblib") as file:
                joblib.dump(estimator, file)
            return
        from ..io import save as save_model

        save_model(estimator, directory / f"{name}.safetensors", provenance=provenance)

    return save
