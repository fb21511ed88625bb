"""The selection path measured on the machine, not only modelled.

The cost model of ``selection.py`` was calibrated on one machine; on another (an Intel Xeon,
``docs/performance.md``) it chose the Gram-rows path at 32,768 and 65,536 atoms where one GEMM
per step was 1.1x and 1.8x faster. So training measures, as cuDNN's benchmark mode does for
convolutions: on the first batch that needs a choice it runs each candidate path once and keeps
the fastest for the rest of the run and for later fits of the same sizes in this process.

Nothing is written to disk unless the user asks: ``skmpsae tune`` (:func:`tune`) measures and
saves the choice in a small JSON file keyed by the machine and the problem's sizes, and
``SKMPSAE_SELECTION_CACHE=1`` lets every fit save what it measures there too. Fits read the
file when it exists, so that later runs skip the measurement (delete it to measure again;
``SKMPSAE_CACHE_DIR`` moves it).

Candidates are the paths that fit the memory budget and that the model prices within
``_CANDIDATE_RATIO`` of its cheapest: far from a tie the model was right on every machine
measured (where it was wrong, it had priced the faster path within 1.4x of its choice), and
as fits write no file, every process that measures pays the other candidates' time once.
The model's favourite runs last (warm caches, no first-call costs) and another path must beat
it by ``_SWITCH_MARGIN`` to be chosen, so that timing noise does not move a run off the model's
choice for nothing. The batch's codes are those of the chosen path: measuring costs the other
candidates' time on one batch, once per process and size.

In data-parallel training each rank chooses for itself (no collective is needed, and a rank
whose share of a batch is empty never waits for the others). Every path is exact, so ranks on
different paths differ only by rounding.
"""

import json
import os
import platform
import time
from pathlib import Path
from typing import NamedTuple

import torch

from .._atomic import atomic_write
from .._utils import resolve_device
from .gram import _DEFAULT_MAX_BYTES
from .selection import PATHS, _plan_mp, _select_mp

_CANDIDATE_RATIO = 1.5
_SWITCH_MARGIN = 1.1
_CACHE_FILE = "selection.json"
_CACHE_VERSION = 1

# Choices made in this process, by key: a second fit of the same sizes (scikit-learn's checks,
# a grid search, clone) takes the same path without measuring again.
_chosen = {}
# The environment variable that lets fits save their measurements in the cache file.
SAVE_VARIABLE = "SKMPSAE_SELECTION_CACHE"


def cache_path():
    """The file that remembers the measured paths: ``$SKMPSAE_CACHE_DIR/selection.json``,
    else under ``$XDG_CACHE_HOME/skmpsae`` or ``~/.cache/skmpsae``. Written only by
    :func:`tune`, or by fits where ``SKMPSAE_SELECTION_CACHE=1``."""
    directory = os.environ.get("SKMPSAE_CACHE_DIR")
    if not directory:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        directory = Path(base) / "skmpsae"
    return Path(directory) / _CACHE_FILE


