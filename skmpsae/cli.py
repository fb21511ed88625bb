"""The ``skmpsae`` command line: fit an SAE on a ``.npy`` file, encode, compare models.

Errors are reported as one line on stderr, never as a traceback: exit status 2 for a bad
command line (unknown option, invalid value), 1 for a failure while running (missing or
unreadable file, wrong shape, training error). ``SKMPSAE_TRACEBACK=1`` shows the traceback.
"""

import os
import sys
import warnings
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._cli.parser import _MODELS, _PENALISED_MODELS, _build_parser
from ._train.progress import Progress, describe_epoch


class CommandError(Exception):
    """A failure to report as one line, with exit status 1."""


def _load_npy(path):
    """A 2-D numeric array from ``path``, memory-mapped (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise CommandError(f"{path}: not a readable .npy array ({exc})") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc})") from None
    if not isinstance(X, np.ndarray):
        X.close()
        raise CommandError(f"{path}: expected a .npy file holding one array, got a .npz archive")
    if X.ndim != 2:
        raise CommandError(
            f"{path}: expected a 2-D array (n_samples, n_features), got shape {X.shape}; "
            "reshape it, e.g. X.reshape(-1, X.shape[-1]) for (batch, tokens, features) dumps"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CommandError(f"{path}: the array is empty (shape {X.shape})")
    if X.dtype.kind not in "biuf":
        raise CommandError(f"{path}: expected real numbers, got dtype {X.dtype}")
    return X


def _as_float_for_training(X, path, report):
    if X.dtype in (np.float32, np.float64):
        return X
    # The estimators compute in float32 or float64; any other dtype has to be converted, and
    # for a whole training set that means holding it in memory.
    report(
        f"note: {path} has dtype {X.dtype}; converting it to float32 in memory "
        f"({X.shape[0] * X.shape[1] * 4 / 2**20:.0f} MiB). Save float32 to stream it from disk."
    )
    return np.asarray(X, dtype=np.float32)


# -- commands ------------------------------------------------------------------------------
def _report(quiet):
    return (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr))


def _run_fit(args):
    from ._train.distributed import destroy, init_from_environment, is_main_process
    from ._utils import resolve_device

    penalised = args.model in _PENALISED_MODELS
    if penalised and args.k is not None:
        args.subparser.error(
            f"--k applies to --model {', '.join(sorted(set(_MODELS) - _PENALISED_MODELS))}; "
            f"{_MODELS[args.model]}'s sparsity is set by --alpha"
        )
    if not penalised and args.alpha is not None:
        args.subparser.error(
            f"--alpha applies to --model {' and '.join(sorted(_PENALISED_MODELS))} only; use "
            f"--k for {args.model}"
        )
    if args.resume and args.checkpoint_dir is None:
        args.subparser.error("--resume needs --checkpoint-dir, the directory to resume from")
    # Inside a worker started by a launcher (torchrun sets LOCAL_RANK), --nproc-per-node has
    # done its work: the worker trains, it does not launch again.
    in_worker = "LOCAL_RANK" in os.environ
    if args.nproc_per_node > 1 and not in_worker:
        return _launch_workers(args)
    # Options left out keep the estimator's own defaults.
    options = {
        "n_components": args.n_components,
        "batch_size": args.batch_size,
        "max_iter": args.max_iter,
        "learning_rate": args.learning_rate,
        "n_nonzero_coefs": args.k,
        "alpha": args.alpha,
    }
    params = {name: value for name, value in options.items() if value is not None}
    import skmpsae

    Estimator = getattr(skmpsae, _MODELS[args.model])
    estimator = Estimator(device=args.device, random_state=args.random_state, **params)

    device = resolve_device(args.device)  # fail before reading any data
    output = Path(args.output)
    if not output.parent.is_dir():
        raise CommandError(f"{output.parent}: no such directory for the output model")
    if in_worker and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        estimator.set_params(device=init_from_environment(device))
    status = _fit_and_save(args, estimator, output, is_main_process())
    destroy()  # after success only: a failed rank exits, and the launcher stops the others
    return status


def _fit_and_save(args, estimator, output, main_process):
    """Fit (data-parallel under a process group) and write the model; only the main process
    reports and writes."""
    import joblib

    quiet = args.quiet or not main_process
    report = _report(quiet)
    X = _as_float_for_training(_load_npy(args.data), args.data, report)
    verb = "resuming" if args.resume else "fitting"
    report(
        f"{verb} {type(estimator).__name__} on {X.shape[0]} x {X.shape[1]} ({X.dtype}) "
        f"from {args.data}"
    )
    progress = Progress(estimator.max_iter, type(estimator).__name__, "epoch", not quiet)
    estimator.set_params(callback=lambda info: progress.update(describe_epoch(info)))
    try:
        estimator.fit(
            X,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
    finally:
        progress.close()
        estimator.set_params(callback=None)  # a lambda neither pickles nor means anything later
    if not main_process:
        return 0
    if output.suffix == ".safetensors":
        from .io import save

        save(estimator, output)  # replaces the file atomically itself
    else:
        with atomic_write(output) as file:
            joblib.dump(estimator, file)
    print(
        f"{type(estimator).__name__}: {estimator.n_iter_} epochs, final loss "
        f"{estimator.loss_curve_[-1]:.4g}, dead atoms {estimator.n_dead_components_}/"
        f"{estimator.n_components}; saved to {output}"
    )
    return 0


def _launch_workers(args):
    """Run this same command in ``--nproc-per-node`` local workers with torch's launcher
    (``torch.distributed.run --standalone``: a rendezvous on a free local port)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    output = Path(args.output)
    if not output.parent.is_dir():
        raise CommandError(f"{output.parent}: no such directory for the output model")
    _load_npy(args.data)  # one error here rather than one per worker
    # The workers get this very command line; inside the launcher they train instead of
    # launching again (see _run_fit).
    launcher_argv = [
        "--standalone",
        "--nproc-per-node",
        str(args.nproc_per_node),
        "--monitor-interval",
        "0.5",
        "-m",
        "skmpsae",
        *args.argv,
    ]
    try:
        run(get_args_parser().parse_args(launcher_argv))
    except ChildFailedError as exc:
        ranks = sorted(exc.failures)
        first = exc.failures[ranks[0]]
        raise CommandError(
            f"worker rank {first.local_rank} of {args.nproc_per_node} failed (exit status "
            f"{first.exitcode}); its message is above"
        ) from None
    return 0


