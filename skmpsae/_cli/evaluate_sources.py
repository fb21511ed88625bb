"""``skmpsae evaluate SAE IMAGES.npy TEXTS.npy``: a model scored on the rows of several files
together, and, when their provenance holds image rows and text rows, how its atoms divide
between the modalities (:func:`skmpsae.inspect.modality_scores`)."""

import json

import numpy as np

from .common import CommandError, _emit
from .inputs import _check_rows_match, _load_model, _load_npy


def run_several(args, evaluate_rows, format_result):
    from .._activations.provenance import MODALITIES, Provenance
    from .._inspect.modality import BIMODAL, modality_scores

    model = _load_model(args.model)
    if args.device is not None:
        model.set_params(device=args.device)
    parts, modality = [], []
    for path in args.data:
        X = _load_npy(path)
        if X.shape[1] != model.n_features_in_:
            raise CommandError(
                f"{path}: has {X.shape[1]} features, but the model was fitted on "
                f"{model.n_features_in_}"
            )
        _check_rows_match(model, path, "evaluate")
        try:
            column = Provenance.read(path, X.shape[0]).column("modality")
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        parts.append(X)
        modality.append(np.full(X.shape[0], -1) if column is None else np.asarray(column))
    X, modality = np.concatenate(parts), np.concatenate(modality)
    result = {"model": str(args.model), "data": " + ".join(str(p) for p in args.data)}
    result.update(evaluate_rows(model, X, args.chunk_size, not args.quiet))
    result["spliced"] = None
    result["spliced_skipped"] = "several row files (evaluate one file for the spliced metrics)"
    image, text = modality == MODALITIES["image"], modality == MODALITIES["text"]
    if image.any() and text.any():
        scores = modality_scores(model, X[image], X[text], chunk_size=args.chunk_size)
        alive = scores.scores[~np.isnan(scores.scores)]
        result["modality"] = {
            "n_image_rows": int(image.sum()),
            "n_text_rows": int(text.sum()),
            "n_firing": scores.n_firing,
            "bimodal_fraction": scores.bimodal_fraction,
            "image_only": int((alive > BIMODAL[1]).sum()),
            "text_only": int((alive < BIMODAL[0]).sum()),
        }
    if args.json:
        _emit(json.dumps(result))
    else:
        _emit(format_result(result) + _format_modality(result.get("modality")))
    return 0


def _format_modality(summary):
    if summary is None:
        return ""
    n = summary["n_firing"]
    return (
        f"\n  modalities: {summary['n_image_rows']} image rows, {summary['n_text_rows']} text "
        f"rows; of {n} firing atoms, {summary['bimodal_fraction']:.1%} bimodal (image share in "
        f"[0.1, 0.9]), {summary['image_only']} image-only, {summary['text_only']} text-only"
    )