def _processor(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def selection_key(X, dictionary, n_nonzero_coefs, *, positive, max_bytes, compute_dtype):
    """What the fastest path depends on: the machine (processor, threads, torch) and the
    problem's sizes and types."""
    n, n_features = X.shape
    parts = [
        _processor(X.device),
        f"threads={torch.get_num_threads()}",
        f"torch={torch.__version__}",
        str(X.dtype).removeprefix("torch."),
        f"compute={str(compute_dtype).removeprefix('torch.')}",
        f"n={n}",
        f"K={dictionary.shape[0]}",
        f"d={n_features}",
        f"k={n_nonzero_coefs}",
        f"positive={bool(positive)}",
        f"budget={int(max_bytes)}",
    ]
    return " | ".join(parts)


def _read_cache(path):
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent, unreadable or damaged: measure again, and rewrite it
    if not isinstance(content, dict) or content.get("version") != _CACHE_VERSION:
        return {}
    entries = content.get("entries")
    return entries if isinstance(entries, dict) else {}


def _saving():
    """Whether fits save their measurements (the user opted in)."""
    return os.environ.get(SAVE_VARIABLE, "").strip().lower() in ("1", "true", "yes", "on")


def _save(key, entry):
    """Add ``entry`` under ``key`` to the cache file, replaced atomically."""
    file = cache_path()
    entries = _read_cache(file)
    entries[key] = entry
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(file) as out:
        content = {"version": _CACHE_VERSION, "entries": entries}
        out.write(json.dumps(content, indent=1).encode())
    return file


def _remember(key, entry):
    _chosen[key] = entry
    if not _saving():
        return
    try:
        _save(key, entry)
    except OSError:
        pass  # a read-only home only costs the next run a measurement


def _recalled(key):
    entry = _chosen.get(key) or _read_cache(cache_path()).get(key)
    if isinstance(entry, dict) and entry.get("path") in PATHS:
        _chosen[key] = entry
        return entry
    return None


def _timed(device, fn):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    tic = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - tic


class MeasuredSelection(NamedTuple):
    """What :func:`measured_selection` returns."""

    indices: torch.Tensor  # (n, k): those of _select_mp on the chosen path
    values: torch.Tensor  # (n, k)
    path: str  # the chosen path, one of PATHS
    seconds: dict  # seconds of each candidate when measured ({}: the model left one)


def measured_selection(X, dictionary, n_nonzero_coefs, **kwargs) -> MeasuredSelection:
    """Matching pursuit over ``X`` on the fastest exact path for this machine and these sizes.

    The path comes from this process's earlier choices, else from the cache file, else from
    timing the candidates on ``X`` itself (see the module docstring).

    Parameters
    ----------
    X : torch.Tensor of shape (n, n_features)
        Rows to encode, already centred.
    dictionary : torch.Tensor of shape (n_components, n_features)
        Unit-norm atoms.
    n_nonzero_coefs : int
        Pursuit steps.
    **kwargs
        Those of :func:`_select_mp`: ``max_bytes`` (required), ``positive``, ``distinct``,
        ``compute_dtype``.

    Returns
    -------
    MeasuredSelection
        The codes of the chosen path, its name and the seconds each candidate took when it
        was measured ({} when the cost model left a single candidate).
    """
    key = selection_key(
        X,
        dictionary,
        n_nonzero_coefs,
        positive=kwargs.get("positive", True),
        max_bytes=kwargs["max_bytes"],
        compute_dtype=kwargs.get("compute_dtype"),
    )
    entry = _recalled(key)
    if entry is None:
        entry, codes = _measure(X, dictionary, n_nonzero_coefs, kwargs)
        if entry["seconds"]:
            _remember(key, entry)
        else:
            _chosen[key] = entry  # the model alone decided: nothing worth a file
        if codes is not None:
            return MeasuredSelection(
                codes.indices, codes.values, entry["path"], dict(entry["seconds"])
            )
    path_name = entry["path"]
    codes = _select_mp(X, dictionary, n_nonzero_coefs, method=path_name, **kwargs)
    return MeasuredSelection(
        codes.indices, codes.values, path_name, dict(entry.get("seconds") or {})
    )


def _measure(X, dictionary, n_nonzero_coefs, kwargs):
    """The cache entry for these sizes, timing the candidates on ``X`` where the model leaves
    more than one; and the chosen path's codes when they were computed, else None."""
    plan = _plan_mp(
        X.shape[0],
        dictionary.shape[0],
        X.shape[1],
        n_nonzero_coefs,
        X.element_size(),
        X.device,
        kwargs["max_bytes"],
        distinct=kwargs.get("distinct"),
    )
    cheapest = min(plan.costs.values())
    candidates = [p for p in plan.costs if plan.costs[p] <= _CANDIDATE_RATIO * cheapest]
    # The model's favourite last: it runs warm, and it is the one kept on a near tie.
    candidates.sort(key=lambda p: plan.costs[p], reverse=True)
    favourite = candidates[-1]
    if len(candidates) == 1:
        return {"path": favourite, "seconds": {}}, None
    seconds, codes = {}, {}
    for path_name in candidates:
        codes[path_name], seconds[path_name] = _timed(
            X.device,
            lambda p=path_name: _select_mp(X, dictionary, n_nonzero_coefs, method=p, **kwargs),
        )
    fastest = min(seconds, key=lambda p: seconds[p])
    if seconds[fastest] * _SWITCH_MARGIN > seconds[favourite]:
        fastest = favourite
    return {"path": fastest, "seconds": seconds}, codes[fastest]


class TuneResult(NamedTuple):
    """What :func:`tune` measured and where it saved it."""

    path: str  # the chosen selection path
    seconds: dict  # seconds of each candidate timed ({} where the model left one)
    key: str  # the machine and sizes the choice is for (see selection_key)
    file: Path  # the cache file written


def tune(
    n_samples,
    n_components,
    n_features,
    n_nonzero_coefs,
    *,
    dtype=torch.float32,
    positive=True,
    max_bytes=_DEFAULT_MAX_BYTES,
    compute_dtype=None,
    device="cpu",
    seed=0,
):
    """Measure the fastest selection path for a training batch of these sizes and save it.

    Parameters
    ----------
    n_samples : int
        Rows of a training batch (the estimator's batch size; per rank in data-parallel
        training).
    n_components, n_features, n_nonzero_coefs : int
        The dictionary's size and the pursuit's steps.
    dtype : torch.dtype, default=torch.float32
        The training data's dtype.
    positive : bool, default=True
        The estimator's ``positive_code``.
    max_bytes : int
        The memory budget (the estimator's ``cache_size`` in bytes).
    compute_dtype : torch.dtype, default=None
        The estimator's ``selection_dtype``.
    device : str or torch.device, default="cpu"
        Where training runs.
    seed : int, default=0
        Seed of the random batch and dictionary timed (Gaussian rows, unit-norm atoms).

    Returns
    -------
    TuneResult
        The chosen path, the candidates' seconds, the key and the file, which later fits of
        these sizes on this machine (same processor, thread count and torch) read instead of
        measuring.
    """
    device = resolve_device(device)
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(n_samples, n_features, generator=generator, dtype=dtype).to(device)
    dictionary = torch.randn(n_components, n_features, generator=generator, dtype=dtype)
    dictionary = (dictionary / dictionary.norm(dim=1, keepdim=True)).to(device)
    kwargs = {"positive": positive, "max_bytes": max_bytes, "compute_dtype": compute_dtype}
    key = selection_key(X, dictionary, n_nonzero_coefs, **kwargs)
    entry, _ = _measure(X, dictionary, n_nonzero_coefs, kwargs)
    _chosen[key] = entry
    file = _save(key, entry)
    return TuneResult(entry["path"], dict(entry["seconds"]), key, file)
