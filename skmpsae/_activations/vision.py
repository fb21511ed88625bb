"""What capture needs to know of an image model: how to load it with its image processor, how
to run its vision tower (or a CLIP-like model's text tower) up to a hookpoint, and how the rows
of a hooked output map to an image's CLS, register and patch tokens."""

import logging
import math

import numpy as np
import torch

from .provenance import KINDS

# The hookpoints of a CLIP-like model's projected embeddings (the names of CLIPModel's outputs):
# not modules, but what get_image_features and get_text_features return, one row per item.
EMBEDS = {"image": "image_embeds", "text": "text_embeds"}
IMAGE_TOKENS = ("all", "patches", "cls", "mean")


class _NoTorchvisionNote(logging.Filter):
    """Drops transformers' note that it falls back to its PIL image processors without
    torchvision: the fallback is what capture wants here, and the note is noise to a user."""

    def filter(self, record):
        return "requires torchvision (not installed)" not in record.getMessage()


_NOTE_FILTER = _NoTorchvisionNote()


def quiet_image_processor_note():
    logging.getLogger("transformers.utils.import_utils").addFilter(_NOTE_FILTER)


def is_dual(model):
    """Whether ``model`` has both an image and a text tower (CLIP, SigLIP)."""
    return hasattr(model, "get_image_features") and hasattr(model, "get_text_features")


def takes_images(model):
    config = getattr(model, "config", None)
    main = getattr(model, "main_input_name", None)
    if main is not None or config is not None:  # a transformers model says what it reads
        return is_dual(model) or main == "pixel_values"
    return True  # any other module: its image_processor decides


def takes_texts(model):
    if not hasattr(model, "config"):
        return True
    return is_dual(model) or getattr(model, "main_input_name", "input_ids") == "input_ids"


def _tower_roots(model, modality):
    """The top-level module names of a dual model's tower for ``modality``."""
    words = ("vision", "visual", "image") if modality == "image" else ("text",)
    return {name for name, _ in model.named_children() if any(word in name for word in words)}


def check_tower(model, hookpoint, modality, flag):
    """Raise when ``hookpoint`` lies in the other tower of a dual model, or names the other
    modality's embeddings; ``flag`` is how the interface spells the input (images=, --texts)."""
    other = "text" if modality == "image" else "image"
    if hookpoint == EMBEDS[other]:
        raise ValueError(
            f"hookpoint {hookpoint!r} is the {other} tower's embedding; {flag} runs the "
            f"{modality} tower: use {EMBEDS[modality]!r} or one of its modules."
        )
    if not is_dual(model) or hookpoint == EMBEDS[modality]:
        return
    root = hookpoint.split(".", 1)[0]
    if root in _tower_roots(model, other):
        mine = ", ".join(sorted(_tower_roots(model, modality)))
        raise ValueError(
            f"hookpoint {hookpoint!r} is in the {other} tower of this {type(model).__name__}; "
            f"{flag} runs the {modality} tower ({mine}.*, or {EMBEDS[modality]!r})."
        )


def _vision_config(model):
    config = getattr(model, "config", None)
    return getattr(config, "vision_config", None) or config


def patch_size(model):
    size = getattr(_vision_config(model), "patch_size", None)
    if isinstance(size, (list, tuple)):
        size = size[0]
    return size if isinstance(size, int) and size > 0 else None


def num_channels(model):
    """The channels the model's pixels have (None: unknown, for a module of one's own)."""
    channels = getattr(_vision_config(model), "num_channels", None)
    return channels if channels in (1, 3) else None


def run_images(model, pixels):
    """Run the image path of ``model`` on the processor's output (a tensor or a dict)."""
    if not isinstance(pixels, dict):
        pixels = {"pixel_values": pixels} if hasattr(model, "config") else {None: pixels}
    if None in pixels:
        return model(pixels[None])
    if is_dual(model):
        return model.get_image_features(**pixels)
    return model(**pixels)


