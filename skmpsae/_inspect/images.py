"""The feature browser's image panels: for rows captured from an image model, each atom's top
images with its activation on every patch drawn as a heat map, images sampled from lower
activation bands, and, beside image rows, text rows (a vision-language model): the top texts and
the atom's modality score. :mod:`.report` calls :func:`image_panels`; ``static/images.js`` draws
what it returns.

Images are ranked by the atom's largest activation over their rows (each image counts once,
however many of its patches fire), texts likewise; the heat maps are scaled by the atom's top
image's peak, so that the images of one atom compare.
"""

import base64
import io
from pathlib import Path

import numpy as np

from .bands import draw_in_bands
from .site import _round

# Bands below the top images, as fractions of the atom's peak activation over images.
BANDS = ((0.5, 0.75), (0.25, 0.5), (0.0, 0.25))
_THUMB = 96  # longest side of a stored thumbnail, in pixels
IMAGE, TEXT = 1, 0  # the modality codes of the provenance


def _codes(estimator, X, start, stop):
    codes = estimator.transform(np.asarray(X[start:stop]))
    return codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes)


def _item_peaks(estimator, X, items, modality, n_items, chunk_size):
    """Per modality, ``(n_items, n_components)``: each item's largest activation of each atom
    over its rows."""
    K = estimator.components_.shape[0]
    peaks = {m: np.zeros((n_items[m], K), dtype=np.float32) for m in n_items}
    for start in range(0, X.shape[0], chunk_size):
        stop = min(start + chunk_size, X.shape[0])
        codes = _codes(estimator, X, start, stop)
        for m in n_items:
            rows = np.flatnonzero(modality[start:stop] == m)
            if rows.size:
                np.maximum.at(peaks[m], items[start:stop][rows], codes[rows])
    return peaks


def _modality_scores(estimator, X, modality):
    """:func:`.modality.modality_scores` of the image and text rows; None unless both exist."""
    from .modality import modality_scores

    image, text = np.flatnonzero(modality == IMAGE), np.flatnonzero(modality == TEXT)
    if not (image.size and text.size):
        return None
    return modality_scores(estimator, np.asarray(X[image]), np.asarray(X[text])).scores


def _ranked(peaks, n_top, n_band, rng):
    """Per atom: its top items (value > 0, best first) and the items drawn from each band."""
    top, bands = [], []
    for k in range(peaks.shape[1]):
        col = peaks[:, k]
        order = np.argsort(-col, kind="stable")[:n_top]
        order = order[col[order] > 0]
        top.append(order)
        peak = col[order[0]] if order.size else 0.0
        edges = [(lo * peak, hi * peak) for lo, hi in BANDS]
        bands.append(draw_in_bands(col, edges, n_band, rng, exclude=order))
    return top, bands


def _thumbnail(pixels):
    """A PNG data URL of a uint8 (H, W[, C]) image, its longest side at most ``_THUMB``."""
    from PIL import Image

    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    image = Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8))
    if max(image.size) > _THUMB:
        image.thumbnail((_THUMB, _THUMB))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _patch_grids(estimator, X, items, modality, kind_patch, patch_rc, wanted, grid):
    """``{image: (n_components, rows, cols)}`` activations on each patch of the wanted images."""
    out = {}
    is_patch = (modality == IMAGE) & kind_patch
    for image in wanted:
        rows = np.flatnonzero(is_patch & (items == image))
        if not rows.size:
            continue
        codes = estimator.transform(np.asarray(X[rows]))
        codes = codes.toarray() if hasattr(codes, "toarray") else np.asarray(codes)
        heat = np.zeros((codes.shape[1],) + tuple(grid), dtype=np.float32)
        heat[:, patch_rc[rows, 0], patch_rc[rows, 1]] = codes.T
        out[int(image)] = heat
    return out


def _load_texts(texts):
    if texts is None:
        return None
    if isinstance(texts, (str, Path)):
        return Path(texts).read_text(encoding="utf-8").splitlines()
    return [str(t) for t in texts]


