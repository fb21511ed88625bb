"""Helpers shared by the benchmark scripts: threads, timing, the MNIST split, tables, figures.

Not a benchmark itself (``run_all.py`` only runs ``bench_*.py``).
"""

import argparse
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


def parser(description):
    """An ``ArgumentParser`` with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for torch and for BLAS (default 1: on a shared machine a second thread per "
        "process oversubscribes the cores and makes every timing meaningless; every method gets "
        "the same number, so time ratios stay fair)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument(
        "--no-write", action="store_true", help="print the tables without writing them into docs/"
    )
    return p


def cpu_model():
    """The processor's name as lscpu gives it (the figures hold for that machine only)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def limit_threads(n_threads):
    """Give torch and every BLAS/OpenMP pool ``n_threads`` threads for the rest of the run."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n_threads)
    # Kept referenced so the limit is never lifted by garbage collection.
    limit_threads.handle = threadpool_limits(n_threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(n_threads))


def best_seconds(fn, repeats=3):
    """The shortest wall-clock time of ``repeats`` calls of ``fn()``."""
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def timed(fn, *args, **kwargs):
    """``(result, seconds)`` of one call, wall clock."""
    tic = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - tic


def mnist_split(random_state=0):
    """4,000 training and 1,000 held-out digits, stratified, float32 in [0, 1]."""
    from sklearn.model_selection import train_test_split

    from skmpsae.datasets import load_mnist

    X, y = load_mnist(return_X_y=True)
    X_train, X_test = train_test_split(
        X, train_size=4000, test_size=1000, stratify=y, random_state=random_state
    )
    return np.ascontiguousarray(X_train), np.ascontiguousarray(X_test)


def _cell(row, key, fmt):
    """One table cell: ``format(value, fmt)``, a dash for a missing or non-finite value."""
    value = row.get(key)
    if isinstance(value, MeanSD):
        return value.format(fmt)
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, fmt) if fmt else str(value)


def markdown_table(rows, columns):
    """A GitHub-flavoured markdown table.

    Parameters
    ----------
    rows : list of dict
        One dict per row.
    columns : list of (key, header, format)
        ``format`` is a format spec such as ``".3f"``, or "" for ``str``; a missing or None
        value prints as a dash, a :class:`MeanSD` as ``mean ± sd``.
    """
    lines = [
        "| " + " | ".join(header for _, header, _ in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, key, fmt) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def rst_table(rows, columns, widths=None):
    """The same table as :func:`markdown_table` (same ``rows`` and ``columns``), as a
    reStructuredText ``list-table`` with one header row; ``widths``: relative column widths."""
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append("   :widths: " + " ".join(str(w) for w in widths))
    lines.append("")
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(row, key, fmt) for key, _, fmt in columns] for row in rows]
    for row in cells:
        lines += [f"   * - {row[0]}", *(f"     - {cell}" for cell in row[1:])]
    return "\n".join(lines)


def goal_table(rows, heading):
    """The goal summary of a benchmark: one row per goal, ``goal | measured | met``, each a
    string; ``heading`` names the goal column, e.g. "goal (issue 3)"."""
    return markdown_table(
        rows, [("goal", heading, ""), ("measured", "measured", ""), ("met", "met", "")]
    )


class MeanSD:
    """Mean and sample standard deviation of a few measurements (one per seed)."""

    def __init__(self, values):
        self.values = [float(v) for v in values]
        self.mean = float(np.mean(self.values))
        self.sd = float(np.std(self.values, ddof=1)) if len(self.values) > 1 else float("nan")

    def format(self, fmt):
        if not np.isfinite(self.mean):
            return "-"
        if len(self.values) < 2:
            return format(self.mean, fmt)
        return f"{self.mean:{fmt}} ± {self.sd:{fmt}}"

    def __float__(self):
        return self.mean


def aggregate(rows, keys):
    """Rows that agree on ``keys`` (e.g. model and k, over seeds) merged into one: numeric
    values become :class:`MeanSD`, other values are kept from the first row."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    merged = []
    for members in groups.values():
        out = dict(members[0])
        for name in members[0]:
            values = [m.get(name) for m in members]
            if name not in keys and all(
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values
            ):
                out[name] = MeanSD(values)
        out["n_runs"] = len(members)
        merged.append(out)
    return merged


