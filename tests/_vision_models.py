"""Tiny randomly initialised image and vision-language models, saved as local model directories
(weights, image processor config, and a word-level tokenizer for the text towers): what
``capture`` loads from a directory, built from transformers configs (nothing is downloaded)."""

import torch

CAPTIONS = [
    "a handwritten seven",
    "the digit seven",
    "a digit",
    "a handwritten zero written fast and small",
    "zero",
]
SIZE, PATCH, WIDTH = 28, 7, 32
_VISION = {
    "hidden_size": WIDTH,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "image_size": SIZE,
    "patch_size": PATCH,
}


def caption_tokenizer():
    import tokenizers
    import transformers

    words = sorted({w for t in CAPTIONS for w in t.split()})
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3}
    vocab.update({w: i + 4 for i, w in enumerate(words)})
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )


def build(kind, directory):
    """Save a tiny ``kind`` model ("vit", "dinov2", "dinov2-registers", "clip", "siglip") in
    ``directory`` and return the model, in evaluation mode."""
    import transformers as t

    from skmpsae._activations.vision import quiet_image_processor_note

    quiet_image_processor_note()

    torch.manual_seed(0)
    text = {
        "hidden_size": WIDTH,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 32,
        "max_position_embeddings": 16,
        "pad_token_id": 0,
        "bos_token_id": 2,
        "eos_token_id": 3,
    }
    square = {"height": SIZE, "width": SIZE}
    if kind == "vit":
        model = t.ViTModel(t.ViTConfig(**_VISION))
        processor = t.ViTImageProcessor(size=square)
    elif kind.startswith("dinov2"):
        config = {**_VISION, "mlp_ratio": 2}
        config.pop("intermediate_size")
        if kind == "dinov2-registers":
            model = t.Dinov2WithRegistersModel(
                t.Dinov2WithRegistersConfig(**config, num_register_tokens=2)
            )
        else:
            model = t.Dinov2Model(t.Dinov2Config(**config))
        processor = t.BitImageProcessor(size={"shortest_edge": SIZE}, crop_size=square)
    elif kind == "clip":
        config = t.CLIPConfig(vision_config=_VISION, text_config=text, projection_dim=16)
        model = t.CLIPModel(config)
        processor = t.CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size=square)
    elif kind == "siglip":
        model = t.SiglipModel(t.SiglipConfig(vision_config=_VISION, text_config=text))
        processor = t.SiglipImageProcessor(size=square)
    else:
        raise ValueError(kind)
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    if kind in ("clip", "siglip"):
        caption_tokenizer().save_pretrained(directory)
    return model