def image_panels(
    estimator,
    X,
    provenance,
    *,
    images,
    texts=None,
    grid=None,
    n_top=12,
    n_band=4,
    chunk_size=4096,
    random_state=0,
):
    """What the image panels of the report show, per atom, and the index's extra columns.

    Parameters
    ----------
    estimator : fitted SAE
    X : array-like of shape (n_samples, n_features)
        Image rows (and, for a vision-language model, text rows), as captured.
    provenance : object with ``column(name)``
        The rows' provenance (:class:`skmpsae._activations.provenance.Provenance`).
    images : str, path-like or array
        The image source the rows were captured from (as ``capture(images=...)`` takes it).
    texts : list of str or path, default=None
        The texts of the text rows, one per text index; None: texts show as their index.
    grid : tuple of int, default=None
        The patch grid (rows, cols); None: read off the provenance's patch columns.

    Returns
    -------
    index : dict
        Extra sortable index columns (``modality`` when both modalities are present) and the
        ``top`` and ``search`` summaries of each atom.
    atoms : list of dict
        One panel per atom, for ``static/images.js``.
    """
    from .._activations.images import ImageSource

    rng = np.random.default_rng(random_state)
    items = np.asarray(provenance.column("text")).astype(np.int64)
    modality = np.asarray(provenance.column("modality"))
    kind = np.asarray(provenance.column("kind"))
    patch_rc = np.stack(
        [np.asarray(provenance.column("patch_row")), np.asarray(provenance.column("patch_col"))], 1
    )
    source = ImageSource(images)
    texts = _load_texts(texts)
    n_items = {IMAGE: len(source)}
    if (modality == TEXT).any():
        n_items[TEXT] = int(items[modality == TEXT].max()) + 1
    if (modality == IMAGE).any() and int(items[modality == IMAGE].max()) >= len(source):
        raise ValueError(
            f"the rows come from {int(items[modality == IMAGE].max()) + 1} images but the image "
            f"source has {len(source)}: is it the source they were captured from?"
        )
    peaks = _item_peaks(estimator, X, items, modality, n_items, chunk_size)
    scores = _modality_scores(estimator, X, modality)
    top, bands = _ranked(peaks[IMAGE], n_top, n_band, rng)
    is_patch = kind == 4
    if grid is None and is_patch.any():
        grid = (int(patch_rc[is_patch, 0].max()) + 1, int(patch_rc[is_patch, 1].max()) + 1)
    wanted = sorted(
        {int(j) for t in top for j in t} | {int(j) for b in bands for d in b for j in d}
    )
    heat = _patch_grids(estimator, X, items, modality, is_patch, patch_rc, wanted, grid or (0, 0))
    thumbs = {j: _thumbnail(source[j : j + 1][0]) for j in wanted}
    text_top = None
    if TEXT in peaks:
        text_top, _ = _ranked(peaks[TEXT], n_top, 0, rng)

    def shown(k, j, value, peak):
        entry = {"id": int(j), "v": _round(value), "src": thumbs[int(j)]}
        if int(j) in heat and peak > 0:
            grid_k = np.clip(heat[int(j)][k] / peak, 0, 1)
            entry["heat"] = base64.b64encode(np.rint(255 * grid_k).astype(np.uint8)).decode()
        return entry

    atoms, summary = [], []
    for k in range(len(top)):
        col = peaks[IMAGE][:, k]
        peak = float(col[top[k][0]]) if top[k].size else 0.0
        panel = {
            "top": [shown(k, j, col[j], peak) for j in top[k]],
            "bands": [
                {"lo": lo, "hi": hi, "images": [shown(k, j, col[j], peak) for j in d]}
                for (lo, hi), d in zip(BANDS, bands[k], strict=True)
            ],
        }
        words = [f"image {int(j)}" for j in top[k][:3]]
        if text_top is not None:
            tcol = peaks[TEXT][:, k]
            panel["texts"] = [
                {"t": texts[j] if texts and j < len(texts) else f"text {j}", "v": _round(tcol[j])}
                for j in text_top[k]
            ]
            words = [t["t"] for t in panel["texts"][:3]] or words
        if scores is not None:
            panel["modality"] = None if np.isnan(scores[k]) else _round(scores[k])
        atoms.append(panel)
        summary.append(words)
    index = {
        "top": [" · ".join(w) for w in summary],
        "search": ["\n".join(w).lower() for w in summary],
        "grid": list(grid) if grid else None,
    }
    if scores is not None:
        index["modality"] = [None if np.isnan(s) else _round(s) for s in scores]
    return index, atoms


class _Columns:
    """The provenance of several activation files read as one, by column name."""

    def __init__(self, columns):
        self.columns = columns
        self.table = None  # no token contexts: image panels replace them
        self.vocab = None

    def column(self, name):
        return self.columns[name]


def read_sources(paths):
    """Rows, provenance and capture metadata of one or several ``ACTS.npy`` files, in order."""
    from .._activations.metadata import read_capture_metadata
    from .._activations.provenance import PROVENANCE_COLUMNS, Provenance
    from .inputs import _load_acts

    arrays, columns, metas = [], {name: [] for name in PROVENANCE_COLUMNS}, []
    for path in paths:
        X = _load_acts(path)
        provenance = Provenance.read(path, X.shape[0])
        if provenance.table is None:
            raise ValueError(
                f"{path}: no provenance file ({Path(path).name}.tokens.npy) beside it."
            )
        for name in PROVENANCE_COLUMNS:
            columns[name].append(np.asarray(provenance.column(name)))
        arrays.append(X)
        metas.append(read_capture_metadata(path) or {})
    X = arrays[0] if len(arrays) == 1 else np.concatenate([np.asarray(a) for a in arrays])
    return X, _Columns({k: np.concatenate(v) for k, v in columns.items()}), metas


def sources_of(metas, images, texts):
    """The image source and the texts, from the arguments or else the capture metadata."""
    for meta in metas:
        if images is None and meta.get("modality") == "image":
            images = meta.get("images")
        if texts is None and meta.get("modality", "text") == "text":
            texts = meta.get("texts_file")
    return images, texts
