"""``skmpsae fit``: train an SAE on a ``.npy`` file (data-parallel with --nproc-per-node)."""

import os
import sys
import warnings
from pathlib import Path

from .._atomic import atomic_write
from .._models.registry import estimator_specs
from .._train.progress import Progress, describe_epoch
from .._utils import SigintHandler
from .common import (
    MODEL_SUFFIXES,
    CommandError,
    _add_param_option,
    _check_output_dir,
    _check_suffix,
    _defaults,
    _emit,
    _estimator_params,
    _launch_workers,
    _learning_rate,
    _non_negative_float,
    _positive_int,
    _report,
    _silence,
)
from .fit_sources import training_rows
from .inputs import _load_npy

# Estimator parameters that have a flag of their own (or that the command sets), not --param.
_FLAGS = {
    "n_components": "use --n-components",
    "n_nonzero_coefs": "use --k",
    "alpha": "use --alpha",
    "batch_size": "use --batch-size",
    "max_iter": "use --max-iter",
    "learning_rate": "use --learning-rate",
    "device": "use --device",
    "random_state": "use --random-state",
    "verbose": "skmpsae fit shows its own progress (-q/--quiet hides it)",
    "callback": "skmpsae fit shows its own progress (-q/--quiet hides it)",
}

# Exit status after Ctrl-C, as a shell reports a process killed by SIGINT (128 + 2).
_INTERRUPTED = 130


def add_parser(commands):
    fit = commands.add_parser(
        "fit",
        help="train an SAE on a 2-D .npy file (memory-mapped, streamed by batch)",
        description="Train an SAE on DATA.npy, read memory-mapped and streamed batch by batch; "
        "float32 and float64 files are never loaded whole.",
    )
    fit.add_argument(
        "data",
        metavar="DATA.npy",
        nargs="+",
        help="2-D array (n_samples, n_features); several files (image and text rows, say) train "
        "one SAE on their rows joined in memory and shuffled together",
    )
    fit.add_argument("--model", choices=list(estimator_specs()), default="mp", help="default: mp")
    specs = estimator_specs()
    k_models = [name for name, spec in specs.items() if not spec.penalised]
    alpha_models = [name for name, spec in specs.items() if spec.penalised]
    fit.add_argument(
        "--n-components",
        type=_positive_int,
        default=None,
        help=f"atoms (default: the estimator's, {_defaults('n_components')})",
    )
    fit.add_argument(
        "--k",
        type=_positive_int,
        default=None,
        help=f"non-zero codes per sample for {', '.join(k_models)} "
        f"(default: the estimator's n_nonzero_coefs, {_defaults('n_nonzero_coefs', k_models)})",
    )
    fit.add_argument(
        "--alpha",
        type=_non_negative_float,
        default=None,
        help=f"sparsity penalty for {', '.join(alpha_models)} "
        f"(default: the estimator's, {_defaults('alpha', alpha_models)})",
    )
    fit.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"default: the estimator's, {_defaults('batch_size')}",
    )
    fit.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help=f"epochs (default: the estimator's, {_defaults('max_iter')})",
    )
    held_out = fit.add_mutually_exclusive_group()
    held_out.add_argument(
        "--validation",
        metavar="HELD.npy",
        default=None,
        help="held-out activations, scored after training (R2, L0, dead atoms)",
    )
    held_out.add_argument(
        "--validation-fraction",
        type=_fraction,
        default=None,
        metavar="F",
        help="hold out the last F of DATA's texts (of its rows when DATA has no per-row "
        "text index) and score the model on them after training",
    )
    fit.add_argument(
        "--learning-rate",
        type=_learning_rate,
        default=None,
        help="a positive number or 'auto' (default: the estimator's)",
    )
    fit.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    fit.add_argument("--random-state", type=int, default=None, help="seed (default: none)")
    _add_param_option(fit)
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="MODEL.safetensors (safe to share: loading runs no code) or MODEL.joblib (a "
        "pickle); with captured DATA, the safetensors file records where it came from",
    )
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    fit.add_argument(
        "--nproc-per-node",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train data-parallel in N local worker processes started by "
        "torch.distributed.run (gloo on the CPU, nccl on GPUs; default: 1)",
    )
    fit.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="save a checkpoint (DIR/checkpoint.pt, replaced atomically) every "
        "--checkpoint-every steps and at each epoch's end",
    )
    fit.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1000,
        metavar="STEPS",
        help="steps between checkpoints (default: 1000)",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in --checkpoint-dir, with the same "
        "data and options as the interrupted run",
    )
    fit.set_defaults(subparser=fit, run=run)


