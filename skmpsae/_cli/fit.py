"""``skmpsae fit``: train an SAE on a ``.npy`` file (data-parallel with --nproc-per-node)."""

import os
from pathlib import Path

from .._atomic import atomic_write
from .._models.registry import estimator_specs
from .._train.progress import Progress, describe_epoch
from .common import (
    CommandError,
    _as_float_for_training,
    _learning_rate,
    _load_npy,
    _non_negative_float,
    _positive_int,
    _report,
)


def add_parser(commands):
    fit = commands.add_parser(
        "fit",
        help="train an SAE on a 2-D .npy file (memory-mapped, streamed by batch)",
        description="Train an SAE on DATA.npy, read memory-mapped and streamed batch by batch; "
        "float32 and float64 files are never loaded whole.",
    )
    fit.add_argument("data", metavar="DATA.npy", help="2-D array (n_samples, n_features)")
    fit.add_argument("--model", choices=list(estimator_specs()), default="mp", help="default: mp")
    fit.add_argument(
        "--n-components", type=_positive_int, default=None, help="default: the estimator's (256)"
    )
    fit.add_argument(
        "--k",
        type=_positive_int,
        default=None,
        help="non-zero codes per sample for mp, topk, batchtopk and matryoshka "
        "(default: the estimator's n_nonzero_coefs, 16)",
    )
    fit.add_argument(
        "--alpha",
        type=_non_negative_float,
        default=None,
        help="sparsity penalty for relu (L1) and jumprelu (L0) (default: the estimator's)",
    )
    fit.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default: the estimator's (256)"
    )
    fit.add_argument(
        "--max-iter", type=_positive_int, default=None, help="epochs (default: the estimator's, 50)"
    )
    fit.add_argument(
        "--learning-rate",
        type=_learning_rate,
        default=None,
        help="a positive number or 'auto' (default: the estimator's)",
    )
    fit.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    fit.add_argument("--random-state", type=int, default=None, help="seed (default: none)")
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="MODEL.safetensors (safe to share: loading runs no code) or MODEL.joblib (a pickle)",
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
    estimator = spec.estimator(device=args.device, random_state=args.random_state, **params)

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
        from ..io import save

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
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as launch

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
        launch(get_args_parser().parse_args(launcher_argv))
    except ChildFailedError as exc:
        ranks = sorted(exc.failures)
        first = exc.failures[ranks[0]]
        raise CommandError(
            f"worker rank {first.local_rank} of {args.nproc_per_node} failed (exit status "
            f"{first.exitcode}); its message is above"
        ) from None
    return 0
