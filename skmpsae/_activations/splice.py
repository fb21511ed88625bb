"""A fitted SAE inside a model, and the fidelity metrics the field reports for it.

:func:`splice` replaces a module's output with the SAE's reconstruction for the duration of a
``with`` block. :func:`spliced_lm_metrics` (causal language models: cross-entropy increase, KL
divergence of the next-token distributions, fraction of cross-entropy recovered against
zero-ablation) and :func:`spliced_embedding_cosine` (sentence encoders) are published in
:mod:`skmpsae.metrics`. The hook plumbing is :mod:`.hooks`'s.
"""

import contextlib
import warnings
from numbers import Integral

import torch

from .._compat import HasMethods, validate_params
from .._utils import NotBoolInterval
from .hooks import (
    _device_of,
    _hidden_tensor,
    _is_sentence_transformer,
    _resolve_module,
    _TokenBatcher,
)
from .metadata import check_same_place, provenance_of


def _replace_output(output, new):
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    raise TypeError(f"cannot replace a module output of type {type(output).__name__}.")


@contextlib.contextmanager
def _replaced(model, hookpoint, transform):
    module = _resolve_module(model, hookpoint)

    def hook(mod, args, output):
        hidden = _hidden_tensor(output, None, hookpoint)
        return _replace_output(output, transform(hidden))

    handle = module.register_forward_hook(hook)
    try:
        yield model
    finally:
        handle.remove()


def splice(model, hookpoint, estimator):
    """Context manager: run ``model`` with a fitted SAE's reconstruction at ``hookpoint``.

    Inside the ``with`` block, the output of module ``hookpoint`` (for a tuple output, its
    first item) is replaced at every token position, padding included, by
    ``estimator.inverse_transform(estimator.transform(output))``, computed in the
    estimator's dtype and cast back to the model's. The hook is removed on exit, even after an
    error.

    Parameters
    ----------
    model : torch.nn.Module
        The model the SAE was trained on (e.g. from :func:`skmpsae.activations.load_model`).
    hookpoint : str or None
        The module name the activations were captured at. None: the hookpoint the estimator
        was fitted at, from its ``provenance_`` (a model fitted by ``skmpsae fit`` on captured
        activations, or saved with ``provenance=``). A hookpoint or model other than the
        recorded ones is warned about.
    estimator : fitted SAE estimator
        Fitted on that module's outputs (``n_features_in_`` equal to their width).

    Returns
    -------
    context : context manager
        Yields ``model``.

    See Also
    --------
    skmpsae.metrics.spliced_lm_metrics, skmpsae.metrics.spliced_embedding_cosine

    Examples
    --------
    >>> with splice(model, "0.model.encoder.layer.3", sae):  # doctest: +SKIP
    ...     spliced = model.encode(sentences)
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    return _spliced(model, _hookpoint_of(estimator, hookpoint, model, "splice"), estimator)


def _spliced(model, hookpoint, estimator):
    """:func:`splice` without the provenance checks (done once by the caller)."""
    _resolve_module(model, hookpoint)
    dtype = estimator.components_.dtype

    def reconstruct(hidden):
        if hidden.shape[-1] != estimator.n_features_in_:
            raise ValueError(
                f"hookpoint {hookpoint!r} has {hidden.shape[-1]} features, but the SAE was "
                f"fitted on {estimator.n_features_in_}."
            )
        x = hidden.detach().reshape(-1, hidden.shape[-1]).to("cpu", torch.float64).numpy()
        x_hat = estimator.inverse_transform(estimator.transform(x.astype(dtype)))
        return torch.from_numpy(x_hat).to(hidden.device, hidden.dtype).reshape(hidden.shape)

    return _replaced(model, hookpoint, reconstruct)


def _hookpoint_of(estimator, hookpoint, model, what):
    """``hookpoint``, or the one in the estimator's provenance; warns on a mismatch."""
    provenance = provenance_of(estimator)
    if hookpoint is None:
        hookpoint = provenance.get("hookpoint")
        if hookpoint is None:
            raise ValueError(
                f"{what}: hookpoint=None needs an estimator that records where it was fitted "
                "(provenance_, from a capture); pass the hookpoint."
            )
    if provenance.get("capture_input"):
        warnings.warn(
            f"{what}: the SAE was fitted on the input of {hookpoint!r} but replaces its output.",
            UserWarning,
            stacklevel=4,
        )
    check_same_place(provenance, what=what, hookpoint=hookpoint, model=model)
    return hookpoint


def _log_probs(outputs):
    logits = getattr(outputs, "logits", None)
    if logits is None:
        raise TypeError(
            "spliced_lm_metrics needs a causal language model whose output has "
            ".logits (e.g. a ...ForCausalLM from transformers)."
        )
    return torch.log_softmax(logits.to(torch.float64), dim=-1)


