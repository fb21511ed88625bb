"""The ``skmpsae`` command line's parser: one module per command, each adding its own
sub-parser (``add_parser``) and running it (``run``, set as the parsed arguments' ``run``).
A new command is one module here plus its line in ``_COMMANDS``.
"""

from . import capture, compare, encode, fit, synth
from .common import _ArgumentParser

_COMMANDS = (fit, encode, compare, capture, synth)


def _build_parser():
    from .._version import __version__

    parser = _ArgumentParser(
        prog="skmpsae",
        description="Sparse autoencoders (matching pursuit, TopK, ReLU) on .npy files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_ArgumentParser
    )
    commands.required = True
    for command in _COMMANDS:
        command.add_parser(commands)
    return parser
