"""Corpora as users have them, read lazily, and the fixed-length token windows cut from them.

A corpus is plain text (one document per line), JSON Lines or Parquet with a text field, a
Hugging Face ``datasets`` dataset saved with ``save_to_disk`` or one of its ``.arrow`` files,
or a sequence of strings in memory. Documents are read one at a time from any position, so
that a stream resumes from a checkpoint without reading the corpus again.

Windows are packed as SAELens and EleutherAI's sparsify pack them: the documents' tokens
(without special tokens) are concatenated, each document followed by the end-of-text token
(the tokenizer's EOS, else its SEP), and cut into bodies of ``context_size`` tokens less the
model's own special tokens, which then frame each body as the tokenizer frames a text
(``[CLS] body [SEP]`` for BERT; a BOS in front for a tokenizer that adds nothing, as SAELens
prepends one). A window never holds padding; the last incomplete body is dropped.
"""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

_SUFFIX_KINDS = {
    ".txt": "text",
    ".text": "text",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


class Corpus:
    """Documents read lazily from a file, a saved ``datasets`` dataset or a list of strings.

    Parameters
    ----------
    source : str, path-like or sequence of str
        A ``.txt`` file (one document per line; blank lines skipped), a ``.jsonl`` file, a
        ``.parquet`` file, a ``datasets`` ``.arrow`` file, a directory written by
        ``datasets.Dataset.save_to_disk`` (a ``DatasetDict`` directory with ``split``), or
        the documents themselves.
    text_field : str, default="text"
        The field that holds the text (JSON Lines, Parquet, ``datasets``).
    split : str, default=None
        The split of a saved ``DatasetDict`` (needed when it has more than one).

    Examples
    --------
    >>> from skmpsae.activations import Corpus
    >>> corpus = Corpus(["the cat sat", "on the mat"])
    >>> list(corpus.documents(1))
    ['on the mat']
    """

    def __init__(self, source, *, text_field="text", split=None):
        self.text_field, self.split = text_field, split
        if isinstance(source, Corpus):
            source = source.source
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            self.source = Path(source)
            self.kind = self._kind_of(self.source)
            self._check_field()
        elif isinstance(source, Sequence):
            bad = [i for i, t in enumerate(source[:1000]) if not isinstance(t, str)]
            if bad:
                raise TypeError(f"corpus document {bad[0]} is not a string.")
            self.source, self.kind = source, "list"
        else:
            raise TypeError(
                f"corpus must be a path or a sequence of strings, got {type(source).__name__}."
            )

    def __repr__(self):
        what = f"{len(self.source)} documents" if self.kind == "list" else str(self.source)
        return f"Corpus({what}, kind={self.kind!r})"

    @staticmethod
    def _kind_of(path):
        if path.is_dir():
            return "dataset"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such corpus file or directory")
        kind = _SUFFIX_KINDS.get(path.suffix.lower())
        if kind is None:
            raise ValueError(
                f"{path}: unknown corpus format {path.suffix!r} (expected .txt, .jsonl, "
                ".parquet, .arrow or a datasets directory)."
            )
        return kind

    def _dataset(self):
        try:
            import datasets
        except ImportError:
            raise ImportError("reading this corpus needs datasets: pip install datasets") from None
        if self.kind == "arrow":
            return datasets.Dataset.from_file(str(self.source))
        data = datasets.load_from_disk(str(self.source))
        if isinstance(data, datasets.DatasetDict):
            splits = list(data)
            if self.split is None and len(splits) == 1:
                return data[splits[0]]
            if self.split not in data:
                raise ValueError(
                    f"{self.source}: a DatasetDict with splits {splits}; pass split= "
                    f"(--split) to pick one, got {self.split!r}."
                )
            return data[self.split]
        return data

    def _check_field(self):
        fields = None
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            fields = pq.ParquetFile(self.source).schema_arrow.names
        elif self.kind in ("dataset", "arrow"):
            fields = self._dataset().column_names
        if fields is not None and self.text_field not in fields:
            raise ValueError(
                f"{self.source}: no field {self.text_field!r} (fields: {', '.join(fields)})."
            )

    def documents(self, start=0):
        """The documents from index ``start`` on (blank lines of a text file are not
        documents), as strings."""
        reader = getattr(self, f"_read_{self.kind}")
        for index, text in enumerate(reader(start), start):
            if not isinstance(text, str):
                raise TypeError(f"corpus document {index} is {type(text).__name__}, not text.")
            yield text

    def _read_list(self, start):
        yield from self.source[start:]

    def _lines(self, start):
        with open(self.source, encoding="utf-8") as file:
            index = 0
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                if index >= start:
                    yield number, line.rstrip("\n")
                index += 1

    def _read_text(self, start):
        for _, line in self._lines(start):
            yield line

    def _read_jsonl(self, start):
        for number, line in self._lines(start):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.source}:{number}: not JSON ({exc.msg}).") from None
            if not isinstance(record, dict) or self.text_field not in record:
                fields = ", ".join(record) if isinstance(record, dict) else type(record).__name__
                raise ValueError(
                    f"{self.source}:{number}: no field {self.text_field!r} (fields: {fields})."
                )
            yield record[self.text_field]

    def _read_parquet(self, start):
        import pyarrow.parquet as pq

        file = pq.ParquetFile(self.source)
        seen = 0
        for batch in file.iter_batches(batch_size=1024, columns=[self.text_field]):
            texts = batch.column(0).to_pylist()
            if seen + len(texts) > start:
                yield from texts[max(0, start - seen) :]
            seen += len(texts)

    def _read_dataset(self, start):
        data = self._dataset()
        for first in range(start, len(data), 1024):
            yield from data[first : first + 1024][self.text_field]

    _read_arrow = _read_dataset


