"""The ``skmpsae`` command line's parser: one module per command, each adding its own
sub-parser (``add_parser``) and running it (``run``, set as the parsed arguments' ``run``).
A new command is one module here plus its line in ``_COMMANDS``.
"""

from . import (
    capture,
    compare,
    encode,
    evaluate,
    export,
    fit,
    hookpoints,
    info,
    report,
    synth,
    train,
    tune,
)
from .common import _ArgumentParser

_COMMANDS = (
    capture,
    hookpoints,
    train,
    fit,
    encode,
    evaluate,
    export,
    info,
    report,
    compare,
    synth,
    tune,
)


def _build_parser():
    from .._version import __version__

    parser = _ArgumentParser(
        prog="skmpsae",
        description=_description(),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_ArgumentParser
    )
    commands.required = True
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser


def _description():
    from .._models.registry import estimator_specs

    names = [spec.estimator.__name__ for spec in estimator_specs().values()]
    return (
        f"Sparse autoencoders ({', '.join(names)}) on .npy files: capture a model's "
        "activations, fit, encode, evaluate and export."
    )
