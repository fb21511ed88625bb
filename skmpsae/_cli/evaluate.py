"""``skmpsae evaluate``: a fitted model on held-out activations (R2, L0, dead atoms) and, with
the model it was fitted on at hand, spliced into that model."""

import json
from pathlib import Path

import numpy as np

from .._train.progress import Progress
from . import evaluate_tasks
from .common import CommandError, _emit, _positive_int
from .inputs import _model_and_rows

_CHUNK = 4096


def add_parser(commands):
    evaluate = commands.add_parser(
        "evaluate",
        help="score a fitted model on held-out activations (R2, L0, dead atoms, spliced)",
        description="Encode and reconstruct ACTS.npy chunk by chunk and report the explained "
        "variance (R2), the mean number of active atoms (L0) and the atoms never active. When "
        "the model records where its training rows were captured (models fitted by 'skmpsae "
        "fit' on 'skmpsae capture' output) and that model and the texts are at hand, also "
        "splice the SAE into the model: the cosine of sentence embeddings with and without it "
        "(sentence-transformers), or the next-token cross-entropy increase, KL divergence and "
        "fraction of cross-entropy recovered (causal language models).",
    )
    evaluate.add_argument(
        "model",
        metavar="MODEL",
        help="a .safetensors or .joblib file written by 'skmpsae fit', or a SAELens directory",
    )
    evaluate.add_argument(
        "data",
        metavar="ACTS.npy",
        nargs="+",
        help="held-out activations; several files (image and text rows, say) are scored "
        "together, with the atoms' modality summary when their provenance holds both",
    )
    evaluate.add_argument(
        "--model-dir",
        metavar="M",
        default=None,
        help="the model the activations come from (a directory or packaged model), for the "
        "spliced metrics (default: the one recorded at capture)",
    )
    evaluate.add_argument(
        "--texts",
        metavar="FILE",
        default=None,
        help="texts for the spliced metrics, one per line (default: the file recorded at "
        "capture of ACTS.npy, if it is unchanged)",
    )
    evaluate.add_argument("--no-splice", action="store_true", help="skip the spliced metrics")
    evaluate.add_argument(
        "--max-texts",
        type=_positive_int,
        default=256,
        help="texts used for the spliced metrics (default: 256)",
    )
    evaluate.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=_CHUNK,
        help=f"rows encoded at a time (default: {_CHUNK})",
    )
    evaluate.add_argument("--device", default=None, help="override the model's device")
    evaluate_tasks.add_arguments(evaluate)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    evaluate.set_defaults(subparser=evaluate, run=run)


def evaluate_rows(model, X, chunk_size=_CHUNK, verbose=False):
    """R2, mean L0 and dead atoms of ``model`` on the rows of ``X``, read chunk by chunk.

    R2 is :func:`skmpsae.metrics.explained_variance` of the whole of ``X`` (two passes: the
    feature means first, then the residual and total sums of squares in float64).
    """
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float32
    starts = range(0, X.shape[0], chunk_size)
    mean = np.zeros(X.shape[1])
    for start in starts:
        mean += np.asarray(X[start : start + chunk_size], dtype=np.float64).sum(axis=0)
    mean /= X.shape[0]
    residual = total = 0.0
    nnz = 0
    used = np.zeros(model.n_components, dtype=bool)
    progress = Progress(len(starts), "evaluate", "chunk", verbose)
    try:
        for start in starts:
            chunk = np.asarray(X[start : start + chunk_size], dtype=dtype)
            codes = model._sparse_codes(chunk)
            X_hat = model.inverse_transform(codes)
            x = chunk.astype(np.float64)
            residual += float(np.sum((x - np.asarray(X_hat, dtype=np.float64)) ** 2))
            total += float(np.sum((x - mean) ** 2))
            nnz += codes.nnz
            used[np.unique(codes.indices)] = True
            progress.update()
    finally:
        progress.close()
    r2 = (1.0 if residual == 0.0 else 0.0) if total == 0.0 else 1.0 - residual / total
    return {
        "n_rows": int(X.shape[0]),
        "r2": r2,
        "l0": nnz / X.shape[0],
        "dead": int((~used).sum()),
        "n_components": int(model.n_components),
    }


