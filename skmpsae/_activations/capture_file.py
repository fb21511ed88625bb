"""The resumable output of :func:`skmpsae.activations.capture`: a float32 ``.npy`` file that
grows by rows and whose header counts only committed rows, and the JSON state beside it that
says how far an interrupted capture got (and with which settings).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

# A fixed-size .npy header, so that the row count can be rewritten in place as rows arrive.
_HEADER_BYTES = 128


def _npy_header(n_rows, n_features):
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n_rows}, {n_features}), }}"
    prefix = np.lib.format.magic(1, 0) + (_HEADER_BYTES - 10).to_bytes(2, "little")
    return prefix + text.ljust(_HEADER_BYTES - 11).encode("latin1") + b"\n"


class _RowFile:
    """A float32 ``.npy`` file that grows by rows; its header counts only committed rows."""

    def __init__(self, path, n_features, n_rows):
        self.path, self.n_features, self.n_rows = Path(path), n_features, n_rows
        mode = "r+b" if self.path.exists() else "w+b"
        self.file = open(self.path, mode)
        # Rows past the last commit belong to a batch that did not finish: drop them.
        self.file.truncate(_HEADER_BYTES + n_rows * n_features * 4)
        self._write_header()

    def _write_header(self):
        self.file.seek(0)
        self.file.write(_npy_header(self.n_rows, self.n_features))
        self.file.seek(0, os.SEEK_END)

    def append(self, rows):
        self.file.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.n_rows += rows.shape[0]

    def commit(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self._write_header()
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        self.file.close()


def _fingerprint(texts):
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _state_path(output):
    """The resume state of an unfinished capture into ``output``."""
    return Path(str(output) + ".capture.json")


def _special_tokens_choice(output, skip_special_tokens, overwrite):
    """``skip_special_tokens`` resolved: as given, else (None) what an interrupted capture
    at ``output`` recorded (captures before issue 28 kept them by default), else True."""
    if skip_special_tokens is not None:
        return bool(skip_special_tokens)
    state_path = _state_path(output)
    if not overwrite and state_path.is_file():
        try:
            return bool(json.loads(state_path.read_text()).get("skip_special_tokens", True))
        except ValueError:
            pass  # a damaged state: _resume_state says so
    return True


def _resume_state(output, settings, overwrite):
    """Committed (texts, rows) of an interrupted capture with the same settings, else (0, 0)."""
    state_path = _state_path(output)
    if overwrite:
        state_path.unlink(missing_ok=True)
        Path(output).unlink(missing_ok=True)
        return state_path, 0, 0
    if not state_path.is_file():
        if Path(output).exists():
            raise FileExistsError(
                f"{output}: already exists (a finished capture or another file); pass "
                "overwrite=True to replace it."
            )
        return state_path, 0, 0
    try:
        state = json.loads(state_path.read_text())
        saved = {key: state[key] for key in settings}
        texts_done, rows = int(state["texts_done"]), int(state["rows"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{state_path}: damaged resume state ({exc!r}); delete it and {output} to start again."
        ) from None
    changed = [key for key in settings if saved[key] != settings[key]]
    if changed:
        raise ValueError(
            f"{output}: an interrupted capture with other settings ({', '.join(changed)} "
            "differ) is there; pass overwrite=True to start again."
        )
    if not Path(output).is_file() or Path(output).stat().st_size < (
        _HEADER_BYTES + rows * settings["n_features"] * 4
    ):
        raise ValueError(
            f"{output}: shorter than its resume state says; delete it and "
            f"{state_path} to start again."
        )
    return state_path, texts_done, rows


def _save_state(state_path, settings, texts_done, rows):
    tmp = Path(str(state_path) + ".tmp")
    tmp.write_text(json.dumps({**settings, "texts_done": texts_done, "rows": rows}))
    os.replace(tmp, state_path)
