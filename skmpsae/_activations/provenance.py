"""Where each row of an activation file came from: ``ACTS.npy.tokens.npy``.

:func:`skmpsae.activations.capture` writes, in step with the rows of ``ACTS.npy``, one int32 row
per activation row, with the columns of :data:`PROVENANCE_COLUMNS`: the text's (or image's)
index in the corpus, the token's position in the sequence, the token id (-1 for an image row),
the row's kind (:data:`KINDS`: a token, a special token, an image's CLS, register or patch
token, or one pooled row per item), the patch's row and column in the image's patch grid (-1
when the row is not a patch) and the modality (:data:`MODALITIES`). Text and image rows share
this one schema, so that a model trained on both keeps each row's origin. The file is a plain
``.npy`` array of shape ``(n_rows, 7)`` that grows as the capture goes, with a fixed-size
header that counts only committed rows, so that a resumed capture stays aligned with the
activations. Files of earlier versions hold the first three columns only; they are still read
(:meth:`Provenance.column` gives the others' defaults: kind -1 for unknown, no patch, text).
When the capture ends, ``ACTS.npy.vocab.json`` maps every token id that occurs to the
tokenizer's text for it, so that the inspection tools show tokens without the model.

An image's rows (``capture(model, images=...)``): the image's index in the source, the
token's position in the vision tower's sequence (-1 for a pooled row), and its kind and patch
position; the patch grid and the image size the model saw are in the capture's metadata.

What "text" means depends on the capture. One text per line (``capture(model, texts, ...)``):
the text's index in ``texts``, and the position counts the tokenizer's special tokens of that
text. A :class:`Corpus` cut into windows (``context_size=``): the window's index in the
capture, counted from 0 across every batch and through a resume, and the position in the
window, framing tokens ([CLS], BOS...) included, so 0 to ``context_size - 1``. A window is
the unit the model saw as one sequence and its tokens are contiguous rows, so the context of
a row is the rest of its window, and ``skmpsae fit --validation-fraction`` holds out whole
windows; a document cut across two windows is two texts. With ``skip_special_tokens`` the
rows of special tokens are dropped and the positions of the others stay those in the window
(or the text).
"""

import json
import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_write

_HEADER_BYTES = 128
PROVENANCE_COLUMNS = ("text", "position", "token", "kind", "patch_row", "patch_col", "modality")
_N_COLUMNS = len(PROVENANCE_COLUMNS)
_ROW_BYTES = 4 * _N_COLUMNS
# Codes of the "kind" column. A pooled row stands for a whole item: a projected embedding (CLIP's
# image_embeds or text_embeds), a module's pooled output, or the mean of an image's patches.
KINDS = {"token": 0, "special": 1, "cls": 2, "register": 3, "patch": 4, "pooled": 5}
MODALITIES = {"text": 0, "image": 1}
# What the columns an earlier three-column file lacks read as.
_DEFAULTS = {"kind": -1, "patch_row": -1, "patch_col": -1, "modality": MODALITIES["text"]}


def provenance_path(acts):
    return Path(str(acts) + ".tokens.npy")


def vocab_path(acts):
    return Path(str(acts) + ".vocab.json")


def _header(n_rows):
    text = f"{{'descr': '<i4', 'fortran_order': False, 'shape': ({n_rows}, {_N_COLUMNS}), }}"
    prefix = np.lib.format.magic(1, 0) + (_HEADER_BYTES - 10).to_bytes(2, "little")
    return prefix + text.ljust(_HEADER_BYTES - 11).encode("latin1") + b"\n"


def _columns_on_disk(path):
    """The column count a provenance file's header gives (0 if it cannot be read)."""
    try:
        with open(path, "rb") as file:
            fmt = np.lib.format
            major, _ = fmt.read_magic(file)
            read = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
            shape = read(file)[0]
    except (OSError, ValueError):
        return 0
    return shape[1] if len(shape) == 2 else 0


