"""The feature browser: :func:`write_report` computes what the site shows (statistics, the
atom tree, shaded contexts, images, logit effects) and :mod:`.site` writes it."""

import os
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.utils import check_random_state

from .._compat import HasMethods, Interval, validate_params
from .._train.progress import Progress
from .._utils import NotBoolInterval
from . import bands as _bands
from . import images as _images
from .contexts import (
    _context_activations,
    _context_windows,
    logit_effects,
)
from .inputs import _ESTIMATOR, _check_rows, _load_acts
from .site import _b64, _check_output, _write
from .stats import _DEFAULT_CHUNK, feature_statistics
from .tree import atom_hierarchy


class _Tokens:
    """``tokens[i][j][t]`` (or ``tokens.at(i, j, t)``), the text of token ``t`` of atom
    ``i``'s context ``j``, made one atom at a time from the ids (the last atom's kept): lists
    of strings for every context of every atom at once would take ~200 bytes a context more
    than its ids. Without ids (no provenance), each context is its row, shown as its
    number."""

    def __init__(self, ids, lookup):
        self.ids, self.last = ids, (None, None)
        self.names = None
        if lookup is not None:  # by id, and "" for -1 (the last entry) and unknown ids
            self.names = np.full(max(lookup, default=-1) + 2, "", dtype=object)
            self.names[list(lookup)] = list(lookup.values())

    def at(self, i, j, t):
        return self[i][j][t]

    def __getitem__(self, i):
        if self.last[0] != i:
            if self.names is None:
                names = [[f"row {r}" for r in win] for win in self.ids[i].tolist()]
            else:
                names = self.names[self.ids[i]].tolist()
            self.last = (i, names)
        return self.last[1]


def _contexts(estimator, X, top, top_values, provenance, window, chunk_size):
    """Per atom and row of ``top`` (n_components, n; -1 pads): the tokens of the window, the
    atom's activation at each, which entries exist, and the centre's index in the window.
    Without provenance, the window is the row alone, shown as its number."""

    if provenance is None or provenance.table is None:
        window = 0
        rows = top[..., None]
        tokens = _Tokens(rows, None)
    else:
        rows = _context_windows(top, provenance.table[:, 0], window)
        flat = rows.ravel()
        ids = np.where(flat >= 0, np.asarray(provenance.table[np.maximum(flat, 0), 2]), -1)
        texts = provenance.token_text(np.unique(ids[ids >= 0]))
        lookup = dict(zip(np.unique(ids[ids >= 0]).tolist(), texts, strict=True))
        tokens = _Tokens(ids.reshape(rows.shape), lookup)
    if window == 0:  # the window is the top row alone, whose activation is known
        acts = top_values[..., None]
    else:
        atoms = np.broadcast_to(np.arange(top.shape[0])[:, None], top.shape)
        acts = _context_activations(estimator, X, rows, atoms, chunk_size)
    return {"tokens": tokens, "activations": acts, "valid": rows >= 0, "centre": window}


def _pixels(estimator, X, stats, image_shape):
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


