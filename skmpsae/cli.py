"""The ``skmpsae`` command line: fit an SAE on a ``.npy`` file, encode, compare models.

Errors are reported as one line on stderr, never as a traceback: exit status 2 for a bad
command line (unknown option, invalid value), 1 for a failure while running (missing or
unreadable file, wrong shape, training error). ``SKMPSAE_TRACEBACK=1`` shows the traceback.
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from ._atomic import atomic_write
from ._progress import Progress, describe_epoch

_ENCODE_CHUNK = 4096


# --model names and their estimators; the penalised ones set sparsity by --alpha, not --k.
_MODELS = {
    "mp": "MatchingPursuitSAE", "topk": "TopKSAE", "batchtopk": "BatchTopKSAE",
    "matryoshka": "MatryoshkaSAE", "jumprelu": "JumpReLUSAE", "relu": "ReLUSAE",
}
_PENALISED_MODELS = {"relu", "jumprelu"}

class CommandError(Exception):
    """A failure to report as one line, with exit status 1."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block first; one line that points to --help is easier
        # to read in a terminal and to match in scripts.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text, allow_zero=False):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise argparse.ArgumentTypeError(f"expected {kind} number, got {text!r}")
    return value


def _learning_rate(text):
    return "auto" if text == "auto" else _positive_float(text)


def _non_negative_float(text):
    return _positive_float(text, allow_zero=True)


def _build_parser():
    from . import __version__
    from ._compare import MODEL_NAMES

    parser = _ArgumentParser(
        prog="skmpsae",
        description="Sparse autoencoders (matching pursuit, TopK, ReLU) on .npy files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND",
                                     parser_class=_ArgumentParser)
    commands.required = True

    fit = commands.add_parser(
        "fit", help="train an SAE on a 2-D .npy file (memory-mapped, streamed by batch)",
        description="Train an SAE on DATA.npy, read memory-mapped and streamed batch by batch; "
        "float32 and float64 files are never loaded whole.",
    )
    fit.add_argument("data", metavar="DATA.npy", help="2-D array (n_samples, n_features)")
    fit.add_argument("--model", choices=list(_MODELS), default="mp", help="default: mp")
    fit.add_argument("--n-components", type=_positive_int, default=None,
                     help="default: the estimator's (256)")
    fit.add_argument("--k", type=_positive_int, default=None,
                     help="non-zero codes per sample for mp, topk, batchtopk and matryoshka "
                     "(default: the estimator's n_nonzero_coefs, 16)")
    fit.add_argument("--alpha", type=_non_negative_float, default=None,
                     help="sparsity penalty for relu (L1) and jumprelu (L0) (default: the "
                     "estimator's)")
    fit.add_argument("--batch-size", type=_positive_int, default=None,
                     help="default: the estimator's (256)")
    fit.add_argument("--max-iter", type=_positive_int, default=None,
                     help="epochs (default: the estimator's, 50)")
    fit.add_argument("--learning-rate", type=_learning_rate, default=None,
                     help="a positive number or 'auto' (default: the estimator's)")
    fit.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    fit.add_argument("--random-state", type=int, default=None, help="seed (default: none)")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL",
                     help="MODEL.safetensors (safe to share: loading runs no code) or "
                     "MODEL.joblib (a pickle)")
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    fit.add_argument("--nproc-per-node", type=_positive_int, default=1, metavar="N",
                     help="train data-parallel in N local worker processes started by "
                     "torch.distributed.run (gloo on the CPU, nccl on GPUs; default: 1)")
    fit.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                     help="save a checkpoint (DIR/checkpoint.pt, replaced atomically) every "
                     "--checkpoint-every steps and at each epoch's end")
    fit.add_argument("--checkpoint-every", type=_positive_int, default=1000, metavar="STEPS",
                     help="steps between checkpoints (default: 1000)")
    fit.add_argument("--resume", action="store_true",
                     help="continue from the checkpoint in --checkpoint-dir, with the same "
                     "data and options as the interrupted run")
    fit.set_defaults(subparser=fit)

    encode = commands.add_parser(
        "encode", help="encode a .npy file with a fitted model into a sparse .npz matrix",
        description="Encode DATA.npy chunk by chunk and save the codes as a scipy sparse CSR "
        "matrix (load it with scipy.sparse.load_npz).",
    )
    encode.add_argument("model", metavar="MODEL",
                        help="a .safetensors or .joblib file written by 'skmpsae fit'")
    encode.add_argument("data", metavar="DATA.npy")
    encode.add_argument("-o", "--output", required=True, metavar="CODES.npz")
    encode.add_argument("--chunk-size", type=_positive_int, default=_ENCODE_CHUNK,
                        help=f"rows encoded at a time (default: {_ENCODE_CHUNK})")
    encode.add_argument("--device", default=None, help="override the model's device")
    encode.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    encode.set_defaults(subparser=encode)

    compare = commands.add_parser(
        "compare", help="compare MP, TopK and ReLU SAEs with MiniBatchDictionaryLearning",
        description="Fit MatchingPursuitSAE, TopKSAE, ReLUSAE and scikit-learn's "
        "MiniBatchDictionaryLearning (OMP codes) on one split and print one table of held-out "
        "R2, mean L0, dead atoms and fit time.",
    )
    compare.add_argument("--data", default="mnist", metavar="{digits,mnist,PATH.npy}",
                         help="mnist: 4000 train / 1000 held out (default); digits or a .npy "
                         "file: 20%% held out")
    compare.add_argument("--k", type=_positive_int, default=16, help="default: 16")
    compare.add_argument("--n-components", type=_positive_int, default=256, help="default: 256")
    compare.add_argument("--alpha", type=_non_negative_float, default=None,
                         help="ReLUSAE's L1 strength (default: ReLUSAE's, chosen for L0 near 16 "
                         "on mnist)")
    compare.add_argument("--max-iter", type=_positive_int, default=None,
                         help="epochs of the SAEs (default: the estimators' 50)")
    compare.add_argument("--models", default=",".join(MODEL_NAMES),
                         help=f"comma-separated subset of {','.join(MODEL_NAMES)} (default: all)")
    compare.add_argument("--device", default="auto")
    compare.add_argument("--random-state", type=int, default=0, help="default: 0")
    compare.add_argument("--plot", metavar="PNG", default=None, help="also save a figure")
    compare.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    compare.set_defaults(subparser=compare)

    from .activations import _add_capture_command

    _add_capture_command(commands, _positive_int)
    return parser


