"""Files replaced atomically: a reader, or a process killed at any instant, finds either the
previous complete file or the new complete file, never a half-written one."""

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path):
    """Open a temporary file beside ``path`` for binary writing; on a clean exit, flush it,
    fsync it and rename it over ``path`` (then fsync the directory, so that the rename itself
    survives a power cut). On an error the temporary file is removed and ``path`` is left as
    it was.

    The temporary file is in the same directory because a rename is atomic only within one
    file system. A process killed by SIGKILL can leave the temporary file behind (named
    ``.NAME.*.tmp``), never a truncated ``path``.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            # mkstemp creates the file readable by its owner only; give it the mode a plain
            # open() would (0o666 less the umask).
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. on Windows, where a directory cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
