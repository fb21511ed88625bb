"""``skmpsae info``: what a model file holds: the estimator, its fit, and where its training
activations came from."""

import json
from pathlib import Path

from .common import _emit
from .inputs import _load_model, _sniff


def add_parser(commands):
    info = commands.add_parser(
        "info",
        help="show a fitted model's settings, training summary and provenance",
        description="Print the estimator and its main settings, the training summary (epochs, "
        "final loss, dead atoms, held-out scores) and, for a model fitted on captured "
        "activations, where they came from (model, hookpoint, capture settings, corpus).",
    )
    info.add_argument(
        "model",
        metavar="MODEL",
        help="a .safetensors or .joblib file written by 'skmpsae fit', a SAELens directory, or "
        "an activation file ACTS.npy (its norms per position and per kind of token)",
    )
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(subparser=info, run=run)


def describe(sae):
    """The model's summary as a JSON-ready dict."""
    from .._models.registry import spec_of

    spec = spec_of(sae)
    losses = list(getattr(sae, "loss_curve_", []) or [])
    return {
        "estimator": type(sae).__name__,
        "n_features": int(sae.n_features_in_),
        "n_components": int(sae.n_components),
        spec.sparsity: getattr(sae, spec.sparsity),
        "dtype": str(sae.components_.dtype),
        "epochs": int(getattr(sae, "n_iter_", 0)),
        "steps": int(getattr(sae, "n_steps_", 0)),
        "final_loss": losses[-1] if losses else None,
        "dead_atoms_in_training": getattr(sae, "n_dead_components_", None),
        "selection_method": getattr(sae, "selection_method_", None),
        "selection_seconds": getattr(sae, "selection_seconds_", None),
        "provenance": getattr(sae, "provenance_", None),
    }


_CAPTURE_FIELDS = (
    ("model", "model"),
    ("model_id", "model class and checkpoint"),
    ("hookpoint", "hookpoint"),
    ("capture_input", "captured the module's input"),
    ("max_length", "max length (tokens)"),
    ("skip_special_tokens", "special tokens left out"),
    ("n_texts", "texts"),
    ("texts_file", "texts file"),
    ("texts_sha256", "texts sha256"),
    ("corpus", "corpus"),
    ("corpus_sha256", "corpus sha256"),
    ("context_size", "window (tokens)"),
    ("n_rows", "rows"),
    ("created", "captured at"),
)


def format_description(path, summary):
    lines = [f"{path}: {summary['estimator']}"]
    sparsity = "k" if "n_nonzero_coefs" in summary else "alpha"
    value = summary.get("n_nonzero_coefs", summary.get("alpha"))
    loss = summary["final_loss"]
    dead = summary["dead_atoms_in_training"]
    provenance = summary["provenance"] or {}
    if provenance.get("streamed"):  # one partial_fit per chunk: its "epochs" are chunks
        passes = provenance.get("passes", 1)
        trained = (
            f"  trained {summary['steps']} steps on {provenance['tokens_seen']} tokens "
            f"streamed ({passes} pass{'es' if passes != 1 else ''} over the corpus)"
        )
    else:
        trained = f"  trained {summary['epochs']} epochs ({summary['steps']} steps)"
    lines += [
        f"  {summary['n_features']} features -> {summary['n_components']} atoms, "
        f"{sparsity}={value}, {summary['dtype']}",
        trained
        + ("" if loss is None else f", final loss {loss:.4g}")
        + ("" if dead is None else f", dead atoms {dead}/{summary['n_components']}"),
    ]
    path = summary.get("selection_method")
    if path:
        timed = summary.get("selection_seconds") or {}
        lines.append(
            f"  selection path in training: {path}"
            + (
                " (timed on the first batch: "
                + ", ".join(f"{p} {s:.3g} s" for p, s in sorted(timed.items(), key=lambda t: t[1]))
                + ")"
                if timed
                else ""
            )
        )
    held = provenance.get("held_out")
    if held:
        lines.append(
            f"  held out ({held.get('source')}): R2 {held['r2']:.4f}, L0 {held['l0']:.2f}, "
            f"dead atoms {held['dead']}/{held['n_components']} on {held['n_rows']} rows"
        )
    fields = [(label, provenance[key]) for key, label in _CAPTURE_FIELDS if key in provenance]
    if fields:
        how = "streamed" if provenance.get("streamed") else "captured"
        lines.append(f"  trained on activations {how} with:")
        width = max(len(label) for label, _ in fields)
        lines += [f"    {label.ljust(width)}  {value}" for label, value in fields]
    else:
        lines.append("  provenance: none recorded (not fitted on 'skmpsae capture' output)")
    for source in provenance.get("sources") or []:  # fitted on several row files
        what = f"{source.get('modality', 'text')} rows at {source.get('hookpoint')}"
        lines.append(f"    from {source.get('file')}: {source.get('n_rows')} {what}")
    return "\n".join(lines)


def format_activations(path, summary):
    """``skmpsae info ACTS.npy``: the file, its capture, and where its large rows are."""
    meta = summary["metadata"] or {}
    norm = summary["norm"]
    lines = [
        f"{path}: {summary['n_rows']} rows x {summary['n_features']} features, {summary['dtype']}",
        f"  captured from {meta.get('model')} at {meta.get('hookpoint')}, special tokens "
        f"{'left out' if meta.get('skip_special_tokens') else 'kept'}"
        if meta
        else "  no capture settings (no ACTS.npy.meta.json)",
        f"  row norm: median {norm['median']:.4g}, mean {norm['mean']:.4g}, max {norm['max']:.4g}",
    ]
    if "by_position" in summary:
        lines.append("  mean norm by token position (rows):")
        for position, n, mean in summary["by_position"]:
            ratio = mean / norm["median"] if norm["median"] else float("nan")
            lines.append(
                f"    {str(position):>4}  {mean:10.4g}  ({ratio:.2f}x the median, {n} rows)"
            )
    if "by_kind" in summary:
        lines.append("  mean norm by kind of token (rows):")
        for kind, (n, mean) in summary["by_kind"].items():
            shown = "-" if mean is None else f"{mean:.4g}"
            lines.append(f"    {kind:>7}  {shown:>10}  ({n} rows)")
    high = summary.get("high_norm_positions")
    if high:
        lines.append(
            f"  high-norm positions: {', '.join(map(str, high))} (mean norm over 3x the median: "
            "a first position or attention sink; such rows dominate the squared loss: leave "
            "them out, or fit them on their own)"
        )
    elif "by_position" not in summary:
        lines.append("  no per-row provenance (ACTS.npy.tokens.npy): norms by position unknown")
    return "\n".join(lines)


def run(args):
    if Path(args.model).is_file() and _sniff(args.model) == "npy":
        from .._activations.summary import summarize_activations

        summary = summarize_activations(args.model)
        _emit(json.dumps(summary) if args.json else format_activations(args.model, summary))
        return 0
    summary = describe(_load_model(args.model))
    if args.json:
        _emit(json.dumps(summary))
    else:
        _emit(format_description(args.model, summary))
    return 0