class _ProvenanceWriter:
    """Appends provenance rows (:data:`PROVENANCE_COLUMNS`) beside a growing activation file.

    Opened with the activation file's committed row count: rows past it are dropped, as the
    activation file drops them. A provenance file shorter than that, or of another layout (a
    capture begun by a version that wrote none, or three columns), cannot be realigned: it is
    removed and nothing more is written. ``special_ids``: the token ids whose rows are of kind
    "special" (the tokenizer's special tokens).
    """

    def __init__(self, acts, n_rows, special_ids=()):
        self.path, self.n_rows = provenance_path(acts), n_rows
        self.special_ids = np.asarray(sorted(set(special_ids)), dtype=np.int64)
        self.vocab_path = vocab_path(acts)
        self.vocab_path.unlink(missing_ok=True)
        self.file = None
        if n_rows and (
            not self.path.is_file()
            or self.path.stat().st_size < _HEADER_BYTES + n_rows * _ROW_BYTES
            or _columns_on_disk(self.path) != _N_COLUMNS
        ):
            self.path.unlink(missing_ok=True)
            return
        self.file = open(self.path, "r+b" if n_rows else "w+b")
        self.file.truncate(_HEADER_BYTES + n_rows * _ROW_BYTES)
        self._write_header()

    def _write_header(self):
        self.file.seek(0)
        self.file.write(_header(self.n_rows))
        self.file.seek(0, os.SEEK_END)

    def append(self, first_text, keep, input_ids):
        """The rows of one batch: ``keep`` (batch, tokens) the mask of rows kept, in order."""
        if self.file is None:
            return
        keep = np.asarray(keep.cpu() if hasattr(keep, "cpu") else keep, dtype=bool)
        ids = np.asarray(input_ids.cpu() if hasattr(input_ids, "cpu") else input_ids)
        text, position = np.nonzero(keep)
        token = ids[text, position]
        kind = np.where(np.isin(token, self.special_ids), KINDS["special"], KINDS["token"])
        none = np.full_like(text, -1)
        modality = np.full_like(text, MODALITIES["text"])
        self.write_rows(
            np.stack([text + first_text, position, token, kind, none, none, modality], axis=1)
        )

    def write_rows(self, rows):
        """Rows of all :data:`PROVENANCE_COLUMNS`, as an integer array (n, 7)."""
        if self.file is None:
            return
        self.file.write(np.ascontiguousarray(rows, dtype="<i4").tobytes())
        self.n_rows += rows.shape[0]

    def commit(self):
        if self.file is None:
            return
        self.file.flush()
        self._write_header()
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self):
        if self.file is not None:
            self.file.close()

    def write_vocab(self, tokenizer):
        """``ACTS.npy.vocab.json``: the tokenizer's text of every token id in the file."""
        if self.file is None or tokenizer is None:
            return
        ids = np.unique(np.load(self.path, mmap_mode="r")[:, 2])
        ids = ids[ids >= 0].tolist()  # image rows have no token
        vocab = {str(i): text for i, text in _token_texts(tokenizer, ids).items()}
        payload = {"tokenizer": str(getattr(tokenizer, "name_or_path", "")), "vocab": vocab}
        with atomic_write(self.vocab_path) as f:
            f.write(json.dumps(payload).encode("utf-8"))


def _marks_spaces(tokenizer):
    """Whether the tokenizer's pieces carry the space before a word (GPT-2's ``Ġ``,
    SentencePiece's ``▁``), rather than marking continuations (WordPiece's ``##``)."""
    try:
        ids = tokenizer(" the a", add_special_tokens=False)["input_ids"]
        pieces = tokenizer.convert_ids_to_tokens(ids)
    except Exception:  # a tokenizer without these methods: assume word-level pieces
        return False
    return any(isinstance(p, str) and p[:1] in ("Ġ", "▁") for p in pieces)


def _token_text(tokenizer, token_id, marks_spaces=None):
    """The token as it reads in the text: decoded (no ``##`` or ``Ġ`` markers), with a leading
    space where it starts a word."""
    if marks_spaces is None:
        marks_spaces = _marks_spaces(tokenizer)
    text = tokenizer.decode([token_id])
    piece = tokenizer.convert_ids_to_tokens(token_id)
    piece = piece if isinstance(piece, str) else ""
    if marks_spaces:
        return " " + text.lstrip(" ") if piece[:1] in ("Ġ", "▁") else text
    if piece.startswith("##"):  # WordPiece: decode keeps the marker of a lone piece
        return text[2:] if text.startswith("##") else text.lstrip(" ")
    return " " + text.lstrip(" ")


def _token_texts(tokenizer, ids):
    marks = _marks_spaces(tokenizer)
    return {int(i): _token_text(tokenizer, int(i), marks) for i in ids}


class Provenance:
    """The rows' provenance and the token texts, validated against ``n_rows``.

    Attributes: ``table`` ((n_rows, 7) int32 memmap, (n_rows, 3) for a file of an earlier
    version, or None where no provenance file exists), ``vocab`` (dict id -> text, or None).
    Read a column by name with :meth:`column`.
    """

    def __init__(self, table, vocab):
        self.table, self.vocab = table, vocab

    @classmethod
    def read(cls, acts, n_rows, tokenizer=None):
        path = provenance_path(acts)
        if not path.is_file():
            return cls(None, None)
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path}: not a readable provenance file ({exc}).") from None
        if table.ndim != 2 or table.shape[1] not in (3, _N_COLUMNS) or table.dtype.kind not in "iu":
            raise ValueError(
                f"{path}: expected an integer array of shape (n_rows, {_N_COLUMNS}) (or "
                f"(n_rows, 3) from an earlier version), got {table.dtype} {table.shape}."
            )
        if table.shape[0] != n_rows:
            raise ValueError(
                f"{path}: {table.shape[0]} rows of provenance for {n_rows} rows of activations "
                f"in {acts}; they come from different captures (capture again, or delete it)."
            )
        vocab = None
        if tokenizer is not None:
            ids = np.unique(table[:, 2])
            vocab = _token_texts(tokenizer, ids[ids >= 0].tolist())
        elif vocab_path(acts).is_file():
            try:
                raw = json.loads(vocab_path(acts).read_text(encoding="utf-8"))["vocab"]
                vocab = {int(k): str(v) for k, v in raw.items()}
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{vocab_path(acts)}: damaged vocabulary ({exc!r}).") from None
        return cls(table, vocab)

    def column(self, name):
        """The column ``name`` of :data:`PROVENANCE_COLUMNS` (None without a provenance file);
        for a three-column file, the default of a column it lacks, one per row."""
        if self.table is None:
            return None
        index = PROVENANCE_COLUMNS.index(name)
        if index < self.table.shape[1]:
            return self.table[:, index]
        return np.full(self.table.shape[0], _DEFAULTS[name], dtype=np.int32)

    def token_text(self, token_ids):
        if self.vocab is None:
            return [f"#{int(i)}" for i in token_ids]
        return [self.vocab.get(int(i), f"#{int(i)}") for i in token_ids]
