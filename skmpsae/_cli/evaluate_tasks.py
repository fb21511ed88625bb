"""``skmpsae evaluate``'s practical tests (SAEBench's): ``--probing``, ``--labels``,
``--absorption`` and ``--detection``, on the tokens that the capture provenance names."""

import csv
import json
from pathlib import Path

import numpy as np

from .._metrics.tasks import TASKS as _TASKS
from .common import CommandError, _positive_int


def _tasks(text):
    import argparse

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in _TASKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown task {', '.join(unknown) or repr(text)}; choose among {', '.join(_TASKS)}"
        )
    return names


def _ks(text):
    import argparse

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers such as 1,5, got {text!r}")
    return values


def add_arguments(parser):
    group = parser.add_argument_group(
        "practical tests (SAEBench's)",
        "Token-level tasks read the tokens from the capture provenance of ACTS.npy "
        "(ACTS.npy.tokens.npy and ACTS.npy.vocab.json).",
    )
    group.add_argument(
        "--probing",
        metavar="TASK[,TASK]",
        type=_tasks,
        default=[],
        help="sparse probing on built-in token tasks: " + ", ".join(_TASKS),
    )
    group.add_argument(
        "--labels",
        metavar="FILE",
        default=None,
        help="sparse probing on your labels: a CSV or JSONL file with a 'label' column and a "
        "'row' (row of ACTS.npy) or 'text' (text index of the capture: its tokens' codes are "
        "averaged) column",
    )
    group.add_argument(
        "--probing-k",
        metavar="K[,K]",
        type=_ks,
        default=[1, 2, 5, 10, 20],
        help="latents per sparse probe (default: 1,2,5,10,20)",
    )
    group.add_argument(
        "--absorption",
        action="store_true",
        help="SAEBench-style first-letter feature absorption on the corpus tokens",
    )
    group.add_argument(
        "--detection",
        metavar="N",
        type=_positive_int,
        default=None,
        help="detection score of N latents with the baseline explainer and scorer",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="random state of the tests' splits (default: 0)"
    )


def _wanted(args):
    return bool(args.probing or args.labels or args.absorption or args.detection)


def _provenance(args, n_rows, what):
    from .._activations.provenance import Provenance

    try:
        provenance = Provenance.read(args.data, n_rows)
    except ValueError as exc:
        raise CommandError(f"{what}: {exc}") from None
    if provenance.table is None:
        raise CommandError(
            f"{what}: {args.data} has no provenance (no {args.data}.tokens.npy): capture the "
            "rows with 'skmpsae capture' to name their tokens"
        )
    if provenance.vocab is None and what != "--probing position":
        raise CommandError(
            f"{what}: {args.data}.vocab.json is missing: the token texts are unknown"
        )
    return provenance