# -- data ----------------------------------------------------------------------------------
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
    from ._distributed import destroy, init_from_environment, is_main_process
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
        "n_components": args.n_components, "batch_size": args.batch_size,
        "max_iter": args.max_iter, "learning_rate": args.learning_rate,
        "n_nonzero_coefs": args.k, "alpha": args.alpha,
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
    report(f"{verb} {type(estimator).__name__} on {X.shape[0]} x {X.shape[1]} ({X.dtype}) "
           f"from {args.data}")
    progress = Progress(estimator.max_iter, type(estimator).__name__, "epoch", not quiet)
    estimator.set_params(callback=lambda info: progress.update(describe_epoch(info)))
    try:
        estimator.fit(X, checkpoint_dir=args.checkpoint_dir,
                      checkpoint_every=args.checkpoint_every, resume=args.resume)
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
    launcher_argv = ["--standalone", "--nproc-per-node", str(args.nproc_per_node),
                     "--monitor-interval", "0.5", "-m", "skmpsae", *args.argv]
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

    from ._base import _BaseSAE

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
    from ._compare import (
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
        args.subparser.error(f"--models takes a subset of {','.join(MODEL_NAMES)}, got "
                             f"{args.models!r}")
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401 (only whether it is installed)
        except ImportError:
            raise CommandError("--plot needs matplotlib: pip install 'skmpsae[plot]'") from None
    if args.data not in ("digits", "mnist"):
        _load_npy(args.data)  # the same one-line errors as fit and encode
    X_train, X_test, name = load_comparison_data(args.data, args.random_state)
    report = _report(args.quiet)
    report(f"{name}: {X_train.shape[0]} train / {X_test.shape[0]} held out, "
           f"{X_train.shape[1]} features, {args.n_components} atoms")
    alpha = DEFAULT_RELU_ALPHA if args.alpha is None else args.alpha
    progress = Progress(len(models), "compare", "model", not args.quiet)
    try:
        rows = compare_models(
            X_train, X_test, models=models, n_components=args.n_components, k=args.k,
            alpha=alpha, max_iter=args.max_iter, device=args.device,
            random_state=args.random_state,
            on_result=lambda row: progress.update(f"{row['model']} {row['fit_seconds']:.1f}s"),
        )
    finally:
        progress.close()
    print(f"{name}: {X_train.shape[0]} train / {X_test.shape[0]} held out, "
          f"{X_train.shape[1]} features")
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

        runners = {"fit": _run_fit, "encode": _run_encode, "compare": _run_compare,
                   "capture": _run_capture}
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
