"""``skmpsae tune``: measure MatchingPursuitSAE's fastest selection path on this machine and
save it, so that later fits of those sizes skip the measuring (fits themselves write no file)."""

from .common import _emit, _positive_float, _positive_int


def add_parser(commands):
    tune = commands.add_parser(
        "tune",
        help="measure and save MatchingPursuitSAE's fastest selection path for given sizes",
        description="Time the exact selection paths of matching pursuit (whole Gram matrix, "
        "Gram rows, one GEMM per step) on a random training batch of the given sizes, and "
        "save the fastest in the selection cache file (~/.cache/skmpsae/selection.json; "
        "SKMPSAE_CACHE_DIR moves it). MatchingPursuitSAE fits with selection_method='auto' "
        "on this machine (same processor, thread count and torch) then read it instead of "
        "measuring on their first batch. Fits write no file unless SKMPSAE_SELECTION_CACHE=1.",
    )
    tune.add_argument("--n-components", type=_positive_int, required=True, metavar="K")
    tune.add_argument("--n-features", type=_positive_int, required=True, metavar="D")
    tune.add_argument(
        "--n-nonzero-coefs", type=_positive_int, default=16, metavar="k", help="default: 16"
    )
    tune.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        metavar="N",
        help="rows per training batch (default: MatchingPursuitSAE's batch_size='auto' rule)",
    )
    tune.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    tune.add_argument(
        "--cache-size", type=_positive_float, default=2048, metavar="MIB", help="default: 2048"
    )
    tune.add_argument(
        "--signed", action="store_true", help="positive_code=False (default: positive codes)"
    )
    tune.add_argument(
        "--selection-dtype", choices=["bfloat16", "float16"], default=None, help="default: none"
    )
    tune.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    tune.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="torch threads, as the fits will run (default: torch's default)",
    )
    tune.set_defaults(subparser=tune, run=run)


def run(args):
    import torch

    from .._models.matching_pursuit import MatchingPursuitSAE
    from .._pursuit.autotune import tune
    from .._utils import resolve_device
    from .common import CommandError

    try:
        device = resolve_device(args.device)
    except ValueError:
        raise CommandError(
            f"--device {args.device}: not a device torch can use here (cpu, cuda, cuda:N)"
        ) from None
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    batch = args.batch_size
    if batch is None:
        batch = MatchingPursuitSAE(n_components=args.n_components)._batch_size()
    selection_dtype = None if args.selection_dtype is None else getattr(torch, args.selection_dtype)
    result = tune(
        batch,
        args.n_components,
        args.n_features,
        args.n_nonzero_coefs,
        dtype=getattr(torch, args.dtype),
        positive=not args.signed,
        max_bytes=int(args.cache_size * 2**20),
        compute_dtype=selection_dtype,
        device=device,
    )
    timed = ", ".join(f"{path} {s:.3g} s" for path, s in result.seconds.items())
    _emit(
        f"selection path for {args.n_components} atoms, {args.n_features} features, "
        f"k={args.n_nonzero_coefs}, batches of {batch}: {result.path} "
        f"({timed or 'the only candidate; nothing to time'}); saved in {result.file}"
    )
    return 0
