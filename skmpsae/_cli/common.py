"""What every ``skmpsae`` command shares: the one-line error, the argument parser and the types
of its values, reading ``.npy`` inputs, and progress messages on stderr."""

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


def _sniff(path):
    """What the first bytes of ``path`` say it is: "npy", "safetensors", "zip", "pickle",
    "text" or "binary"."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the 4 KiB boundary
            return "binary"
    return "binary" if b"\0" in head else "text"


def _not_a_file(path, what):
    path = Path(path)
    if path.is_dir():
        return CommandError(f"{path}: a directory, not {what}")
    return CommandError(f"{path}: no such file")


def _load_npy(path):
    """A 2-D numeric array from ``path``, memory-mapped (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise _not_a_file(path, "a .npy file")
    kind = _sniff(path)
    if kind == "text":
        raise CommandError(
            f"{path}: a text file, not a .npy array; to use texts, capture their activations "
            f"first: skmpsae capture MODEL --hookpoint NAME --texts {path} -o ACTS.npy"
        )
    if kind in ("safetensors", "pickle"):
        raise CommandError(
            f"{path}: a model file, not a .npy array of activations; check the order of the "
            "arguments (see --help)"
        )
    if kind == "zip" and path.suffix != ".npz":
        raise CommandError(f"{path}: a zip archive (a torch .pt file?), not a .npy array")
    if kind not in ("npy", "zip"):
        raise CommandError(f"{path}: not a .npy array (save one with numpy.save)")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Python objects" in str(exc):
            raise CommandError(
                f"{path}: a .npy file of Python objects, not of numbers; save a numeric array"
            ) from None
        raise CommandError(f"{path}: not a readable .npy array ({exc})") from None
    except OSError as exc:
        raise CommandError(f"{path}: cannot read ({exc})") from None
    if not isinstance(X, np.ndarray):
        X.close()
        raise CommandError(f"{path}: expected a .npy file holding one array, got a .npz archive")
    if X.ndim != 2:
        raise CommandError(
            f"{path}: expected a 2-D array (n_samples, n_features), got shape {X.shape}; "
            "reshape it, e.g. X.reshape(-1, X.shape[-1]) for (batch, tokens, features) dumps"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CommandError(f"{path}: the array is empty (shape {X.shape})")
    if X.dtype.kind not in "biuf":
        raise CommandError(f"{path}: expected real numbers, got dtype {X.dtype}")
    return X


def _load_model(path):
    """A fitted SAE from a file written by ``skmpsae fit`` or a SAELens / sparsify directory."""
    from .._io.saelens import from_saelens
    from .._io.sparsify import from_sparsify

    path = Path(path)
    if path.is_dir():
        if (path / "cfg.json").is_file() and (path / "sae_weights.safetensors").is_file():
            return from_saelens(path)
        if (path / "cfg.json").is_file() and (path / "sae.safetensors").is_file():
            return from_sparsify(path)
        raise CommandError(
            f"{path}: a directory, but not a SAELens or sparsify SAE (no cfg.json with "
            "sae_weights.safetensors or sae.safetensors); expected a model file"
        )
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    kind = _sniff(path)
    if kind == "npy" or (kind == "zip" and path.suffix == ".npz"):
        raise CommandError(
            f"{path}: a numpy array, not a model; check the order of the arguments (MODEL "
            "comes first, see --help)"
        )
    if kind == "text":
        raise CommandError(f"{path}: a text file, not a model saved by 'skmpsae fit'")
    if kind == "safetensors":
        from ..io import load

        return load(path)
    if kind != "pickle" and path.suffix != ".joblib":
        raise CommandError(
            f"{path}: not a model saved by 'skmpsae fit' (a .safetensors or .joblib file)"
        )
    return _load_pickle(path)


def _load_pickle(path):
    import joblib

    from .._models.base import _BaseSAE

    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling fails with many exception types
        raise CommandError(
            f"{path}: not a model saved by 'skmpsae fit' ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(model, _BaseSAE) or not hasattr(model, "components_"):
        raise CommandError(f"{path}: not a fitted skmpsae model (got {type(model).__name__})")
    return model


def _model_and_rows(args, command):
    """The model of ``args.model`` (on ``--device`` if given) and the rows of ``args.data``,
    checked to have the model's width and warned about if captured elsewhere."""
    model = _load_model(args.model)
    if args.device is not None:
        model.set_params(device=args.device)
    X = _load_npy(args.data)
    if X.shape[1] != model.n_features_in_:
        raise CommandError(
            f"{args.data}: has {X.shape[1]} features, but the model was fitted on "
            f"{model.n_features_in_}"
        )
    _check_rows_match(model, args.data, command)
    return model, X


def _check_rows_match(model, data, command):
    """Warn when ``data``'s capture sidecar names another place than the model was fitted at."""
    from .._activations.metadata import check_same_place, provenance_of, read_capture_metadata

    try:
        rows = read_capture_metadata(data)
    except ValueError:
        return
    if rows:
        check_same_place(
            provenance_of(model),
            what=f"{data} comes from another place than the model",
            hookpoint=rows.get("hookpoint"),
            model=rows.get("model_id"),
            capture_input=rows.get("capture_input"),
        )
        _check_special_tokens(provenance_of(model), rows, data)


def _check_special_tokens(provenance, rows, data):
    """Warn when the model was trained on rows with the special tokens left out and ``data``
    keeps them, or the other way round: such rows (a [CLS], a GPT's first position) are
    unlike the others, and the scores of the one set say little of the other."""
    import warnings

    trained, given = provenance.get("skip_special_tokens"), rows.get("skip_special_tokens")
    if trained is None or given is None or bool(trained) == bool(given):
        return
    how = {True: "without special tokens", False: "with special tokens ([CLS], BOS...)"}
    warnings.warn(
        f"{data}: rows captured {how[bool(given)]}, but the model was trained on rows "
        f"{how[bool(trained)]}; capture again "
        f"{'with' if trained is False else 'without'} --keep-special-tokens to compare like "
        "with like.",
        UserWarning,
        stacklevel=3,
    )


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