def _fraction(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def run(args):
    from .._train.distributed import destroy, init_from_environment, is_main_process
    from .._utils import resolve_device

    specs = estimator_specs()
    spec = specs[args.model]
    penalised = sorted(name for name, other in specs.items() if other.penalised)
    if spec.penalised and args.k is not None:
        k_models = sorted(set(specs) - set(penalised))
        args.subparser.error(
            f"--k applies to --model {', '.join(k_models)}; "
            f"{spec.estimator.__name__}'s sparsity is set by --alpha"
        )
    if not spec.penalised and args.alpha is not None:
        args.subparser.error(
            f"--alpha applies to --model {' and '.join(penalised)} only; use --k for {args.model}"
        )
    args.sources = list(args.data)  # several files: their rows train one SAE
    args.data = " + ".join(str(path) for path in args.sources)
    if args.resume and args.checkpoint_dir is None:
        args.subparser.error("--resume needs --checkpoint-dir, the directory to resume from")
    _check_suffix(
        args.output,
        MODEL_SUFFIXES,
        "-o",
        "skmpsae writes MODEL.safetensors (recommended: loading runs no code) or MODEL.joblib "
        "(a pickle)",
    )
    # Inside a worker started by a launcher (torchrun sets LOCAL_RANK), --nproc-per-node has
    # done its work: the worker trains, it does not launch again.
    in_worker = "LOCAL_RANK" in os.environ
    if args.nproc_per_node > 1 and not in_worker:
        return _launch_fit_workers(args)
    # Options left out keep the estimator's own defaults.
    options = {
        "n_components": args.n_components,
        "batch_size": args.batch_size,
        "max_iter": args.max_iter,
        "learning_rate": args.learning_rate,
        "n_nonzero_coefs": args.k,
        "alpha": args.alpha,
    }
    params = _estimator_params(args, spec.estimator, options, _FLAGS)
    estimator = spec.estimator(device=args.device, random_state=args.random_state, **params)

    device = resolve_device(args.device)  # fail before reading any data
    output = Path(args.output)
    _check_output_dir(output, "output model")
    if in_worker and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        estimator.set_params(device=init_from_environment(device))
    status = _fit_and_save(args, estimator, output, is_main_process())
    destroy()  # after success only: a failed rank exits, and the launcher stops the others
    return status


def _fit_and_save(args, estimator, output, main_process):
    """Fit (data-parallel under a process group) and write the model; only the main process
    reports and writes. Ctrl-C after an epoch saves the last completed epoch's model."""
    quiet = args.quiet or not main_process
    report = _report(quiet)
    X, provenance, X_held, held_note = training_rows(args, report)
    if main_process:
        _check_room(estimator, X, output, args.checkpoint_dir)
    verb = "resuming" if args.resume else "fitting"
    report(
        f"{verb} {type(estimator).__name__} on {X.shape[0]} x {X.shape[1]} ({X.dtype}) "
        f"from {args.data}{held_note}"
    )
    progress = Progress(estimator.max_iter, type(estimator).__name__, "epoch", not quiet)
    estimator.set_params(callback=lambda info: _update(progress, describe_epoch(info)))
    interrupt = _Interrupt()
    try:
        with interrupt, warnings.catch_warnings():
            # The message below says what the estimator's warning would.
            warnings.filterwarnings("ignore", message="Training interrupted")
            estimator.fit(
                X,
                checkpoint_dir=args.checkpoint_dir,
                checkpoint_every=args.checkpoint_every,
                resume=args.resume,
            )
    except KeyboardInterrupt:
        _close(progress)
        if main_process:
            _emit(
                "skmpsae fit: interrupted before the first epoch ended; nothing saved", sys.stderr
            )
        return _INTERRUPTED
    finally:
        _close(progress)
        estimator.set_params(callback=None)  # a lambda neither pickles nor means anything later
    if not main_process:
        return 0
    if provenance:
        estimator.provenance_ = provenance
    if interrupt.seen:
        _save(estimator, output)
        _emit(
            f"skmpsae fit: interrupted; saved the model of the last completed epoch "
            f"({estimator.n_iter_} of {estimator.max_iter}) to {output}",
            sys.stderr,
        )
        return _INTERRUPTED
    scores = ""
    if X_held is not None:
        from .evaluate import evaluate_rows

        held = evaluate_rows(estimator, X_held)
        held["source"] = args.validation or f"last {args.validation_fraction:g} of {args.data}"
        estimator.provenance_ = {**provenance, "held_out": held}
        scores = (
            f"; held-out R2 {held['r2']:.4f}, L0 {held['l0']:.2f}, dead atoms "
            f"{held['dead']}/{held['n_components']} on {held['n_rows']} rows"
        )
    _save(estimator, output)
    epochs = f"{estimator.n_iter_} epoch{'s' * (estimator.n_iter_ != 1)}"
    _emit(
        f"{type(estimator).__name__}: {epochs}, final loss "
        f"{estimator.loss_curve_[-1]:.4g}, dead atoms {estimator.n_dead_components_}/"
        f"{estimator.n_components}{scores}; saved to {output}"
    )
    return 0


def _check_room(estimator, X, output, checkpoint_dir):
    """Fail now, not after training, where the model (or a checkpoint: the parameters with
    Adam's two moments, and its atomic replacement's copy) would not fit."""
    from .disk import check_free_space, model_bytes

    size = model_bytes(estimator, X.shape[1], X.dtype.itemsize)
    needs = [(output.parent, size, "the model")]
    if checkpoint_dir is not None:
        needs.append((Path(checkpoint_dir), 2 * 3 * size, "checkpoints"))
    check_free_space(needs)


def _save(estimator, output):
    from .disk import save_or_rescue

    save_or_rescue(_write_model, estimator, output)


def _write_model(estimator, output):
    import joblib

    if output.suffix == ".safetensors":
        from ..io import save

        save(estimator, output)  # replaces the file atomically itself
    else:
        with atomic_write(output) as file:
            joblib.dump(estimator, file)


class _Interrupt(SigintHandler):
    """Within the block, Ctrl-C raises KeyboardInterrupt as usual and is remembered
    (``seen``), including when the estimator catches it to keep its last completed epoch."""

    def __init__(self):
        self.seen = False

    def _handler(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt


def _update(progress, info):
    try:
        progress.update(info)
    except OSError:  # stderr's reader has gone (a killed '| tee'): keep training, silently
        _silence(sys.stderr)


def _close(progress):
    try:
        progress.close()
    except OSError:
        _silence(sys.stderr)


def _launch_fit_workers(args):
    """Check what every worker would otherwise report once per rank, then launch them."""
    output = Path(args.output)
    if not output.parent.is_dir():
        raise CommandError(f"{output.parent}: no such directory for the output model")
    for path in args.sources:
        _load_npy(path)
    return _launch_workers(args)
