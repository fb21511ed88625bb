"""A full disk loses no work: the free space is checked before training, with the numbers,
and a model whose save still fails is written to the temporary directory (another file
system, usually) and named in the message."""

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .._models.fitted import published_shapes
from .common import CommandError

# Room left beyond the estimate: headers, metadata, the atomic write's temporary copy.
_MARGIN = 1.2
_MIB = 2**20


def model_bytes(estimator, n_features, itemsize):
    """The bytes of ``estimator``'s parameters for ``n_features`` inputs (what its file
    holds, headers aside), read off its module built on the meta device."""
    shapes = published_shapes(estimator, n_features)
    return sum(int(np.prod(shape)) for shape in shapes.values()) * itemsize


def check_free_space(needs, writer="training"):
    """``needs``: [(directory, bytes, what)]. Fail before ``writer`` starts, with the numbers,
    where a directory's file system has less free space than what is written there."""
    by_device = {}
    for directory, n_bytes, what in needs:
        directory = Path(directory)
        while not directory.exists():
            directory = directory.parent
        device = os.stat(directory).st_dev
        entry = by_device.setdefault(device, [directory, 0, []])
        entry[1] += int(n_bytes * _MARGIN)
        entry[2].append(f"{what} ~{n_bytes / _MIB:.1f} MiB")
    for directory, n_bytes, whats in by_device.values():
        free = shutil.disk_usage(directory).free
        if free < n_bytes:
            raise CommandError(
                f"{directory}: {free / _MIB:.1f} MiB free, but {writer} will write "
                f"{n_bytes / _MIB:.1f} MiB there ({', '.join(whats)}, with a 20% margin); free "
                "some space or write elsewhere"
            )


def save_or_rescue(save, estimator, output):
    """``save(estimator, output)``; if that fails (a full disk...), save to the temporary
    directory instead and raise a one-line error that names both paths."""
    try:
        save(estimator, output)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        name = f"skmpsae-rescued-{os.getpid()}-{Path(output).name}"
        rescue = Path(tempfile.gettempdir()) / name
        try:
            save(estimator, rescue)
        except OSError as again:
            raise CommandError(
                f"{output}: could not save the model ({reason}); nor to {rescue} "
                f"({again.strerror or again}): the trained model is lost"
            ) from None
        raise CommandError(
            f"{output}: could not save the model ({reason}); the trained model is saved to "
            f"{rescue} instead: move it where you want it"
        ) from None
