"""The feature browser: a static site that opens from ``file://`` with no server and no network.

``index.html`` and ``static/`` (the page, its script and its style, copied from this package)
read ``data/index.js`` (every atom's summary: the sortable, searchable index) and, when an atom
is opened, ``data/atoms_NNNN.js`` (the details of ``_CHUNK`` atoms), through ``<script>`` tags:
browsers refuse ``fetch()`` on ``file://`` pages. ``skmpsae-report.json`` marks the folder as a
report, so that writing again may replace it and nothing else.
"""

import base64
import json
import os
import shutil
import tempfile
from importlib import resources
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils._param_validation import HasMethods, Interval, validate_params

from .._train.progress import Progress
from .._utils import NotBoolInterval
from .contexts import (
    _context_activations,
    _context_windows,
    logit_effects,
)
from .inputs import _ESTIMATOR, _check_rows, _load_acts
from .stats import _DEFAULT_CHUNK, feature_statistics
from .tree import atom_hierarchy

MARKER = "skmpsae-report.json"
_CHUNK = 256


def _check_output(output, force):
    output = Path(output)
    if output.exists():
        if not output.is_dir():
            raise FileExistsError(f"{output}: exists and is not a directory.")
        is_report = (output / MARKER).is_file()
        if not is_report and any(output.iterdir()) and not force:
            raise FileExistsError(
                f"{output}: exists and is not a skmpsae report; choose another folder or pass "
                "force=True (--force) to replace it."
            )
    elif not output.parent.is_dir():
        raise FileNotFoundError(f"{output.parent}: no such directory for the report.")
    return output


def _assign(name, payload):
    text = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return f"window.{name} = {text};\n"


def _call(name, *args):
    text = ",".join(
        json.dumps(a, separators=(",", ":"), allow_nan=False).replace("</", "<\\/") for a in args
    )
    return f"{name}({text});\n"


def _round(x, digits=4):
    return float(f"{float(x):.{digits}g}")


def _b64(array):
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.uint8).tobytes()).decode()