def pooled_tensor(output):
    """The one-row-per-item tensor get_image_features / get_text_features return (a tensor in
    older transformers, a model output whose pooler_output it is in newer ones)."""
    if isinstance(output, torch.Tensor):
        return output
    return output["pooler_output"]


def pixel_shape(pixels):
    tensor = pixels if isinstance(pixels, torch.Tensor) else None
    if isinstance(pixels, dict):
        tensor = pixels.get("pixel_values", next(iter(pixels.values())))
    return tuple(tensor.shape[-2:]) if isinstance(tensor, torch.Tensor) else None


def layout(n_tokens, patch, image_hw):
    """(n_prefix, grid_rows, grid_cols) of a sequence of ``n_tokens`` image tokens: the patch
    grid from the patch size and the image's size where both are known, else the largest
    square that fits; the tokens before the patches are the prefix (CLS first, then registers),
    as ViT, DINOv2 and CLIP order them."""
    if patch and image_hw and image_hw[0] // patch * (image_hw[1] // patch) <= n_tokens:
        rows, cols = image_hw[0] // patch, image_hw[1] // patch
    else:
        rows = cols = math.isqrt(n_tokens)
    return n_tokens - rows * cols, rows, cols


def token_rows(hidden, image_tokens, patch, image_hw, hookpoint):
    """Rows of one batch's hooked output and their provenance without the image index.

    Returns ``rows`` (n, features) float32 and ``info`` (n, 6) int: the image's place in the
    batch, position, kind, patch row, patch column, and the grid (rows, cols).
    """
    if hidden.ndim == 2:  # one row per image: pooled, kept whatever image_tokens says
        n = hidden.shape[0]
        info = np.stack([np.arange(n), np.full(n, -1), np.full(n, KINDS["pooled"])], axis=1)
        return hidden.numpy(), np.concatenate([info, np.full((n, 2), -1)], axis=1), None
    if hidden.ndim == 4:  # a feature map (batch, channels, height, width): positions are patches
        b, c, h, w = hidden.shape
        hidden, prefix, grid = hidden.permute(0, 2, 3, 1).reshape(b, h * w, c), 0, (h, w)
    elif hidden.ndim == 3:
        prefix, *grid = layout(hidden.shape[1], patch, image_hw)
    else:
        raise ValueError(
            f"hookpoint {hookpoint!r} gives shape {tuple(hidden.shape)}, not image tokens "
            "(batch, tokens, features), a feature map (batch, channels, height, width) or one "
            "row per image (batch, features)."
        )
    b, t = hidden.shape[:2]
    kind = np.full(t, KINDS["patch"])
    kind[:prefix] = KINDS["register"]
    kind[:1] = KINDS["cls"] if prefix else kind[:1]
    position = np.arange(t)
    patch_row = np.where(position >= prefix, (position - prefix) // grid[1], -1)
    patch_col = np.where(position >= prefix, (position - prefix) % grid[1], -1)
    if image_tokens == "mean":
        if prefix == t:
            raise ValueError(f"hookpoint {hookpoint!r}: no patch tokens to average.")
        rows = hidden[:, prefix:].mean(dim=1).numpy()
        info = np.stack([np.arange(b), np.full(b, -1), np.full(b, KINDS["pooled"])], axis=1)
        return rows, np.concatenate([info, np.full((b, 2), -1)], axis=1), grid
    if image_tokens == "cls":
        if not prefix:
            raise ValueError(
                f"hookpoint {hookpoint!r} has no CLS token (its {t} tokens are all patches); "
                "use image_tokens='mean' for one row per image."
            )
        keep = position == 0
    elif image_tokens == "patches":
        keep = position >= prefix
    else:
        keep = np.ones(t, dtype=bool)
    columns = np.stack([position, kind, patch_row, patch_col], axis=1)[keep]
    image = np.repeat(np.arange(b), keep.sum())
    info = np.concatenate([image[:, None], np.tile(columns, (b, 1))], axis=1)
    return hidden[:, torch.from_numpy(keep)].reshape(-1, hidden.shape[-1]).numpy(), info, grid