def _load_model(path):
    import joblib

    from ._models.base import _BaseSAE

    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from .io import load

        return load(path)
    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling fails with many exception types
        raise CommandError(
            f"{path}: not a model saved by 'skmpsae fit' ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, _BaseSAE) or not hasattr(model, "components_"):
        raise CommandError(f"{path}: not a fitted skmpsae model (got {type(model).__name__})")
    return model


def _run_encode(args):
    from scipy import sparse

    model = _load_model(args.model)
    if args.device is not None:
        model.set_params(device=args.device)
    X = _load_npy(args.data)
    if X.shape[1] != model.n_features_in_:
        raise CommandError(
            f"{args.data}: has {X.shape[1]} features, but the model was fitted on "
            f"{model.n_features_in_}"
        )
    output = Path(args.output)
    if output.suffix != ".npz":
        output = output.with_name(output.name + ".npz")  # where save_npz would write anyway
    if not output.parent.is_dir():
        raise CommandError(f"{output.parent}: no such directory for the output codes")
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
    starts = range(0, X.shape[0], args.chunk_size)
    progress = Progress(len(starts), "encode", "chunk", not args.quiet)
    blocks = []
    try:
        for start in starts:
            # Only this chunk is read from the file (and converted, for other dtypes).
            chunk = np.asarray(X[start : start + args.chunk_size], dtype=dtype)
            # The sparse path: no dense (chunk, n_components) codes, whatever the model's
            # sparse_output says (at 65,536 atoms a dense chunk of 4,096 rows is 1 GB).
            blocks.append(model._sparse_codes(chunk))
            progress.update()
    finally:
        progress.close()
    codes = sparse.vstack(blocks, format="csr")
    with atomic_write(output) as file:
        sparse.save_npz(file, codes)
    print(
        f"encoded {codes.shape[0]} samples into {codes.shape[1]} components, mean L0 "
        f"{codes.nnz / codes.shape[0]:.2f}; saved to {output}"
    )
    return 0


def _run_compare(args):
    from ._cli.compare import (
        DEFAULT_RELU_ALPHA,
        MODEL_NAMES,
        compare_models,
        format_table,
        load_comparison_data,
        plot_comparison,
    )

    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown or not models:
        args.subparser.error(
            f"--models takes a subset of {','.join(MODEL_NAMES)}, got {args.models!r}"
        )
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 (only whether it is installed)
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install 'skmpsae[plot]'") from None
    if args.data not in ("digits", "mnist"):
        _load_npy(args.data)  # the same one-line errors as fit and encode
    X_train, X_test, name = load_comparison_data(args.data, args.random_state)
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
    return 0


def _one_line_warning(message, category, filename, lineno, line=None):
    return f"skmpsae: warning: {message}\n"


def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = _build_parser().parse_args(argv)
        args.argv = argv
        from .activations import _run_capture

        runners = {
            "fit": _run_fit,
            "encode": _run_encode,
            "compare": _run_compare,
            "capture": _run_capture,
        }
        return _run(runners[args.command], args)
    except SystemExit as exit_:  # --help, --version and usage errors
        if exit_.code is None:
            return 0
        return exit_.code if isinstance(exit_.code, int) else 1


def _run(runner, args):
    previous_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        return runner(args)
    except KeyboardInterrupt:
        print("skmpsae: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SKMPSAE_TRACEBACK"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, (CommandError, ValueError, OSError, MemoryError)):
            message = f"{type(exc).__name__}: {message}"
        print(f"skmpsae {args.command}: error: {message}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
