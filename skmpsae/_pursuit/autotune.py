"""The selection path measured on the machine, not only modelled.

The cost model of ``selection.py`` was calibrated on one machine; on another (an Intel Xeon,
``docs/performance.md``) it chose the Gram-rows path at 32,768 and 65,536 atoms where one GEMM
per step was 1.1x and 1.8x faster. So training measures, as cuDNN's benchmark mode does for
convolutions: on the first batch that needs a choice it runs each candidate path once, keeps
the fastest for the rest of the run, and records it in a small JSON file keyed by the machine
and the problem's sizes, so that later runs there skip the measurement (delete the file, or
point ``SKMPSAE_CACHE_DIR`` elsewhere, to measure again).

Candidates are the paths that fit the memory budget and that the model prices within
``_CANDIDATE_RATIO`` of its cheapest: far from a tie the model was right on every machine
measured, and timing a path it prices at ten times the best would cost more than the choice
can win back. The model's favourite runs last (warm caches, no first-call costs) and another
path must beat it by ``_SWITCH_MARGIN`` to be chosen, so that timing noise does not move a run
off the model's choice for nothing. The batch's codes are those of the chosen path: measuring
costs the other candidates' time on one batch, once per machine and size.

In data-parallel training each rank chooses for itself (no collective is needed, and a rank
whose share of a batch is empty never waits for the others); ranks of one machine recall one
another's choice from the shared file once it is written. Every path is exact, so ranks on
different paths differ only by rounding.
"""

import json
import os
import platform
import time
from pathlib import Path

import torch

from .._atomic import atomic_write
from .selection import PATHS, _plan_mp, _select_mp

_CANDIDATE_RATIO = 4.0
_SWITCH_MARGIN = 1.1
_CACHE_FILE = "selection.json"
_CACHE_VERSION = 1

# Choices made in this process, by key: a second fit of the same sizes (scikit-learn's checks,
# a grid search, clone) takes the same path even where the cache file cannot be written.
_chosen = {}


def cache_path():
    """The file that remembers the measured paths: ``$SKMPSAE_CACHE_DIR/selection.json``,
    else under ``$XDG_CACHE_HOME/skmpsae`` or ``~/.cache/skmpsae``."""
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


def _remember(key, entry):
    _chosen[key] = entry
    file = cache_path()
    try:
        entries = _read_cache(file)
        entries[key] = entry
        file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(file) as out:
            content = {"version": _CACHE_VERSION, "entries": entries}
            out.write(json.dumps(content, indent=1).encode())
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


def measured_selection(X, dictionary, n_nonzero_coefs, **kwargs):
    """Matching pursuit over ``X`` on the fastest exact path for this machine and these sizes.

    ``kwargs`` are those of :func:`_select_mp` (``positive``, ``max_bytes``, ``distinct``,
    ``compute_dtype``). The path comes from this process's earlier choices, else from the
    cache file, else from timing the candidates on ``X`` itself (see the module docstring).

    Returns ``indices``, ``values`` (those of :func:`_select_mp` on the chosen path), the
    chosen path's name and the seconds each candidate took when it was measured ({} when the
    cost model left a single candidate).
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
            return (*codes, entry["path"], dict(entry["seconds"]))
    path_name = entry["path"]
    indices, values = _select_mp(X, dictionary, n_nonzero_coefs, method=path_name, **kwargs)
    return indices, values, path_name, dict(entry.get("seconds") or {})


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
    candidates.sort(key=plan.costs.get, reverse=True)
    favourite = candidates[-1]
    if len(candidates) == 1:
        return {"path": favourite, "seconds": {}}, None
    seconds, codes = {}, {}
    for path_name in candidates:
        codes[path_name], seconds[path_name] = _timed(
            X.device,
            lambda p=path_name: _select_mp(X, dictionary, n_nonzero_coefs, method=p, **kwargs),
        )
    fastest = min(seconds, key=seconds.get)
    if seconds[fastest] * _SWITCH_MARGIN > seconds[favourite]:
        fastest = favourite
    return {"path": fastest, "seconds": seconds}, codes[fastest]
