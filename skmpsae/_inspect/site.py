"""The feature browser's files: a static site that opens from ``file://`` with no server and no
network.

``index.html`` and ``static/`` (the page, its script and its style, copied from this package)
read ``data/index.js`` (every atom's summary: the sortable, searchable index) and, when an atom
is opened, ``data/atoms_NNNN.js`` (the details of ``_CHUNK`` atoms), through ``<script>`` tags:
browsers refuse ``fetch()`` on ``file://`` pages. ``skmpsae-report.json`` marks the folder as a
report, so that writing again may replace it and nothing else. The folder is written beside
``output`` and renamed into place, so a killed run leaves no half-written report.
"""

import base64
import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np

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


def _shown(contexts, i, j, row, value):
    """Context ``j`` of atom ``i`` as the page draws it: the tokens that exist, the atom's
    activation on each, the centre's index."""
    keep, centre = contexts["valid"][i][j], contexts["centre"]
    return {
        "v": _round(value),
        "row": int(row),
        "t": [t for t, k in zip(contexts["tokens"][i][j], keep, strict=True) if k],
        "a": [
            _round(a, 3) if a else 0.0
            for a, k in zip(contexts["activations"][i, j], keep, strict=True)
            if k
        ],
        "c": int(keep[:centre].sum()),
    }


def _band_panels(contexts, bands, i, first):
    """Atom ``i``'s quantile bands (:func:`.bands.quantile_bands`), whose contexts follow the
    top ones from column ``first`` of ``contexts``."""
    n_per_band = bands.rows.shape[2]
    out = []
    for b, ((q_lo, q_hi), (lo, hi)) in enumerate(zip(bands.levels, bands.edges[i], strict=True)):
        shown = [
            _shown(contexts, i, first + b * n_per_band + m, row, bands.activations[i, b, m])
            for m, row in enumerate(bands.rows[i, b])
            if row >= 0
        ]
        out.append(
            {
                "q": [_round(q_lo, 3), _round(q_hi, 3)],
                "lo": _round(lo),
                "hi": None if np.isinf(hi) else _round(hi),
                "contexts": shown,
            }
        )
    return out


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
    vision=None,
    bands=None,
):
    """Write the site into a temporary folder beside ``output``, then put it in place."""
    output = _check_output(output, force)
    K = stats.frequency.size
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp"))
    try:
        (tmp / "static").mkdir()
        (tmp / "data").mkdir()
        static = resources.files("skmpsae._inspect") / "static"
        for name in ("app.js", "images.js", "style.css"):
            (tmp / "static" / name).write_bytes((static / name).read_bytes())
        (tmp / "index.html").write_bytes((static / "index.html").read_bytes())

        tokens, centre = contexts["tokens"], contexts["centre"]
        top_text, search = [], []
        for i in range(K):
            seen = []
            for j in range(stats.top_rows.shape[1]):
                if stats.top_rows[i, j] < 0:
                    break
                tok = tokens.at(i, j, centre)
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
        share = token_names = None
        if stats.get("top_tokens") is not None:
            fired = np.maximum(stats.frequency, 1)
            share = [
                _round(c / f) if c else None
                for c, f in zip(stats.top_token_counts[:, 0], fired, strict=True)
            ]
            token_names = stats.top_token_names
        atoms = {
            "freq": stats.frequency.tolist(),
            "share": share,
            "share_token": None
            if token_names is None
            else [n[0] if n else "" for n in token_names],
            "mean": [_round(x) for x in stats.mean_activation],
            "max": [_round(x) for x in stats.max_activation],
            "step": steps,
            "parent": None if hierarchy is None else hierarchy.parent.tolist(),
            "parent_p": None
            if hierarchy is None
            else [
                _round(q) if p >= 0 else None
                for p, q in zip(hierarchy.parent, hierarchy.probability, strict=True)
            ],
            "top": top_text,
            "search": search,
        }
        if vision is not None:  # image rows: the image panels' summaries (.images)
            atoms.update(vision[0])
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
                    d["contexts"].append(_shown(contexts, i, j, row, stats.top_values[i, j]))
                if bands is not None:
                    d["bands"] = _band_panels(contexts, bands, i, stats.top_rows.shape[1])
                if token_names is not None:
                    d["tokens"] = [
                        [t, int(c)]
                        for t, c in zip(token_names[i], stats.top_token_counts[i], strict=False)
                    ]
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
                if vision is not None:
                    d["vision"] = vision[1][i]
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