def _write(
    output,
    *,
    meta,
    stats,
    hierarchy,
    contexts,
    logits,
    images,
    force,
):
    """Write the site into a temporary folder beside ``output``, then put it in place."""
    output = _check_output(output, force)
    K = stats.frequency.size
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        (tmp / "static").mkdir()
        (tmp / "data").mkdir()
        static = resources.files("skmpsae._inspect") / "static"
        for name in ("app.js", "style.css"):
            (tmp / "static" / name).write_bytes((static / name).read_bytes())
        (tmp / "index.html").write_bytes((static / "index.html").read_bytes())

        tokens, acts, centre = contexts["tokens"], contexts["activations"], contexts["centre"]
        top_text, search = [], []
        for i in range(K):
            seen = []
            for j in range(stats.top_rows.shape[1]):
                if stats.top_rows[i, j] < 0:
                    break
                tok = tokens[i][j][centre]
                if tok not in seen:
                    seen.append(tok)
            top_text.append(" · ".join(t.strip() or repr(t) for t in seen[:4]))
            search.append("\n".join(t.strip().lower() for t in seen))
        steps = None
        if stats.selection_steps is not None:
            counts = stats.selection_steps
            total = counts.sum(axis=1)
            mean = (counts * (np.arange(counts.shape[1]) + 1)).sum(axis=1) / np.maximum(total, 1)
            steps = [_round(m) if t else None for m, t in zip(mean, total, strict=True)]
        atoms = {
            "freq": stats.frequency.tolist(),
            "mean": [_round(x) for x in stats.mean_activation],
            "max": [_round(x) for x in stats.max_activation],
            "step": steps,
            "parent": None if hierarchy is None else hierarchy.parent.tolist(),
            "top": top_text,
            "search": search,
        }
        index = {"meta": meta, "atoms": atoms, "chunk_size": _CHUNK}
        (tmp / "data" / "index.js").write_text(_assign("SKMPSAE_INDEX", index), encoding="utf-8")

        levels = stats.quantile_levels
        for c in range(-(-K // _CHUNK)):
            chunk = []
            for i in range(c * _CHUNK, min(K, (c + 1) * _CHUNK)):
                used = np.flatnonzero(stats.histogram[i])
                last = int(used[-1]) + 1 if used.size else 1
                bins = stats.histogram.shape[1]
                # Show the bins up to the last non-empty one (at least a quarter of them).
                last = max(last, bins // 4)
                d = {
                    "hist": {
                        "counts": stats.histogram[i, :last].tolist(),
                        "hi": _round(stats.histogram_edges[i, last]),
                    },
                    "quantiles": [
                        [_round(q, 3), _round(v)]
                        for q, v in zip(levels, stats.quantiles[i], strict=True)
                    ],
                    "negative": int(stats.n_negative[i]),
                    "contexts": [],
                }
                for j in range(stats.top_rows.shape[1]):
                    row = int(stats.top_rows[i, j])
                    if row < 0:
                        break
                    keep = contexts["valid"][i][j]
                    d["contexts"].append(
                        {
                            "v": _round(stats.top_values[i, j]),
                            "row": row,
                            "t": [t for t, k in zip(tokens[i][j], keep, strict=True) if k],
                            "a": [_round(a, 3) for a, k in zip(acts[i, j], keep, strict=True) if k],
                            "c": int(keep[:centre].sum()),
                        }
                    )
                if stats.selection_steps is not None:
                    d["steps"] = stats.selection_steps[i].tolist()
                if hierarchy is not None:
                    p = int(hierarchy.parent[i])
                    d["parent"] = p
                    d["parent_p"] = _round(hierarchy.probability[i]) if p >= 0 else None
                    d["parent_first"] = (
                        _round(hierarchy.parent_first[i])
                        if p >= 0 and hierarchy.parent_first is not None
                        else None
                    )
                    kids = hierarchy.children[i]
                    d["children"] = [[int(k), _round(hierarchy.probability[k])] for k in kids]
                if logits is not None:
                    d["logits"] = {
                        "up": [[t, _round(v)] for t, v in logits[i][0]],
                        "down": [[t, _round(v)] for t, v in logits[i][1]],
                    }
                if images is not None:
                    d["image"] = images["atoms"][i]
                    d["images"] = images["top"][i]
                chunk.append(d)
            (tmp / "data" / f"atoms_{c:04d}.js").write_text(
                _call("SKMPSAE_CHUNK", c, chunk), encoding="utf-8"
            )
        summary = {"n_components": K, "n_samples": int(stats.n_samples), **meta}
        (tmp / MARKER).write_text(json.dumps(summary, indent=1), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        tmp.rename(output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return output


def _contexts(estimator, X, stats, provenance, window, chunk_size):
    """Per atom and top row: the tokens of the window, the atom's activation at each, which
    entries exist, and the centre's index in the window. Without provenance, the window is
    the row alone, shown as its number."""

    top = stats.top_rows
    if provenance is None or provenance.table is None:
        window = 0
        rows = top[..., None]
        tokens = [[[f"row {r}"] for r in atom] for atom in top]
    else:
        rows = _context_windows(top, provenance.table[:, 0], window)
        flat = rows.ravel()
        ids = np.where(flat >= 0, np.asarray(provenance.table[np.maximum(flat, 0), 2]), -1)
        texts = provenance.token_text(np.unique(ids[ids >= 0]))
        lookup = dict(zip(np.unique(ids[ids >= 0]).tolist(), texts, strict=True))
        ids = ids.reshape(rows.shape)
        tokens = [[[lookup.get(int(t), "") for t in win] for win in atom] for atom in ids]
    if window == 0:  # the window is the top row alone, whose activation is known
        acts = stats.top_values[..., None]
    else:
        atoms = np.broadcast_to(np.arange(top.shape[0])[:, None], top.shape)
        acts = _context_activations(estimator, X, rows, atoms, chunk_size)
    return {"tokens": tokens, "activations": acts, "valid": rows >= 0, "centre": window}


def _images(estimator, X, stats, image_shape):
    """Base64 uint8 pictures: each atom (128 + 127 x atom / max |atom|) and its top rows
    (each scaled to 0-255 between its own minimum and maximum)."""
    D = estimator.components_
    scale = np.maximum(np.abs(D).max(axis=1, keepdims=True), 1e-12)
    atoms = [_b64(np.rint(128 + 127 * d)) for d in D / scale]
    top = []
    for i in range(D.shape[0]):
        rows = [int(r) for r in stats.top_rows[i] if r >= 0]
        pics = []
        for r in rows:
            x = np.asarray(X[r], dtype=np.float64)
            lo, hi = x.min(), x.max()
            pics.append(_b64(np.rint(255 * (x - lo) / (hi - lo if hi > lo else 1))))
        top.append(pics)
    if int(np.prod(image_shape)) != D.shape[1]:
        raise ValueError(
            f"image_shape {tuple(image_shape)} has {int(np.prod(image_shape))} pixels, "
            f"not the {D.shape[1]} features of the rows."
        )
    return {"atoms": atoms, "top": top}


def _progress(stage, verbose):
    return Progress(1, stage, "stage", bool(verbose))


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X": ["array-like", str, os.PathLike],
        "output": [str, os.PathLike],
        "tokenizer": [None, HasMethods(["decode", "convert_ids_to_tokens"])],
        "unembedding": [None, "array-like", HasMethods(["get_output_embeddings"])],
        "image_shape": [None, tuple, list],
        "n_top": [NotBoolInterval(Integral, 1, None, closed="left")],
        "window": [NotBoolInterval(Integral, 0, None, closed="left")],
        "min_probability": [Interval(Real, 0, 1, closed="both")],
        "pair_steps": [NotBoolInterval(Integral, 0, None, closed="left")],
        "max_partners": [NotBoolInterval(Integral, 1, None, closed="left")],
        "n_logits": [NotBoolInterval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, None, closed="left")],
        "force": ["boolean"],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def write_report(
    estimator,
    X,
    output,
    *,
    tokenizer=None,
    unembedding=None,
    image_shape=None,
    n_top=20,
    window=8,
    min_probability=0.5,
    pair_steps=8,
    max_partners=256,
    n_logits=10,
    threshold=0.0,
    force=False,
    verbose=0,
):
    """Write a feature browser: a static site that opens from ``file://`` in any browser.

    ``output/index.html`` lists every atom (sortable by firing rate, mean activation, mean
    matching-pursuit step; searchable by atom id and by token); each atom's page shows its
    top-activating contexts with each token highlighted by the atom's activation there, the
    histogram of its activations, its direct logit effects, and its parent and children. No
    server and no network: every script and style is inside the folder, and the atoms' data
    comes in chunks loaded as they are opened. The statistics take one pass over ``X``
    (:func:`feature_statistics`), the context highlights one encoding of the distinct rows
    of the top contexts.

    Parameters
    ----------
    estimator : fitted SAE
    X : str, path-like or array-like of shape (n_samples, n_features)
        The rows, or the path of an ``ACTS.npy`` file written by
        :func:`skmpsae.activations.capture`: its ``ACTS.npy.tokens.npy`` (text, position and
        token of each row) and ``ACTS.npy.vocab.json`` (token texts) are then read, and the
        contexts show tokens; otherwise they show row numbers.
    output : str or path-like
        The report folder. An existing report there is replaced; any other non-empty folder
        only with ``force=True``.
    tokenizer : transformers tokenizer, default=None
        Decodes token ids (instead of ``ACTS.npy.vocab.json``), and names the logit effects'
        tokens.
    unembedding : array-like of shape (vocab_size, n_features) or model, default=None
        For the direct logit effects (see :func:`logit_effects`); None: none shown.
    image_shape : tuple of int, default=None
        For image rows (e.g. ``(28, 28)`` for MNIST): each atom's page draws the atom and its
        top images instead of token contexts.
    n_top : int, default=20
        Contexts per atom.
    window : int, default=8
        Tokens shown on each side of the activating token.
    min_probability : float, default=0.5
        See :func:`atom_hierarchy`.
    pair_steps : int, default=8
        See :func:`feature_statistics`; 0 skips the hierarchy.
    max_partners : int, default=256
        See :func:`feature_statistics`.
    n_logits : int, default=10
        Promoted and suppressed tokens shown per atom.
    threshold : float, default=0.0
        See :func:`feature_statistics`.
    force : bool, default=False
        Replace a non-empty ``output`` that is not a report.
    verbose : int, default=0
        Progress on stderr.

    Returns
    -------
    path : pathlib.Path
        ``output``; open ``path / "index.html"``.

    See Also
    --------
    feature_statistics, atom_hierarchy, logit_effects

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> from skmpsae import MatchingPursuitSAE
    >>> from skmpsae.inspect import write_report
    >>> X = np.random.RandomState(0).rand(300, 10).astype(np.float32)
    >>> sae = MatchingPursuitSAE(n_components=16, n_nonzero_coefs=3, max_iter=2,
    ...                          random_state=0).fit(X)
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "report"
    >>> sorted(p.name for p in write_report(sae, X, folder).iterdir())
    ['data', 'index.html', 'skmpsae-report.json', 'static']
    """
    from pathlib import Path

    from .._activations.provenance import Provenance, _marks_spaces, _token_text

    _check_output(output, force)
    provenance, source = None, ""
    if isinstance(X, (str, os.PathLike)):
        source = Path(X).name
        path = X
        X = _load_acts(path)
        provenance = Provenance.read(path, X.shape[0], tokenizer)
    X = _check_rows(estimator, X)
    if image_shape is not None:
        image_shape = tuple(int(n) for n in image_shape)
        if len(image_shape) != 2 or int(np.prod(image_shape)) != X.shape[1]:
            raise ValueError(
                f"image_shape must be (height, width) with height * width = {X.shape[1]}, "
                f"got {image_shape}."
            )
    stats = feature_statistics(
        estimator,
        X,
        n_top=n_top,
        pair_steps=pair_steps,
        max_partners=max_partners,
        threshold=threshold,
        verbose=verbose,
    )
    hierarchy = None
    if stats.pair_counts is not None:
        hierarchy = atom_hierarchy(stats, min_probability=min_probability)
    stages = Progress(3, "report", "stage", bool(verbose))
    try:
        if image_shape is None:
            contexts = _contexts(estimator, X, stats, provenance, window, _DEFAULT_CHUNK)
            images = None
        else:
            contexts = _contexts(estimator, X, stats, None, 0, _DEFAULT_CHUNK)
            images = _images(estimator, X, stats, image_shape)
        stages.update("contexts")
        logits = None
        if unembedding is not None:
            effects = logit_effects(estimator, unembedding, n_top=n_logits)
            vocab = provenance.vocab if provenance is not None else None
            marks = None if tokenizer is None else _marks_spaces(tokenizer)

            def name(token):
                if tokenizer is not None:
                    return _token_text(tokenizer, int(token), marks)
                if vocab is not None and int(token) in vocab:
                    return vocab[int(token)]
                return f"#{int(token)}"

            logits = [
                (
                    [(name(t), v) for t, v in zip(up, upv, strict=True)],
                    [(name(t), v) for t, v in zip(down, downv, strict=True)],
                )
                for up, upv, down, downv in zip(
                    effects.promoted,
                    effects.promoted_logits,
                    effects.suppressed,
                    effects.suppressed_logits,
                    strict=True,
                )
            ]
        stages.update("logit effects")
        meta = {
            "estimator": type(estimator).__name__,
            "n_components": int(estimator.components_.shape[0]),
            "n_samples": int(X.shape[0]),
            "source": source,
            "ordered": bool(stats.ordered),
            "has_tokens": bool(provenance is not None and provenance.table is not None),
            "image_shape": list(image_shape) if image_shape else None,
        }
        out = _write(
            output,
            meta=meta,
            stats=stats,
            hierarchy=hierarchy,
            contexts=contexts,
            logits=logits,
            images=images,
            force=force,
        )
        stages.update("written")
    finally:
        stages.close()
    return out
