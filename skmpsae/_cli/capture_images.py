"""``skmpsae capture MODEL --images SOURCE``: an image model's activations into a ``.npy`` file."""

from .common import CommandError


def run_images(args, output):
    from .._activations.hooks import UnknownHookpoint
    from .._activations.metadata import model_source, update_capture_metadata
    from ..activations import capture, load_model

    for flag, value in (
        ("--context-size", args.context_size),
        ("--text-field", args.text_field),
        ("--split", args.split),
        ("--max-length", args.max_length),
    ):
        if value is not None:
            raise CommandError(f"{flag} applies to texts, not to --images")
    if args.skip_special_tokens:
        raise CommandError(
            "--skip-special-tokens applies to texts; --image-tokens picks the rows of an image"
        )
    try:
        model, _ = load_model(args.model, device=args.device)
        X = capture(
            model,
            images=args.images,
            hookpoint=args.hookpoint,
            output=output,
            image_tokens=args.image_tokens or "patches",
            capture_input=args.input,
            batch_size=args.batch_size,
            overwrite=args.overwrite,
            verbose=not args.quiet,
        )
    except UnknownHookpoint as exc:
        raise CommandError(
            f"--hookpoint {exc.hookpoint!r}: not a module of {args.model} (closest: "
            f"{', '.join(exc.closest)}; list them with 'skmpsae hookpoints {args.model}')"
        ) from None
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        message = _cli_spelling(exc).replace(
            "needs image_processor= (", "needs an image processor config in its directory ("
        )
        raise CommandError(message) from None
    meta = update_capture_metadata(output, model=model_source(args.model))
    note = f"; {meta['converted']}" if meta.get("converted") else ""
    print(
        f"captured {X.shape[0]} rows x {X.shape[1]} features from {meta['n_images']} images "
        f"at {args.hookpoint}{note}; saved to {output} (settings in {output}.meta.json)"
    )
    return 0


def _cli_spelling(exc):
    """A capture error in the command line's words."""
    message = str(exc).replace("overwrite=True", "--overwrite")
    message = message.replace("texts given", "--texts given")
    message = message.replace("images given", "--images given").replace("images=", "--images")
    message = message.replace("image_tokens='mean'", "--image-tokens mean")
    message = message.replace("image_tokens", "--image-tokens")
    return "--" + message if message.startswith("hookpoint ") else message