@validate_params(
    {
        "model": [torch.nn.Module],
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "hookpoint": [str, None],
        "texts": ["array-like"],
        "tokenizer": "no_validation",
        "batch_size": [NotBoolInterval(Integral, 1, None, closed="left")],
        "max_length": [NotBoolInterval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def spliced_lm_metrics(
    model, estimator, hookpoint, texts, *, tokenizer=None, batch_size=8, max_length=None
):
    """How much a causal language model's next-token predictions suffer with the SAE spliced in.

    Each text is scored on its next-token predictions (position ``t`` predicts token
    ``t + 1``; padding excluded) three times: with the model as it is, with the output of
    ``hookpoint`` replaced by the SAE's reconstruction (:func:`skmpsae.activations.splice`),
    and with that output replaced by zeros. Means are over all predicted tokens of the corpus.

    Parameters
    ----------
    model : torch.nn.Module
        A causal language model whose output has ``.logits`` (a ``transformers``
        ``...ForCausalLM``).
    estimator : fitted SAE estimator
        Fitted on the outputs of ``hookpoint``.
    hookpoint : str or None
        A module name as ``model.named_modules()`` gives it; None: the one recorded in the
        estimator's ``provenance_`` (see :func:`skmpsae.activations.splice`).
    texts : sequence of str
        The evaluation corpus; each text needs at least two tokens.
    tokenizer : transformers tokenizer, default=None
        The model's tokenizer (required for a ``transformers`` model).
    batch_size : int, default=8
        Texts per forward pass.
    max_length : int, default=None
        Truncation, as in :func:`skmpsae.activations.capture`.

    Returns
    -------
    metrics : dict
        ``ce_clean``, ``ce_spliced`` and ``ce_zero_ablation`` (mean cross-entropy in nats),
        ``ce_increase`` (``ce_spliced - ce_clean``), ``kl_divergence`` (mean
        ``KL(p_clean || p_spliced)`` in nats), ``ce_recovered`` (``(ce_zero_ablation -
        ce_spliced) / (ce_zero_ablation - ce_clean)``: 1 is a perfect SAE, 0 no better than
        zeros; None, with a warning, when zero-ablation does not change the loss) and
        ``n_tokens`` (predictions scored).

    See Also
    --------
    spliced_embedding_cosine : The measure for sentence encoders.
    """
    hookpoint = _hookpoint_of(estimator, hookpoint, model, "spliced_lm_metrics")
    batcher = _TokenBatcher(model, tokenizer, max_length, False)
    totals = {"clean": 0.0, "spliced": 0.0, "zero": 0.0, "kl": 0.0}
    n_tokens = 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            inputs, keep = batcher(texts[start : start + batch_size], start)
            valid = (keep[:, 1:] & keep[:, :-1]).to(_device_of(model))
            target = inputs["input_ids"][:, 1:].unsqueeze(-1)
            clean = _log_probs(batcher.forward(inputs))[:, :-1]
            with _spliced(model, hookpoint, estimator):
                spliced = _log_probs(batcher.forward(inputs))[:, :-1]
            with _replaced(model, hookpoint, torch.zeros_like):
                zero = _log_probs(batcher.forward(inputs))[:, :-1]
            for key, logp in (("clean", clean), ("spliced", spliced), ("zero", zero)):
                totals[key] -= float(logp.gather(-1, target).squeeze(-1)[valid].sum())
            kl = (clean.exp() * (clean - spliced)).sum(dim=-1)
            totals["kl"] += float(kl[valid].sum())
            n_tokens += int(valid.sum())
    if n_tokens == 0:
        raise ValueError("no text has two tokens: there is no next-token prediction to score.")
    ce = {key: totals[key] / n_tokens for key in ("clean", "spliced", "zero")}
    gap = ce["zero"] - ce["clean"]
    recovered = None
    if abs(gap) <= 1e-12 * max(1.0, abs(ce["clean"])):
        warnings.warn(
            "zero-ablating the hookpoint does not change the loss; ce_recovered is "
            "undefined (None).",
            UserWarning,
            stacklevel=2,
        )
    else:
        recovered = (ce["zero"] - ce["spliced"]) / gap
    return {
        "ce_clean": ce["clean"],
        "ce_spliced": ce["spliced"],
        "ce_zero_ablation": ce["zero"],
        "ce_increase": ce["spliced"] - ce["clean"],
        "kl_divergence": totals["kl"] / n_tokens,
        "ce_recovered": recovered,
        "n_tokens": n_tokens,
    }


@validate_params(
    {
        "model": [torch.nn.Module],
        "estimator": [HasMethods(["transform", "inverse_transform"])],
        "hookpoint": [str, None],
        "texts": ["array-like"],
        "batch_size": [NotBoolInterval(Integral, 1, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def spliced_embedding_cosine(model, estimator, hookpoint, texts, *, batch_size=32):
    """Cosine between a sentence encoder's embeddings with and without the SAE spliced in.

    Parameters
    ----------
    model : sentence_transformers.SentenceTransformer
        The sentence encoder.
    estimator : fitted SAE estimator
        Fitted on the outputs of ``hookpoint``.
    hookpoint : str or None
        A module name as ``model.named_modules()`` gives it, e.g.
        ``"0.model.encoder.layer.3"``; None: the one recorded in the estimator's
        ``provenance_`` (see :func:`skmpsae.activations.splice`).
    texts : sequence of str
        Sentences to embed.
    batch_size : int, default=32
        Sentences per forward pass.

    Returns
    -------
    cosine : ndarray of shape (n_texts,)
        Per sentence, the cosine between the original and the spliced embedding (1 when the
        SAE reconstructs the module's output perfectly).

    See Also
    --------
    spliced_lm_metrics : The measures for causal language models.
    """
    if not _is_sentence_transformer(model):
        raise TypeError(
            "spliced_embedding_cosine takes a sentence_transformers."
            f"SentenceTransformer, got {type(model).__name__}."
        )
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty.")
    hookpoint = _hookpoint_of(estimator, hookpoint, model, "spliced_embedding_cosine")
    options = {"batch_size": batch_size, "convert_to_tensor": True, "show_progress_bar": False}
    clean = model.encode(texts, **options)
    with _spliced(model, hookpoint, estimator):
        spliced = model.encode(texts, **options)
    cosine = torch.nn.functional.cosine_similarity(clean.double(), spliced.double(), dim=-1)
    return cosine.cpu().numpy()