def write_table(name, text, page="benchmarks.md"):
    """Replace the table ``name`` in ``docs/<page>``: the text between its begin and end markers.

    In Markdown the markers are the lines ``<!-- begin table NAME -->`` and
    ``<!-- end table NAME -->``; in reStructuredText (a page ending in ``.rst``) they are the
    comments ``.. begin table NAME`` and ``.. end table NAME``, written with a blank line on
    each side of the text so that Sphinx reads them as comments, not as part of the table.
    The tables in the docs are only ever written this way, so they cannot drift from what the
    scripts measure. Fails if the markers are missing, rather than appending somewhere.
    """
    path = DOCS / page
    begin, end = table_markers(name, page)
    content = path.read_text()
    # Whole lines only: ".. begin table large" must not match ".. begin table large-goal".
    begin_re, end_re = (re.compile(rf"^{re.escape(m)}[ \t]*$", re.MULTILINE) for m in (begin, end))
    if len(begin_re.findall(content)) != 1 or len(end_re.findall(content)) != 1:
        raise RuntimeError(f"{path.name} must contain the markers {begin!r} and {end!r} once")
    head, rest = begin_re.split(content)
    _, tail = end_re.split(rest)
    gap = "\n\n" if page.endswith(".rst") else "\n"
    path.write_text(f"{head}{begin}{gap}{text.strip()}{gap}{end}{tail}")
    print(f"wrote table {name!r} into {path.relative_to(REPO)}")


def table_markers(name, page):
    """The begin and end lines that delimit the generated table ``name`` on ``page``."""
    if page.endswith(".rst"):
        return f".. begin table {name}", f".. end table {name}"
    return f"<!-- begin table {name} -->", f"<!-- end table {name} -->"


def save_figure(fig, name):
    """Save ``fig`` as ``docs/<name>`` at a resolution that keeps the PNG small."""
    DOCS.mkdir(exist_ok=True)
    path = DOCS / name
    fig.savefig(path, dpi=90)
    print(f"saved {path.relative_to(REPO)} ({path.stat().st_size // 1024} KB)")
    return path


def use_agg():
    """Select the non-interactive matplotlib backend and return pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def proc_status_mb(field):
    """A memory field of ``/proc/self/status`` (e.g. ``VmHWM``, the peak resident set) in MB.

    Linux only. Unlike ``tracemalloc``, the kernel's count includes torch's CPU allocations.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def activation_like(
    n_samples, n_features=768, n_true=32768, n_active=32, seed=0, chunk_rows=20_000
):
    """Rows shaped like a transformer's residual stream, for large-dictionary benchmarks.

    Each row is a mean vector plus ``n_active`` of ``n_true`` random unit directions (drawn
    with Zipf-like frequencies, p_i ~ 1 / (i + 100)), with exponential magnitudes, plus small
    dense noise: as SAE features behave, a few directions are frequent and most rare. Yields
    float32 chunks, so that a file larger than RAM can be written chunk by chunk.
    """
    rng = np.random.default_rng(seed)
    directions = rng.standard_normal((n_true, n_features), dtype=np.float32)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    p = 1.0 / (np.arange(n_true) + 100.0)
    p /= p.sum()
    mean = rng.standard_normal(n_features, dtype=np.float32)
    for start in range(0, n_samples, chunk_rows):
        m = min(chunk_rows, n_samples - start)
        active = rng.choice(n_true, size=(m, n_active), p=p)
        magnitude = rng.exponential(1.0, size=(m, n_active)).astype(np.float32)
        X = np.einsum("na,naf->nf", magnitude, directions[active])
        X += 0.05 * rng.standard_normal((m, n_features), dtype=np.float32) + mean
        yield X.astype(np.float32)


def write_npy(path, n_samples, n_features=768, seed=0):
    """Write :func:`activation_like` rows to a ``.npy`` file chunk by chunk; return the path."""
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_samples, n_features))
    start = 0
    for chunk in activation_like(n_samples, n_features, seed=seed):
        X[start : start + chunk.shape[0]] = chunk
        start += chunk.shape[0]
    X.flush()
    del X
    return path


def drop_page_cache(path):
    """Ask the kernel to forget the file's cached pages, so that a measurement starts from disk."""
    if hasattr(os, "posix_fadvise"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
