"""What every ``skmpsae`` command shares: the one-line error, the argument parser and the types
of its values, reading ``.npy`` inputs, and progress messages on stderr."""

import argparse
import sys
from pathlib import Path

import numpy as np


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


def _load_npy(path):
    """A 2-D numeric array from ``path``, memory-mapped (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"{path}: no such file")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
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


def _report(quiet):
    return (lambda message: None) if quiet else (lambda message: print(message, file=sys.stderr))