class _Framing:
    """How a model's tokenizer frames a text: the special tokens before and after the body,
    the end-of-text token between documents, and the ids that count as special."""

    def __init__(self, tokenizer, lowercase=False):
        self.tokenizer, self.lowercase = tokenizer, lowercase
        probe = "hello"
        plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
        framed = tokenizer(probe, add_special_tokens=True)["input_ids"]
        at = next(
            (i for i in range(len(framed) - len(plain) + 1) if framed[i : i + len(plain)] == plain),
            None,
        )
        if at is None:  # a tokenizer that rewrites the body: no framing but a BOS
            at, framed = 0, plain
        self.prefix, self.suffix = framed[:at], framed[at + len(plain) :]
        bos = getattr(tokenizer, "bos_token_id", None)
        if not self.prefix and not self.suffix and bos is not None:
            self.prefix = [bos]
        eos = getattr(tokenizer, "eos_token_id", None)
        sep = getattr(tokenizer, "sep_token_id", None)
        self.separator = [eos] if eos is not None else [sep] if sep is not None else []
        self.special = np.array(sorted(set(getattr(tokenizer, "all_special_ids", []))))
        # A long document is tokenised whole: silence the "longer than the maximum" warning
        # that is about running such a sequence through the model, which never happens here.
        warned = getattr(tokenizer, "deprecation_warnings", None)
        if isinstance(warned, dict):
            warned["sequence-length-is-longer-than-the-specified-maximum"] = True

    def n_special(self):
        return len(self.prefix) + len(self.suffix)

    def tokenize(self, texts):
        if self.lowercase:
            texts = [t.lower() for t in texts]
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [row + self.separator for row in ids]


def _windows(corpus, framing, context_size, position=(0, 0), rank=0, world_size=1):
    """Yield ``(ids, position)``: each window's token ids (a list of ``context_size`` ints)
    and the corpus position just after it, ``(document, token)``, from which the windows
    that follow are cut again exactly. With ``world_size > 1`` a rank reads only the
    documents ``d`` with ``d % world_size == rank`` (disjoint shares, whatever the
    positions the ranks resume from)."""
    body = context_size - framing.n_special()
    if body < 1:
        raise ValueError(
            f"context_size={context_size} leaves no room for text between the model's "
            f"{framing.n_special()} special tokens."
        )
    first_document, offset = position
    # Each pending token carries the position just after it, so that a window's end is exact.
    pending, after = [], []
    docs = enumerate(corpus.documents(first_document), first_document)
    while True:
        batch = []
        for document, text in docs:
            if text and document % world_size == rank:
                batch.append((document, text))
                if len(batch) == 64:
                    break
        if not batch:
            return
        for (document, _), ids in zip(batch, framing.tokenize([t for _, t in batch]), strict=True):
            start = offset if document == first_document else 0
            pending.extend(ids[start:])
            after.extend((document, j + 1) for j in range(start, len(ids)))
        n_full = len(pending) // body
        for w in range(n_full):
            piece = pending[w * body : (w + 1) * body]
            yield framing.prefix + piece + framing.suffix, after[(w + 1) * body - 1]
        del pending[: n_full * body], after[: n_full * body]