def _texts_for_splice(args, rows_meta):
    """The texts of the spliced metrics and where they come from, or (None, reason)."""
    from .._activations.capture_file import _fingerprint

    if args.texts is not None:
        path = Path(args.texts)
        if not path.is_file():
            raise CommandError(f"--texts {path}: no such file")
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip()], str(path)
    recorded = (rows_meta or {}).get("texts_file")
    if recorded is None:
        return None, "no texts: pass --texts FILE"
    path = Path(recorded)
    if not path.is_file():
        return None, f"the recorded texts {path} are gone: pass --texts FILE"
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if _fingerprint(texts) != rows_meta.get("texts_sha256"):
        return None, f"{path} changed since the capture: pass --texts FILE"
    return texts, str(path)


def spliced_metrics(sae, model_source, texts, provenance, device="cpu"):
    """The spliced metrics of ``sae`` in the model loaded from ``model_source``."""
    from .._activations.hooks import _is_sentence_transformer
    from ..activations import load_model
    from ..metrics import spliced_embedding_cosine, spliced_lm_metrics

    model, tokenizer = load_model(model_source, device=device)
    hookpoint = provenance["hookpoint"]
    if _is_sentence_transformer(model):
        cosine = spliced_embedding_cosine(model, sae, hookpoint, texts)
        return {"spliced_cosine": float(np.mean(cosine)), "n_texts": len(texts)}
    if type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        metrics = spliced_lm_metrics(
            model,
            sae,
            hookpoint,
            texts,
            tokenizer=tokenizer,
            max_length=provenance.get("max_length"),
        )
        return {**metrics, "n_texts": len(texts)}
    return None


def run(args):
    from .._activations.metadata import provenance_of, read_capture_metadata

    if len(args.data) > 1:
        from .evaluate_sources import run_several

        return run_several(args, evaluate_rows, format_result)
    args.data = args.data[0]
    sae, X = _model_and_rows(args, "evaluate")
    result = {"model": str(args.model), "data": str(args.data)}
    result.update(evaluate_rows(sae, X, args.chunk_size, not args.quiet))
    provenance = provenance_of(sae)
    try:
        rows_meta = read_capture_metadata(args.data)
    except ValueError:
        rows_meta = None
    source = args.model_dir or provenance.get("model")
    if args.no_splice:
        result["spliced"] = None
    elif not provenance.get("hookpoint"):
        result["spliced"] = None
        result["spliced_skipped"] = "the model does not record its hookpoint (no provenance)"
    elif source is None:
        result["spliced"] = None
        result["spliced_skipped"] = "the source model is unknown: pass --model-dir"
    else:
        texts, origin = _texts_for_splice(args, rows_meta)
        if texts is None:
            result["spliced"] = None
            result["spliced_skipped"] = origin
        else:
            try:
                metrics = spliced_metrics(
                    sae, source, texts[: args.max_texts], provenance, args.device or "cpu"
                )
            except ImportError as exc:
                raise CommandError(str(exc)) from None
            if metrics is None:
                result["spliced"] = None
                result["spliced_skipped"] = (
                    f"{source} is neither a sentence encoder nor a causal language model"
                )
            else:
                result["spliced"] = {**metrics, "model_dir": str(source), "texts": origin}
    result.update(evaluate_tasks.run(args, sae, X))
    if args.json:
        _emit(json.dumps(result))
    else:
        _emit(format_result(result))
    return 0


def format_result(result):
    """The evaluation as a short table."""
    rows = [
        ("rows", f"{result['n_rows']}"),
        ("R2 (explained variance)", f"{result['r2']:.4f}"),
        ("mean L0", f"{result['l0']:.2f}"),
        ("dead atoms", f"{result['dead']}/{result['n_components']}"),
    ]
    spliced = result.get("spliced")
    if spliced:
        if "spliced_cosine" in spliced:
            rows.append(("spliced embedding cosine", f"{spliced['spliced_cosine']:.4f}"))
        else:
            recovered = spliced["ce_recovered"]
            rows += [
                (
                    "CE clean / spliced (nats)",
                    f"{spliced['ce_clean']:.4f} / {spliced['ce_spliced']:.4f}",
                ),
                ("CE increase (nats)", f"{spliced['ce_increase']:.4f}"),
                ("KL divergence (nats)", f"{spliced['kl_divergence']:.4f}"),
                ("CE recovered", "n/a" if recovered is None else f"{recovered:.4f}"),
            ]
        rows.append(("spliced on", f"{spliced['n_texts']} texts of {spliced['texts']}"))
    elif result.get("spliced_skipped"):
        rows.append(("spliced metrics", f"skipped ({result['spliced_skipped']})"))
    rows += evaluate_tasks.format_rows(result)
    width = max(len(name) for name, _ in rows)
    header = f"{result['model']} on {result['data']}"
    return "\n".join([header, *(f"  {name.ljust(width)}  {value}" for name, value in rows)])
