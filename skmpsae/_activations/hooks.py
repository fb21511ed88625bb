"""The plumbing that capture, streaming and splicing share: finding a hookpoint's module (with
the closest names when it is not there), reading a hidden state out of a module's output, and
tokenising texts into batches within the model's length."""

import difflib

import torch

# Limits above this are tokenizers' "no limit" sentinels (e.g. 1e30), not a model's length.
_MAX_SANE_LENGTH = 1_000_000


def _is_sentence_transformer(model):
    return type(model).__module__.startswith("sentence_transformers")


class UnknownHookpoint(ValueError):
    """A hookpoint that is not a module name; ``closest`` holds the most similar names."""

    def __init__(self, hookpoint, model_class, closest):
        self.hookpoint, self.closest = hookpoint, closest
        super().__init__(
            f"unknown hookpoint {hookpoint!r}: not a module name of this {model_class} "
            f"(closest: {', '.join(closest)}; see model.named_modules())."
        )


def closest_names(name, names, n=3):
    """The ``n`` names most like ``name``, ranked over all of them.

    A name is scored by its similarity to ``name`` as a whole and by that of its last dotted
    parts (as many as ``name`` has), so that ``encoder.layer.3`` finds
    ``0.auto_model.encoder.layer.3`` and ``transformer.h.7`` finds ``transformer.h.1``.
    """
    query = str(name)
    depth = query.count(".") + 1

    def score(candidate):
        tail = ".".join(candidate.split(".")[-depth:])
        whole = difflib.SequenceMatcher(None, query, candidate).ratio()
        end = difflib.SequenceMatcher(None, query, tail).ratio()
        return max(whole, end), -len(candidate)

    return sorted(names, key=score, reverse=True)[:n]


def _resolve_module(model, hookpoint):
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    modules = dict(model.named_modules())
    if not isinstance(hookpoint, str) or hookpoint not in modules or hookpoint == "":
        names = [name for name in modules if name]
        raise UnknownHookpoint(hookpoint, type(model).__name__, closest_names(hookpoint, names))
    return modules[hookpoint]


def _hidden_tensor(value, ids_shape, hookpoint):
    """The per-token tensor in a module's output (a tensor, or the first item of a tuple)."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    if (
        not isinstance(value, torch.Tensor)
        or value.ndim < 3
        or (ids_shape is not None and tuple(value.shape[:2]) != tuple(ids_shape))
    ):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"hookpoint {hookpoint!r} gives {shape}, not one row per token (expected a tensor "
            f"of shape (batch, tokens, ...) with (batch, tokens) = {tuple(ids_shape or ())}); "
            "pick a module that runs on every token, such as a transformer block."
        )
    return value


def _device_of(model):
    return next(iter(model.parameters()), torch.empty(0)).device


class _TokenBatcher:
    """Tokenises texts without padding, then pads on the right itself: every model sees the
    same positions for a text run alone and in a batch, whatever its tokenizer's padding side
    or pad token (GPT-2 has none)."""

    def __init__(self, model, tokenizer, max_length, skip_special_tokens):
        self.sentence_transformer = _is_sentence_transformer(model)
        if tokenizer is None and self.sentence_transformer:
            tokenizer = model.tokenizer
        if tokenizer is None:
            raise TypeError(f"a {type(model).__name__} needs its tokenizer: pass tokenizer=.")
        self.model, self.tokenizer = model, tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.lower = self.sentence_transformer and bool(getattr(model[0], "do_lower_case", False))
        if max_length is None:
            limits = [
                getattr(model, "max_seq_length", None) if self.sentence_transformer else None,
                getattr(tokenizer, "model_max_length", None),
            ]
            config = getattr(model, "config", None)
            limits += [
                getattr(config, key, None) for key in ("max_position_embeddings", "n_positions")
            ]
            limits = [n for n in limits if isinstance(n, int) and 0 < n < _MAX_SANE_LENGTH]
            max_length = min(limits) if limits else None
        self.max_length = max_length

    def __call__(self, texts, offset=0):
        texts = [t.lower() for t in texts] if self.lower else list(texts)
        encoded = self.tokenizer(
            texts,
            truncation=self.max_length is not None,
            max_length=self.max_length,
            padding=False,
            return_special_tokens_mask=True,
            return_attention_mask=True,
        )
        ids = encoded["input_ids"]
        lengths = [len(row) for row in ids]
        if min(lengths) == 0:
            raise ValueError(f"text {offset + lengths.index(0)} has no tokens; remove empty texts.")
        width = max(lengths)
        pad_id = self.tokenizer.pad_token_id
        keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
        inputs = {}
        for key in keys:
            fill = (pad_id or 0) if key == "input_ids" else 0
            inputs[key] = torch.tensor([row + [fill] * (width - len(row)) for row in encoded[key]])
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        inputs["attention_mask"] = mask
        keep = mask.bool()
        if self.skip_special_tokens:
            special = torch.tensor(
                [row + [1] * (width - len(row)) for row in encoded["special_tokens_mask"]]
            )
            keep &= ~special.bool()
        device = _device_of(self.model)
        self.last_input_ids = inputs["input_ids"]  # what capture's provenance records
        return {k: v.to(device) for k, v in inputs.items()}, keep

    def forward(self, inputs):
        if self.sentence_transformer:
            return self.model(dict(inputs))
        if hasattr(self.model, "get_text_features"):  # CLIP-like: the text tower alone
            inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
            return self.model.get_text_features(**inputs)
        return self.model(**inputs)
