"""Where activations came from, kept beside them and carried into the models fitted on them.

:func:`skmpsae.activations.capture` writes ``ACTS.npy.meta.json`` next to ``ACTS.npy`` when
the capture ends (atomically; it stays, unlike the resume state ``ACTS.npy.capture.json``): the
model (as it was named, and a fingerprint of its class and checkpoint), the hookpoint, input
or output, the tokenizer settings, the corpus digest and the row count. ``skmpsae fit`` copies
it into the model file (:func:`skmpsae.io.save`'s ``provenance``), and :func:`to_saelens`,
:func:`splice` and the spliced metrics read the hookpoint and model from it.
"""

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .provenance import Provenance

_FORMAT = "skmpsae-activations"
_FORMAT_VERSION = 1
_SUFFIX = ".meta.json"
# Fields that say which model and module the rows come from: a model fitted on rows of one
# place and spliced at another is warned about.
_IDENTITY = ("hookpoint", "capture_input", "model_id")


def metadata_path(activations):
    """The sidecar of the activations file ``activations``: ``ACTS.npy.meta.json``."""
    return Path(str(activations) + _SUFFIX)


def model_id(model):
    """A fingerprint of a loaded model: its class and the checkpoint it was loaded from."""
    inner = model
    if type(model).__module__.startswith("sentence_transformers"):
        inner = getattr(model[0], "auto_model", model)
    path = getattr(getattr(inner, "config", None), "_name_or_path", None) or ""
    if path and Path(path).is_dir():
        path = str(Path(path).resolve())  # the same model loaded from another directory
    return f"{type(model).__name__}:{path}"


def model_source(model):
    """What ``load_model`` takes to load ``model`` again: a packaged model's name as given, a
    directory as an absolute path."""
    path = Path(model)
    return str(path.resolve()) if path.is_dir() else str(model)


def write_capture_metadata(activations, settings, n_rows, **extra):
    """Write the sidecar of a finished capture (replaced atomically)."""
    from .._version import __version__

    meta = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        **settings,
        **{key: value for key, value in extra.items() if value is not None},
        "n_rows": int(n_rows),
        "dtype": "float32",
        "skmpsae_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_write(metadata_path(activations)) as file:
        file.write(json.dumps(meta, indent=2).encode())
    return meta


def update_capture_metadata(activations, **fields):
    """Add ``fields`` to an existing sidecar (the command line adds the texts file)."""
    meta = read_capture_metadata(activations)
    if meta is None:
        return None
    meta.update({key: value for key, value in fields.items() if value is not None})
    with atomic_write(metadata_path(activations)) as file:
        file.write(json.dumps(meta, indent=2).encode())
    return meta


def read_capture_metadata(activations):
    """The capture settings of ``activations`` (a dict), or None when it has no sidecar.

    Parameters
    ----------
    activations : str or path-like
        A ``.npy`` file written by :func:`skmpsae.activations.capture`.

    Returns
    -------
    metadata : dict or None
        ``model`` (as given to ``load_model``; None for a module passed in), ``model_id``,
        ``hookpoint``, ``capture_input``, ``max_length``, ``skip_special_tokens``,
        ``texts_sha256``, ``n_texts``, ``n_rows``, ``n_features`` and, from the command line,
        ``texts_file``.

    Raises
    ------
    ValueError
        If the sidecar is damaged, or counts another number of rows than the file holds.

    See Also
    --------
    capture : Writes the file and its sidecar.
    skmpsae.io.save : Stores these settings in a model file (``provenance=``).

    Examples
    --------
    >>> from skmpsae.activations import read_capture_metadata
    >>> read_capture_metadata("no_such_acts.npy") is None
    True
    """
    path = metadata_path(activations)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ValueError("not an skmpsae capture sidecar")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: damaged capture metadata ({exc}); delete it.") from None
    if Path(activations).is_file():
        shape = np.load(activations, mmap_mode="r").shape
        if shape[:1] != (meta.get("n_rows"),):
            raise ValueError(
                f"{path}: describes {meta.get('n_rows')} rows but {activations} holds "
                f"{shape[0]}; the file was replaced after its capture. Delete {path}."
            )
    return meta


def provenance_of(estimator):
    """The capture settings a model was fitted on (``provenance_``), or an empty dict."""
    value = getattr(estimator, "provenance_", None)
    return dict(value) if isinstance(value, dict) else {}


def check_same_place(provenance, *, what, hookpoint=None, model=None, capture_input=None):
    """Warn when a model fitted on the rows of one place is used at another.

    ``provenance`` is the model's (``provenance_``); ``what`` names the use ("splice", ...).
    Returns the list of mismatches (also warned).
    """
    if not provenance:
        return []
    sources = provenance.get("sources") or [provenance]  # a model fitted on several files
    found = [_mismatches(source, hookpoint, model, capture_input) for source in sources]
    mismatches = min(found, key=len)  # rows of any of its sources are its own place
    if mismatches:
        warnings.warn(
            f"{what}: the SAE is used at {'; '.join(mismatches)}: its reconstruction there "
            "means little.",
            UserWarning,
            stacklevel=3,
        )
    return mismatches


def _mismatches(provenance, hookpoint, model, capture_input):
    mismatches = []
    saved = provenance.get("hookpoint")
    if hookpoint is not None and saved is not None and hookpoint != saved:
        mismatches.append(f"hookpoint {hookpoint!r} (fitted on {saved!r})")
    if capture_input is not None and "capture_input" in provenance:
        if bool(capture_input) != bool(provenance["capture_input"]):
            side = "input" if provenance["capture_input"] else "output"
            mismatches.append(f"the module's other side (fitted on its {side})")
    if model is not None and provenance.get("model_id"):
        given = model if isinstance(model, str) else model_id(model)
        if given != provenance["model_id"]:
            mismatches.append(f"model {given!r} (fitted on {provenance['model_id']!r})")
    return mismatches


# -- rows grouped by text -------------------------------------------------------------------
# The per-row text index lives in the token provenance file that capture writes beside
# ACTS.npy (text index, token position, token id per row). This lookup is the one place that
# reads it; it returns None where the file is absent.
def row_text_index(activations):
    """The index of the text each row of ``activations`` comes from (from the per-row
    provenance file that ``capture`` writes beside it), or None if there is none."""
    n_rows = np.load(activations, mmap_mode="r").shape[0]
    table = Provenance.read(activations, n_rows).table
    return None if table is None else np.asarray(table[:, 0])


def split_by_group(groups, test_fraction, random_state=None):
    """Row indices (train, test) with every group on one side only.

    The groups (texts) are shuffled with ``random_state`` and the first ones, up to
    ``test_fraction`` of the rows, are held out; None keeps the corpus order and holds out
    the last groups. At least one group goes to each side.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.shape[0] < 2:
        raise ValueError("groups must be a 1-D array of at least two rows.")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    unique, first, counts = np.unique(groups, return_index=True, return_counts=True)
    if unique.shape[0] < 2:
        raise ValueError("all rows belong to one text: there is nothing to hold out.")
    if random_state is None:
        order = np.argsort(first)[::-1]  # the last texts of the corpus first
    else:
        order = np.random.RandomState(random_state).permutation(unique.shape[0])
    held = np.cumsum(counts[order]) <= test_fraction * groups.shape[0]
    held[0] = True
    held[-1] = False
    test_groups = unique[order[held]]
    is_test = np.isin(groups, test_groups)
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)