@validate_params(
    {
        "estimator": _ESTIMATOR,
        "X": ["array-like", str, os.PathLike],
        "output": [str, os.PathLike],
        "tokenizer": [None, HasMethods(["decode", "convert_ids_to_tokens"])],
        "unembedding": [None, "array-like", HasMethods(["get_output_embeddings"])],
        "image_shape": [None, tuple, list],
        "images": [None, str, os.PathLike, "array-like"],
        "texts": [None, str, os.PathLike, list],
        "n_top": [NotBoolInterval(Integral, 1, None, closed="left")],
        "window": [NotBoolInterval(Integral, 0, None, closed="left")],
        "min_probability": [Interval(Real, 0, 1, closed="both")],
        "pair_steps": [NotBoolInterval(Integral, 0, None, closed="left")],
        "pair_min_cosine": [Interval(Real, 0, 1, closed="both")],
        "max_partners": [NotBoolInterval(Integral, 1, None, closed="left")],
        "n_bands": [NotBoolInterval(Integral, 0, None, closed="left")],
        "n_per_band": [NotBoolInterval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
        "n_logits": [NotBoolInterval(Integral, 1, None, closed="left")],
        "threshold": [Interval(Real, 0, None, closed="left")],
        "force": ["boolean"],
        "verbose": ["verbose"],
        "logits_note": [None, str],
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
    images=None,
    texts=None,
    n_top=20,
    window=8,
    n_bands=4,
    n_per_band=4,
    random_state=0,
    min_probability=0.5,
    pair_steps=8,
    pair_min_cosine=0.3,
    max_partners=256,
    n_logits=10,
    threshold=0.0,
    force=False,
    verbose=0,
    logits_note=None,
):
    """Write a feature browser: a static site that opens from ``file://`` in any browser.

    ``output/index.html`` lists every atom (sortable by firing rate, mean activation, mean
    matching-pursuit step; searchable by atom id and by token); each atom's page shows its
    top-activating contexts with each token highlighted by the atom's activation there,
    contexts drawn from bands of quantiles of its activations, the histogram of its
    activations, its direct logit effects, and its parent and children. No
    server and no network: every script and style is inside the folder, and the atoms' data
    comes in chunks loaded as they are opened. The statistics take one pass over ``X``
    (:func:`feature_statistics`, which also keeps a uniform sample of each atom's firings
    for the bands), the context highlights one encoding of the distinct rows of the shown
    contexts.

    Parameters
    ----------
    estimator : fitted SAE
    X : str, path-like, list of paths or array-like of shape (n_samples, n_features)
        The rows, or the path (or, for image and text rows, the paths) of an ``ACTS.npy`` file
        written by
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
    images : str, path-like or array, default=None
        For rows captured from an image model (``capture(images=...)``): the image source they
        came from (a folder, an ``.npy`` array or ``"mnist"``); None: the one the capture
        metadata records. Each atom's page then shows its top images, with its activation on
        each patch as a heat map, and images from lower activation bands; with text rows too
        (``X`` a list of an image capture and a text capture of a vision-language model), its
        top texts beside them and its modality score, by which the index sorts.
    texts : str, path-like or list of str, default=None
        The texts of the text rows, one per line of a file or item of a list; None: the file
        the capture metadata records, else each text shows as its index.
    n_top : int, default=20
        Contexts per atom.
    window : int, default=8
        Tokens shown on each side of the activating token.
    n_bands : int, default=4
        Bands of equal mass of each atom's firing magnitudes (4: its quartiles), between its
        quantiles read off its histogram; the page shows ``n_per_band`` contexts drawn at
        random from each, its top contexts left out. 0 shows none. Text rows only: image
        rows have bands of their own (fractions of the top image's activation).
    n_per_band : int, default=4
        Contexts drawn per band.
    random_state : int, RandomState instance or None, default=0
        Draws the band contexts (and, for image rows, the band images); an int makes the
        report reproducible.
    min_probability : float, default=0.5
        See :func:`atom_hierarchy`.
    pair_steps : int, default=8
        See :func:`feature_statistics`; 0 skips the hierarchy.
    pair_min_cosine : float, default=0.3
        See :func:`feature_statistics` (matching pursuit's tree).
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
    logits_note : str, default=None
        Why there are no logit effects (e.g. "the model is not a causal LM"), shown on each
        atom's page in their place.

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
    from .._activations.metadata import read_capture_metadata
    from .._activations.provenance import Provenance, _marks_spaces, _token_text

    _check_output(output, force)
    provenance, source, metas = None, "", []
    if isinstance(X, (list, tuple)) and X and all(isinstance(p, (str, os.PathLike)) for p in X):
        source = " + ".join(Path(p).name for p in X)
        X, provenance, metas = _images.read_sources(X)
    elif isinstance(X, (str, os.PathLike)):
        source = Path(X).name
        path = X
        X = _load_acts(path)
        provenance = Provenance.read(path, X.shape[0], tokenizer)
        metas = [read_capture_metadata(path) or {}]
    X = _check_rows(estimator, X)
    images, texts = _images.sources_of(metas, images, texts)
    if images is not None and provenance is None:
        raise ValueError("images needs X as the path of a capture, whose provenance places rows.")
    if image_shape is not None:
        image_shape = tuple(int(n) for n in image_shape)
        if len(image_shape) != 2 or int(np.prod(image_shape)) != X.shape[1]:
            raise ValueError(
                f"image_shape must be (height, width) with height * width = {X.shape[1]}, "
                f"got {image_shape}."
            )
    row_tokens = None
    if provenance is not None and provenance.table is not None and image_shape is None:
        row_tokens = np.asarray(provenance.table[:, 2])
        if not (row_tokens >= 0).any():  # image rows only: no token to count
            row_tokens = None
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    text_pages = image_shape is None and images is None
    stats = feature_statistics(
        estimator,
        X,
        row_tokens=row_tokens,
        n_random=_bands.n_random(n_bands, n_per_band) if text_pages else 0,
        random_state=seed,
        n_top=n_top,
        pair_steps=pair_steps,
        pair_min_cosine=pair_min_cosine,
        max_partners=max_partners,
        threshold=threshold,
        verbose=verbose,
    )
    hierarchy = None
    if stats.pair_counts is not None:
        hierarchy = atom_hierarchy(stats, min_probability=min_probability)
    stages = Progress(3, "report", "stage", bool(verbose))
    try:
        vision = None
        if images is not None:
            vision = _images.image_panels(
                estimator, X, provenance, images=images, texts=texts, random_state=seed
            )
        bands = None
        if text_pages and n_bands:
            bands = _bands.quantile_bands(stats, n_bands, n_per_band, np.random.default_rng(seed))
        if text_pages:
            # The band contexts are shaded with the top ones: each distinct row encoded once.
            rows, values = stats.top_rows, stats.top_values
            if bands is not None:
                rows = np.concatenate([rows, bands.rows.reshape(len(rows), -1)], axis=1)
                values = np.concatenate([values, bands.activations.reshape(len(rows), -1)], axis=1)
            contexts = _contexts(estimator, X, rows, values, provenance, window, _DEFAULT_CHUNK)
            pictures = None
        else:
            contexts = _contexts(
                estimator, X, stats.top_rows, stats.top_values, None, 0, _DEFAULT_CHUNK
            )
            pictures = None if image_shape is None else _pixels(estimator, X, stats, image_shape)
        stages.update("contexts")
        vocab = provenance.vocab if provenance is not None else None
        marks = None if tokenizer is None else _marks_spaces(tokenizer)

        def name(token):
            if tokenizer is not None:
                return _token_text(tokenizer, int(token), marks)
            if vocab is not None and int(token) in vocab:
                return vocab[int(token)]
            return f"#{int(token)}"

        logits = None
        if unembedding is not None:
            effects = logit_effects(estimator, unembedding, n_top=n_logits)
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
            "logits_note": logits_note,
        }
        if stats.top_tokens is not None:
            stats.top_token_names = [[name(t) for t in row if t >= 0] for row in stats.top_tokens]
        out = _write(
            output,
            meta=meta,
            stats=stats,
            hierarchy=hierarchy,
            contexts=contexts,
            logits=logits,
            images=pictures,
            force=force,
            vision=vision,
            bands=bands,
        )
        stages.update("written")
    finally:
        stages.close()
    return out
