"""Token-level probing tasks read off the tokens alone, so that a captured activation file and
its tokenizer's vocabulary are enough: no labelled data set is needed."""

import unicodedata

import numpy as np

from .._compat import StrOptions, validate_params

TASKS = ("first-letter", "capitalised", "digit", "punctuation", "word-start", "position")
POSITION_BINS = (0, 4, 16, 64)


def _is_punctuation(text):
    return bool(text) and all(unicodedata.category(ch).startswith("P") for ch in text)


def _first_letter(text):
    word = text.strip()
    return word[0].lower() if word.isalpha() and word[0].isascii() else None


def _label(task, text):
    word = text.strip()
    if not word:
        return None
    if task == "first-letter":
        # Whole words only, as Chanin et al. spell words: a continuation piece ("##ing")
        # does not start with the word's first letter.
        return _first_letter(text) if text.startswith(" ") else None
    if task == "capitalised":
        return ("capitalised" if word[0].isupper() else "lower") if word[0].isalpha() else None
    if task == "digit":
        return "digits" if word.isdigit() else "other"
    if task == "punctuation":
        return "punctuation" if _is_punctuation(word) else "other"
    return "word-start" if text.startswith(" ") else "continuation"


def _position_label(position):
    edges = (*POSITION_BINS, None)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        if hi is None or position < hi:
            return f"{lo}+" if hi is None else f"{lo}-{hi - 1}"
    return None  # unreachable: the last bin is open


@validate_params(
    {
        "task": [StrOptions(set(TASKS))],
        "tokens": ["array-like"],
        "positions": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def token_task_labels(task, tokens, positions=None):
    """The rows a built-in token-level task labels, and their labels.

    Parameters
    ----------
    task : {"first-letter", "capitalised", "digit", "punctuation", "word-start", "position"}
        ``first-letter``: the first letter (a-z) of tokens that start a word and are letters
        only. ``capitalised``: whether a token that starts with a letter starts with a capital.
        ``digit``: whether a token is all digits. ``punctuation``: whether a token is all
        punctuation. ``word-start``: whether a token starts a word (for WordPiece, is not a
        ``##`` piece). ``position``: the token's position in its text, binned (0-3, 4-15,
        16-63, 64+).
    tokens : array-like of str of shape (n_samples,)
        Each row's token as it reads in the text, a leading space marking a word start: what
        ``ACTS.npy.vocab.json`` holds for the row's token id.
    positions : array-like of int of shape (n_samples,), default=None
        Each row's position in its text (column 1 of ``ACTS.npy.tokens.npy``); needed by
        ``position`` only.

    Returns
    -------
    rows : ndarray of int
        The rows the task labels (others, e.g. blanks, have no label for it).
    labels : ndarray of str
        Their labels.

    Raises
    ------
    ValueError
        When the task has fewer than two classes on these tokens (``capitalised`` with an
        uncased tokenizer).

    See Also
    --------
    skmpsae.metrics.sparse_probing : Probes the latents on these labels.

    Examples
    --------
    >>> from skmpsae.metrics import token_task_labels
    >>> rows, labels = token_task_labels("word-start", [" the", "##s", " ."])
    >>> rows.tolist(), labels.tolist()
    ([0, 1, 2], ['word-start', 'continuation', 'word-start'])
    """
    tokens = [str(t) for t in np.asarray(tokens, dtype=object).ravel()]
    if task == "position":
        if positions is None:
            raise ValueError("task 'position' needs positions (column 1 of the provenance).")
        positions = np.asarray(positions).ravel()
        if positions.size != len(tokens):
            raise ValueError("positions must have one entry per token.")
        labels = [_position_label(int(p)) for p in positions]
    else:
        # Labels depend on the token's text alone: label each distinct token once.
        by_text = {t: _label(task, t) for t in set(tokens)}
        labels = [by_text[t] for t in tokens]
    rows = np.array([i for i, lab in enumerate(labels) if lab is not None], dtype=np.int64)
    out = np.array([labels[i] for i in rows], dtype=str)
    classes = np.unique(out)
    if classes.size < 2:
        only = f"only {str(classes[0])!r}" if classes.size else "no labelled token"
        raise ValueError(
            f"task {task!r} has one class for this tokenizer ({only} among {len(tokens)} "
            "tokens): nothing to probe."
        )
    return rows, out
