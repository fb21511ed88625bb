"""The rows ``skmpsae fit`` trains on and holds out: one file's, or the rows of several
(``skmpsae fit A.npy B.npy ...``: image and text rows of a vision-language model, say),
joined in memory so that every batch mixes them uniformly, the model recording every file's
capture settings."""

from types import SimpleNamespace

import numpy as np

from .common import CommandError, _as_float_for_training
from .inputs import _load_npy


def combined_provenance(metas):
    """A model's ``provenance_`` for rows of several captures: what they all share, and each
    one in ``sources`` (so that none of them is "another place" than the model's)."""
    metas = [meta for meta in metas if meta]
    if not metas:
        return {}
    first, rest = metas[0], metas[1:]
    shared = {k: v for k, v in first.items() if all(m.get(k) == v for m in rest)}
    return {**shared, "sources": metas}


def training_rows(args, report):
    """(X, provenance, X_held, note) from ``args.sources``: the training rows, the model's
    provenance, the held-out rows (or None) and a note for the log. Several files each hold
    out the tail of their own texts."""
    from .._activations.metadata import read_capture_metadata

    if len(args.sources) == 1:
        X = _as_float_for_training(_load_npy(args.data), args.data, report)
        X, X_held, note = held_out(args, X)
        return X, read_capture_metadata(args.data) or {}, X_held, note
    parts, held, metas, notes = [], [], [], []
    for path in args.sources:
        X = _as_float_for_training(_load_npy(path), path, report)
        if parts and X.shape[1] != parts[0].shape[1]:
            raise CommandError(
                f"{path}: has {X.shape[1]} features, but {args.sources[0]} has "
                f"{parts[0].shape[1]}; one SAE trains on rows of one width"
            )
        meta = read_capture_metadata(path) or {}
        metas.append({**meta, "file": str(path)} if meta else {})
        if args.validation_fraction is not None:
            one = SimpleNamespace(
                validation=None, validation_fraction=args.validation_fraction, data=path
            )
            X, X_held, note = held_out(one, X)
            held.append(X_held)
            notes.append(f"{path}{note.replace('; held out: its', ':')}")
        parts.append(X)
    dtype = np.result_type(*parts)
    X = np.concatenate([np.asarray(part, dtype=dtype) for part in parts])
    note = ""
    if held:
        X_held = np.concatenate([np.asarray(part, dtype=dtype) for part in held])
        note = f"; held out: {', '.join(notes)}"
    else:
        X, X_held, note = held_out(args, X)
    return X, combined_provenance(metas), X_held, note


def held_out(args, X):
    """(training rows, held-out rows or None, a note for the log)."""
    from .._activations.metadata import row_text_index

    if args.validation is not None:
        X_held = _load_npy(args.validation)
        if X_held.shape[1] != X.shape[1]:
            raise CommandError(
                f"--validation {args.validation}: has {X_held.shape[1]} features, but "
                f"{args.data} has {X.shape[1]}"
            )
        return X, X_held, f"; held out: {args.validation}"
    if args.validation_fraction is None:
        return X, None, ""
    groups = row_text_index(args.data)
    if groups is not None:
        from .._activations.metadata import split_by_group

        train, test = split_by_group(groups, args.validation_fraction)
        n_texts = len(set(groups[test].tolist()))
        if test[0] == train[-1] + 1 and test[-1] == X.shape[0] - 1:  # a tail: views, no copy
            return X[: test[0]], X[test[0] :], f"; held out: its last {n_texts} texts"
        return X[train], X[test], f"; held out: {n_texts} texts"
    n_held = max(1, round(args.validation_fraction * X.shape[0]))
    if n_held >= X.shape[0]:
        raise CommandError(f"--validation-fraction leaves no training rows of {args.data}")
    cut = X.shape[0] - n_held
    return (
        X[:cut],
        X[cut:],
        f"; held out: its last {n_held} rows (no per-row text index: a text may straddle the cut)",
    )
