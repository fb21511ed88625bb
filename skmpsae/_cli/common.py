"""What every ``skmpsae`` command shares: the one-line error, the argument parser and the types
of its values, output paths, estimator parameters from flags, and progress messages on stderr.
Reading the inputs (row files, model files) is :mod:`skmpsae._cli.inputs`."""

import argparse
import errno
import os
import sys
from pathlib import Path

import numpy as np

# The model files skmpsae writes, by suffix.
MODEL_SUFFIXES = (".safetensors", ".joblib")


class CommandError(Exception):
    """A failure to report as one line, with exit status 1."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block first; one line that points to --help is easier
        # to read in a terminal and to match in scripts.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text, allow_zero=False):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise argparse.ArgumentTypeError(f"expected {kind} number, got {text!r}")
    return value


def _learning_rate(text):
    return "auto" if text == "auto" else _positive_float(text)


def _non_negative_float(text):
    return _positive_float(text, allow_zero=True)


def _check_suffix(path, suffixes, flag, rule):
    """Refuse an output name whose suffix skmpsae does not write, naming the rule."""
    if Path(path).suffix not in suffixes:
        raise CommandError(f"{flag} {path}: {rule}")


# Suffixes of the files skmpsae reads and writes: an output FOLDER named so is a mistake.
_FILE_SUFFIXES = (".safetensors", ".joblib", ".npy", ".npz", ".json", ".html", ".md")


def _check_output_folder(path, flag, what):
    """Refuse an output folder named like a file (``-o out.safetensors``) or that is one."""
    path = Path(path)
    if path.suffix.lower() in _FILE_SUFFIXES:
        raise CommandError(
            f"{flag} {path}: names a {path.suffix} file, but {what} is a directory; "
            f"name a folder, e.g. {flag} {path.with_suffix('')}"
        )
    if path.exists() and not path.is_dir():
        raise CommandError(f"{flag} {path}: a file, but {what} is a directory")


def _check_output_dir(path, what):
    parent = Path(path).parent
    if not parent.is_dir():
        raise CommandError(f"{parent}: no such directory for the {what}")


def _emit(message, file=None):
    """Print ``message``; a closed pipe (``| head``, a killed ``| tee``) swallows it instead
    of raising, and the stream is pointed at /dev/null so that exiting does not fail."""
    stream = sys.stdout if file is None else file
    try:
        print(message, file=stream, flush=True)
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.EINVAL) and not isinstance(exc, BrokenPipeError):
            raise
        _silence(stream)


def _silence(stream):
    """Point ``stream``'s file descriptor at /dev/null (after its reader went away)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _as_float_for_training(X, path, report):
    if X.dtype in (np.float32, np.float64):
        return X
    # The estimators compute in float32 or float64; any other dtype has to be converted, and
    # for a whole training set that means holding it in memory.
    report(
        f"note: {path} has dtype {X.dtype}; converting it to float32 in memory "
        f"({X.shape[0] * X.shape[1] * 4 / 2**20:.0f} MiB). Save float32 to stream it from disk."
    )
    return np.asarray(X, dtype=np.float32)


def _defaults(param, models=None):
    """The default of ``param`` across the estimators, read from them: "35 for mp, 50 for
    the others", or one value when they agree (for help texts that cannot drift)."""
    from collections import Counter

    from .._compat import param_names
    from .._models.registry import estimator_specs

    specs = estimator_specs()
    values = {
        name: getattr(spec.estimator(), param)
        for name, spec in specs.items()
        if (models is None or name in models) and param in param_names(spec.estimator)
    }
    if len(set(map(repr, values.values()))) == 1:
        return str(next(iter(values.values())))
    common = Counter(map(repr, values.values())).most_common(1)[0][0]
    rest = [f"{value} for {name}" for name, value in values.items() if repr(value) != common]
    others = [name for name, value in values.items() if repr(value) == common]
    who = "the others" if len(others) > 1 else others[0]
    return f"{', '.join(rest)}, {values[others[0]]} for {who}"


def _param(text):
    """``--param NAME=VALUE``: VALUE read as None, true/false, an int or a float where it is
    one, else kept as a string; the estimator's own validation judges it."""
    name, equals, raw = text.partition("=")
    if not equals or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if raw.lower() in ("none", "null"):
        return name, None
    if raw.lower() in ("true", "false"):
        return name, raw.lower() == "true"
    for kind in (int, float):
        try:
            return name, kind(raw)
        except ValueError:
            pass
    return name, raw


def _add_param_option(parser):
    parser.add_argument(
        "--param",
        type=_param,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other parameter of the estimator, as in Python (repeatable), e.g. "
        "--param min_cosine=0.2 --param selection_method=gemm",
    )


def _estimator_params(args, estimator, options, flags):
    """The estimator's parameters from its dedicated flags (``options``, None where left out)
    and from ``--param``; a parameter that has a flag or that the command sets itself is
    refused (``flags``: name -> what to do instead). Errors name the flags, and come before
    any data is read."""
    from .._compat import InvalidParameterError, check_parameters, param_names

    params = {name: value for name, value in options.items() if value is not None}
    names = param_names(estimator)
    given = set()
    for name, value in args.param:
        if name in flags:
            args.subparser.error(f"--param {name}: {flags[name]}")
        if name not in names:
            args.subparser.error(
                f"--param {name}: {estimator.__name__} has no parameter {name!r}; its "
                f"parameters: {', '.join(n for n in names if n not in flags)}"
            )
        if name in given:
            args.subparser.error(f"--param {name} is given twice")
        given.add(name)
        params[name] = value
    try:
        check_parameters(estimator(**params))
    except InvalidParameterError as exc:
        args.subparser.error(f"--param: {exc}")
    return params


def _add_special_tokens_options(parser):
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--keep-special-tokens",
        action="store_true",
        help="keep the rows of [CLS], [SEP], BOS, EOS, PAD (left out by default, as SAELens "
        "does; an interrupted run resumes with the choice it recorded)",
    )
    choice.add_argument(
        "--skip-special-tokens", action="store_true", help="the default now; still accepted"
    )


def _skip_special_tokens(args):
    """``skip_special_tokens`` for the Python call: False with --keep-special-tokens, True
    with the old --skip-special-tokens (with a note), None (the default: leave them out, or
    resume with the recorded choice) without either."""
    if args.skip_special_tokens:
        _emit(
            f"skmpsae {args.command}: note: --skip-special-tokens is the default now; the flag "
            "is no longer needed (--keep-special-tokens keeps them)",
            sys.stderr,
        )
        return True
    return False if args.keep_special_tokens else None


def _report(quiet):
    return (lambda message: None) if quiet else (lambda message: _emit(message, sys.stderr))


def _launch_workers(args):
    """Run this same command (``args.argv``) in ``--nproc-per-node`` local workers with
    torch's launcher (``torch.distributed.run --standalone``: a rendezvous on a free local
    port); inside the launcher the workers run the command instead of launching again."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as launch

    argv = ["--standalone", "--nproc-per-node", str(args.nproc_per_node)]
    argv += ["--monitor-interval", "0.5", "-m", "skmpsae", *args.argv]
    try:
        launch(get_args_parser().parse_args(argv))
    except ChildFailedError as exc:
        first = exc.failures[sorted(exc.failures)[0]]
        raise CommandError(
            f"worker rank {first.local_rank} of {args.nproc_per_node} failed (exit status "
            f"{first.exitcode}); its message is above"
        ) from None
    return 0
