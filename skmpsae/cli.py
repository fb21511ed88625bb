"""The ``skmpsae`` command line: capture activations (and list a model's hookpoints), fit an
SAE, encode, evaluate, export to SAELens, show a model's provenance, compare models.

Each command lives in its own module of ``skmpsae._cli``. Errors are reported as one line on
stderr, never as a traceback: exit status 2 for a bad command line (unknown option, invalid
value), 1 for a failure while running (missing or unreadable file, wrong shape, training error).
The Python warnings raised while a command runs (the estimators', the capture's) are printed on
stderr as they come, one line each, with the parameters spelled as the command's flags.
``SKMPSAE_TRACEBACK=1`` shows the traceback. Ctrl-C exits with status 130 (``fit`` first
saves the model of the last completed epoch); a closed output pipe never turns into a
traceback.
"""

import os
import sys
import warnings

from ._cli.common import CommandError, _emit, _silence
from ._cli.parser import _build_parser
from ._cli.spelling import _warning_printer

__all__ = ["main"]


def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    try:
        argv = sys.argv[1:] if argv is None else list(argv)
        args = _build_parser().parse_args(argv)
        args.argv = argv
        return _run(args.run, args)
    except SystemExit as exit_:  # --help, --version and usage errors
        if exit_.code is None:
            return 0
        return exit_.code if isinstance(exit_.code, int) else 1


def _run(runner, args):
    with warnings.catch_warnings():
        # Each distinct warning once, whatever filters the environment set (a command is
        # run in a process that is not ours under pytest or a notebook).
        warnings.simplefilter("default")
        warnings.showwarning = _warning_printer(args.command, sys.modules[runner.__module__])
        return _run_command(runner, args)


def _run_command(runner, args):
    try:
        return runner(args)
    except KeyboardInterrupt:
        _emit("skmpsae: interrupted", sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("SKMPSAE_TRACEBACK"):
            raise
        if isinstance(exc, BrokenPipeError):  # stdout's reader has gone: exit without a fuss
            _silence(sys.stdout)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, (CommandError, ValueError, OSError, MemoryError)):
            message = f"{type(exc).__name__}: {message}"
        _emit(f"skmpsae {args.command}: error: {message}", sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
