"""``skmpsae fit A.npy B.npy ...``: one SAE on the rows of several files (image and text rows
of a vision-language model, say), joined in memory so that every batch mixes them uniformly;
the model records every file's capture settings."""

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


def training_rows(args, held_out, report):
    """(X, provenance, X_held, note) from ``args.sources``; ``held_out`` is fit's splitter of
    one file, applied to each file so that each holds out the tail of its own texts."""
    from .._activations.metadata import read_capture_metadata

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