def _read_labels(path):
    """Rows of the labels file as dicts, from CSV or JSON lines."""
    path = Path(path)
    if not path.is_file():
        raise CommandError(f"--labels {path}: no such file")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json") or text.lstrip().startswith("{"):
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise CommandError(f"--labels {path}: not JSON lines ({exc})") from None
    else:
        records = list(csv.DictReader(text.splitlines()))
    if not records or not all(isinstance(r, dict) for r in records):
        raise CommandError(f"--labels {path}: no labelled rows")
    return records


def _labels_task(args, n_rows):
    """``(rows, labels, groups, pooling)`` of the labels file, checked against ACTS."""
    path = args.labels
    records = _read_labels(path)
    key = "row" if "row" in records[0] else "text" if "text" in records[0] else None
    if key is None or "label" not in records[0]:
        raise CommandError(
            f"--labels {path}: needs a 'label' column and a 'row' or 'text' column, got "
            f"{', '.join(records[0])}"
        )
    try:
        index = np.array([int(r[key]) for r in records], dtype=np.int64)
    except (KeyError, ValueError, TypeError):
        raise CommandError(f"--labels {path}: every '{key}' must be an integer") from None
    labels = np.array([str(r.get("label", "")) for r in records])
    if np.unique(index).size != index.size:
        raise CommandError(f"--labels {path}: a {key} is labelled twice")
    if key == "row":
        bad = index[(index < 0) | (index >= n_rows)]
        if bad.size:
            raise CommandError(
                f"--labels {path}: row {bad[0]} is not a row of {args.data} ({n_rows} rows): "
                "the labels do not belong to these activations"
            )
        order = np.argsort(index)
        return index[order], labels[order], None, None
    texts = np.asarray(_provenance(args, n_rows, f"--labels {path}").table[:, 0])
    present = np.isin(index, texts)
    if not present.all():
        raise CommandError(
            f"--labels {path}: text {index[~present][0]} has no row in {args.data}: the labels "
            "do not belong to these activations"
        )
    by_text = dict(zip(index.tolist(), labels.tolist(), strict=True))
    rows = np.flatnonzero(np.isin(texts, index))
    return rows, np.array([by_text[t] for t in texts[rows]]), texts[rows], "mean"


def _probe(args, sae, X, rows, labels, groups, pooling, what):
    from ..metrics import sparse_probing

    ks = [k for k in args.probing_k if k <= sae.n_components]
    if not ks:
        raise CommandError(f"--probing-k: every k exceeds the model's {sae.n_components} atoms")
    try:
        result = sparse_probing(
            sae,
            X[rows],
            labels,
            k=ks,
            groups=groups,
            pooling=pooling,
            random_state=args.seed,
        )
    except ValueError as exc:
        raise CommandError(f"{what}: {exc}") from None
    return {
        "k": [int(k) for k in result.k],
        "accuracy": [float(a) for a in result.accuracy],
        "dense_accuracy": result.dense_accuracy,
        "n_classes": int(result.classes.size),
        "skipped_classes": [str(c) for c in result.skipped],
    }


def run(args, sae, X):
    """The tests asked for, as a dict to merge into the evaluation's result."""
    from ..inspect import explain, score_explanations
    from ..metrics import absorption, token_task_labels

    if not _wanted(args):
        return {}
    n_rows = X.shape[0]
    out = {}
    probing = {}
    for task in args.probing:
        what = f"--probing {task}"
        provenance = _provenance(args, n_rows, what)
        table = provenance.table
        tokens = provenance.token_text(np.asarray(table[:, 2])) if task != "position" else None
        try:
            rows, labels = token_task_labels(task, tokens or [""] * n_rows, np.asarray(table[:, 1]))
        except ValueError as exc:
            raise CommandError(f"{what}: {exc}") from None
        groups = np.asarray(table[rows, 0])
        probing[task] = _probe(args, sae, X, rows, labels, groups, None, what)
    if args.labels:
        rows, labels, groups, pooling = _labels_task(args, n_rows)
        what = f"--labels {args.labels}"
        probing[Path(args.labels).name] = _probe(args, sae, X, rows, labels, groups, pooling, what)
    if probing:
        out["probing"] = probing
    if args.absorption or args.detection:
        what = "--absorption" if args.absorption else "--detection"
        provenance = _provenance(args, n_rows, what)
        tokens = np.array(provenance.token_text(np.asarray(provenance.table[:, 2])), dtype=object)
        texts = np.asarray(provenance.table[:, 0])
    if args.absorption:
        try:
            result = absorption(sae, X, tokens, random_state=args.seed)
        except ValueError as exc:
            raise CommandError(f"--absorption: {exc}") from None
        out["absorption"] = {
            "mean_absorption_fraction": result.mean_absorption_fraction,
            "full_absorption_rate": result.full_absorption_rate,
            "n_letters": int(result.letters.size),
            "probe_accuracy": result.probe_accuracy,
        }
    if args.detection:
        try:
            explanations = explain(
                sae, X, tokens, texts, n_latents=args.detection, random_state=args.seed
            )
            result = score_explanations(sae, X, tokens, texts, explanations, random_state=args.seed)
        except ValueError as exc:
            raise CommandError(f"--detection: {exc}") from None
        out["detection"] = {"score": result.score, "n_latents": int(result.latents.size)}
    return out


def format_rows(result):
    """(name, value) rows of the table for the tests in ``result``."""
    rows = []
    for task, probe in result.get("probing", {}).items():
        accuracies = ", ".join(
            f"k={k} {a:.3f}" for k, a in zip(probe["k"], probe["accuracy"], strict=True)
        )
        rows.append((f"probing {task}", f"{accuracies} (dense {probe['dense_accuracy']:.3f})"))
    if "absorption" in result:
        a = result["absorption"]
        rows.append(
            (
                "absorption (first letter)",
                f"fraction {a['mean_absorption_fraction']:.3f}, full "
                f"{a['full_absorption_rate']:.3f} ({a['n_letters']} letters)",
            )
        )
    if "detection" in result:
        d = result["detection"]
        rows.append(("detection (baseline)", f"{d['score']:.3f} ({d['n_latents']} latents)"))
    return rows
