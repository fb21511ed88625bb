"""capture with images=: rows equal to a plain forward pass (processor, model, hidden state) on
tiny randomly initialised ViT, DINOv2 (with and without registers), CLIP and SigLIP models and a
module of our own, the rows' provenance, the projected embeddings of both towers, resume, and
the errors. Batched rows are compared with a batch of one to 1e-5 (see test_activations)."""

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from _vision_models import CAPTIONS, PATCH, SIZE, build  # noqa: E402
from skmpsae._activations import capture_file, image_capture  # noqa: E402
from skmpsae._activations.provenance import KINDS, Provenance  # noqa: E402
from skmpsae.activations import capture  # noqa: E402
from skmpsae.cli import main  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-5}
GRID = SIZE // PATCH
DIGITS = np.load(
    __import__("importlib.resources").resources.files("skmpsae") / "data" / "mnist_5k.npz"
)["X"].reshape(-1, 28, 28)[::500]  # one digit of each class, uint8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    kinds = ("vit", "dinov2", "dinov2-registers", "clip", "siglip")
    return {kind: (root / kind, build(kind, root / kind)) for kind in kinds}


def _vision(model):
    return model.vision_model if hasattr(model, "vision_model") else model


def _reference(directory, model, images, layer):
    """Processor, then a plain forward pass: the hidden state after block ``layer``."""
    processor = transformers.AutoImageProcessor.from_pretrained(directory)
    rgb = [np.repeat(image[:, :, None], 3, axis=2) for image in images]
    pixels = processor(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = _vision(model)(pixel_values=pixels, output_hidden_states=True)
    return out.hidden_states[layer + 1].numpy()


LAYER = {  # the hookpoint of block 0, and its number of prefix tokens (CLS, registers)
    "vit": ("layers.0", 1),
    "dinov2": ("encoder.layer.0", 1),
    "dinov2-registers": ("encoder.layer.0", 3),
    "clip": ("vision_model.encoder.layers.0", 1),
    "siglip": ("vision_model.encoder.layers.0", 0),
}


@pytest.mark.parametrize("kind", list(LAYER))
def test_rows_equal_a_plain_forward_pass(models, kind, tmp_path):
    directory, model = models[kind]
    hookpoint, prefix = LAYER[kind]
    out = tmp_path / "a.npy"
    X = capture(
        directory, images=DIGITS, hookpoint=hookpoint, output=out, image_tokens="all", batch_size=4
    )
    hidden = _reference(directory, model, DIGITS, 0)  # (10, prefix + 16, 32)
    np.testing.assert_allclose(X, hidden.reshape(-1, hidden.shape[-1]), **TOL)
    table = np.load(str(out) + ".tokens.npy")
    t = prefix + GRID * GRID
    assert table.shape == (10 * t, 7)
    np.testing.assert_array_equal(table[:, 0], np.repeat(np.arange(10), t))
    np.testing.assert_array_equal(table[:, 1], np.tile(np.arange(t), 10))
    kinds = [KINDS["cls"]] * min(prefix, 1) + [KINDS["register"]] * (prefix - 1 if prefix else 0)
    kinds += [KINDS["patch"]] * GRID * GRID
    np.testing.assert_array_equal(table[:t, 3], kinds)
    patch = np.arange(GRID * GRID)
    np.testing.assert_array_equal(table[prefix:t, 4], patch // GRID)
    np.testing.assert_array_equal(table[prefix:t, 5], patch % GRID)
    assert (table[:prefix, 4:6] == -1).all() and (table[:, 2] == -1).all()
    assert (table[:, 6] == 1).all()  # the image modality
    meta = json.loads((tmp_path / "a.npy.meta.json").read_text())
    assert meta["modality"] == "image" and meta["grid_size"] == [GRID, GRID]
    assert meta["converted"].startswith("grayscale") and meta["n_images"] == 10


@pytest.mark.parametrize("tokens", ["patches", "cls", "mean"])
def test_image_tokens(models, tokens, tmp_path):
    directory, model = models["dinov2-registers"]
    X = capture(
        directory,
        images=DIGITS,
        hookpoint="encoder.layer.1",
        output=tmp_path / "a.npy",
        image_tokens=tokens,
    )
    hidden = _reference(directory, model, DIGITS, 1)
    table = np.load(tmp_path / "a.npy.tokens.npy")
    expected = {
        "patches": hidden[:, 3:].reshape(-1, 32),
        "cls": hidden[:, 0],
        "mean": hidden[:, 3:].mean(axis=1),
    }[tokens]
    np.testing.assert_allclose(X, expected, **TOL)
    kind = {"patches": KINDS["patch"], "cls": KINDS["cls"], "mean": KINDS["pooled"]}[tokens]
    assert (table[:, 3] == kind).all()
    if tokens != "patches":
        np.testing.assert_array_equal(table[:, 0], np.arange(10))


def test_default_keeps_patches_only(models, tmp_path):
    directory, _ = models["vit"]
    capture(directory, images=DIGITS, hookpoint="layers.1", output=tmp_path / "a.npy")
    table = np.load(tmp_path / "a.npy.tokens.npy")
    assert (table[:, 3] == KINDS["patch"]).all() and len(table) == 10 * GRID * GRID


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_projected_embeddings_of_both_towers(models, kind, tmp_path):
    directory, model = models[kind]
    X = capture(directory, images=DIGITS, hookpoint="image_embeds", output=tmp_path / "i.npy")
    rgb = [np.repeat(d[:, :, None], 3, axis=2) for d in DIGITS]
    processor = transformers.AutoImageProcessor.from_pretrained(directory)
    pixels = processor(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        np.testing.assert_allclose(
            X, model.get_image_features(pixel_values=pixels).pooler_output.numpy(), **TOL
        )
    T = capture(directory, CAPTIONS, "text_embeds", tmp_path / "t.npy", batch_size=3)
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    for i, caption in enumerate(CAPTIONS):  # each caption run alone
        ids = tokenizer([caption], return_tensors="pt")
        with torch.no_grad():
            alone = model.get_text_features(input_ids=ids["input_ids"]).pooler_output
        np.testing.assert_allclose(T[i], alone[0].numpy(), **TOL)
    table = np.load(tmp_path / "t.npy.tokens.npy")
    # One pooled row per caption, the text modality; never dropped as a special token.
    assert table.tolist() == [[i, -1, -1, KINDS["pooled"], -1, -1, 0] for i in range(5)]
    images = np.load(tmp_path / "i.npy.tokens.npy")
    assert (images[:, 3] == KINDS["pooled"]).all() and (images[:, 6] == 1).all()


def test_text_tower_hookpoint_of_a_clip_model(models, tmp_path):
    directory, model = models["clip"]
    # Special tokens kept, so that the rows are the whole sequence and the kinds tell them.
    X = capture(
        directory,
        CAPTIONS,
        "text_model.encoder.layers.1",
        tmp_path / "t.npy",
        skip_special_tokens=False,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    ids = tokenizer([CAPTIONS[0]], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model.text_model(input_ids=ids, output_hidden_states=True).hidden_states[2]
    np.testing.assert_allclose(X[: ids.shape[1]], hidden[0].numpy(), **TOL)
    table = np.load(tmp_path / "t.npy.tokens.npy")
    assert table[0, 3] == KINDS["special"] and table[1, 3] == KINDS["token"]


class _TinyConvNet(torch.nn.Module):
    """A module of our own: a conv stem (feature map) then a linear head on the pooled map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(1, 8, kernel_size=4, stride=4)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)).mean(dim=(2, 3)))


def _to_tensor(batch):  # (B, H, W, 1) uint8 -> (B, 1, H, W) float
    return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255


def test_a_module_of_our_own(tmp_path):
    net = _TinyConvNet().eval()
    X = capture(
        net,
        images=DIGITS,
        hookpoint="stem",
        output=tmp_path / "a.npy",
        image_processor=_to_tensor,
        batch_size=3,
    )
    with torch.no_grad():
        maps = net.stem(_to_tensor(DIGITS[:, :, :, None]))  # (10, 8, 7, 7)
    np.testing.assert_allclose(X, maps.permute(0, 2, 3, 1).reshape(-1, 8).numpy(), **TOL)
    table = np.load(tmp_path / "a.npy.tokens.npy")
    np.testing.assert_array_equal(table[:49, 4], np.arange(49) // 7)
    np.testing.assert_array_equal(table[:49, 5], np.arange(49) % 7)
    Y = capture(
        net, images=DIGITS, hookpoint="head", output=tmp_path / "b.npy", image_processor=_to_tensor
    )
    with torch.no_grad():
        np.testing.assert_allclose(Y, net(_to_tensor(DIGITS[:, :, :, None])).numpy(), **TOL)


def test_a_module_of_our_own_with_a_transformers_processor(tmp_path):
    """The processor's normalisation says how many channels the module takes (here one)."""
    net = _TinyConvNet().eval()
    processor = transformers.ViTImageProcessor(
        size={"height": 28, "width": 28}, image_mean=[0.5], image_std=[0.5]
    )
    rgb = np.stack([DIGITS] * 3, axis=3)  # converted to their luminance: the digits again
    X = capture(
        net, images=rgb, hookpoint="stem", output=tmp_path / "a.npy", image_processor=processor
    )
    with torch.no_grad():
        maps = net.stem(_to_tensor(DIGITS[:, :, :, None]) * 2 - 1)
    np.testing.assert_allclose(X, maps.permute(0, 2, 3, 1).reshape(-1, 8).numpy(), **TOL)
    meta = json.loads((tmp_path / "a.npy.meta.json").read_text())
    assert meta["converted"] == "RGB images converted to grayscale (luminance)"


def _folder(tmp_path, images):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, image in enumerate(images):
        where = folder / "sub" if i % 2 else folder
        Image.fromarray(image).save(where / f"{i:03d}.png")
    return folder


def test_a_folder_reads_recursively_in_path_order(models, tmp_path):
    directory, _ = models["vit"]
    folder = _folder(tmp_path, DIGITS)
    X = capture(directory, images=folder, hookpoint="layers.0", output=tmp_path / "a.npy")
    np.save(tmp_path / "d.npy", DIGITS[[0, 2, 4, 6, 8, 1, 3, 5, 7, 9]])  # sorted by path
    Y = capture(
        directory, images=tmp_path / "d.npy", hookpoint="layers.0", output=tmp_path / "b.npy"
    )
    np.testing.assert_array_equal(X, Y)
    Z = capture(
        directory, images="mnist", hookpoint="layers.0", output=tmp_path / "c.npy", batch_size=1000
    )
    assert Z.shape == (5000 * GRID * GRID, 32)
    np.testing.assert_allclose(Z[: GRID * GRID], X[: GRID * GRID], **TOL)  # digit 0 first


def test_resume_is_bit_identical(models, tmp_path, monkeypatch):
    directory, _ = models["dinov2-registers"]
    kw = {"images": DIGITS, "hookpoint": "encoder.layer.1", "image_tokens": "all", "batch_size": 3}
    capture(directory, output=tmp_path / "a.npy", **kw)
    commit, calls = capture_file._RowFile.commit, []

    def commit_then_die(self):
        commit(self)
        calls.append(1)
        if len(calls) == 2:  # rows of the second batch on disk, its state not saved
            raise KeyboardInterrupt

    monkeypatch.setattr(image_capture, "COMMIT_SECONDS", 0.0)  # commit after every batch
    monkeypatch.setattr(capture_file._RowFile, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        capture(directory, output=tmp_path / "b.npy", **kw)
    monkeypatch.setattr(capture_file._RowFile, "commit", commit)
    with open(tmp_path / "b.npy.tokens.npy", "ab") as f:
        f.write(b"\1" * 20)  # part of a batch written when the process died
    capture(directory, output=tmp_path / "b.npy", **kw)
    for suffix in ("", ".tokens.npy"):
        assert (tmp_path / f"b.npy{suffix}").read_bytes() == (
            tmp_path / f"a.npy{suffix}"
        ).read_bytes()


def test_three_column_provenance_still_reads(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4), np.float32))
    np.save(tmp_path / "a.npy.tokens.npy", np.array([[0, 0, 5], [0, 1, 6]], np.int32))
    provenance = Provenance.read(tmp_path / "a.npy", 2)
    assert provenance.column("token").tolist() == [5, 6]
    assert provenance.column("kind").tolist() == [-1, -1]
    assert provenance.column("modality").tolist() == [0, 0]


def _nothing_written(tmp_path, name="a.npy"):
    return not list(tmp_path.glob(f"{name}*"))


def test_bad_input_gets_one_clear_error_and_writes_nothing(models, tmp_path):
    vit, _ = models["vit"]
    clip, _ = models["clip"]
    folder = _folder(tmp_path, DIGITS[:4])
    (folder / "sub" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "a.npy"
    with pytest.raises(ValueError, match="zz_broken.png: not a readable image"):
        capture(vit, images=folder, hookpoint="layers.0", output=out)
    assert _nothing_written(tmp_path)
    (folder / "sub" / "zz_broken.png").unlink()
    # A file whose header reads but whose pixels do not: found in its batch, named, and the
    # partial capture removed (it cannot resume from a source that does not read).
    whole = tmp_path / "whole.png"
    Image.fromarray(np.full((28, 28, 3), 200, np.uint8)).save(whole)
    (folder / "sub" / "zz_cut.png").write_bytes(whole.read_bytes()[:60])
    with pytest.raises(ValueError, match="zz_cut.png: not a readable image"):
        capture(vit, images=folder, hookpoint="layers.0", output=out, batch_size=2)
    assert _nothing_written(tmp_path)
    (folder / "sub" / "zz_cut.png").unlink()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "big.png")
    net = _TinyConvNet().eval()
    with pytest.raises(
        ValueError, match="mixed sizes: image 0 is 28x28, image 2 is 32x32 .*big.png"
    ):
        capture(net, images=folder, hookpoint="stem", output=out, image_processor=_to_tensor)
    assert _nothing_written(tmp_path)
    # The ViT's processor resizes them: the same folder captures, the big image at 28x28.
    assert capture(vit, images=folder, hookpoint="layers.0", output=out).shape[0] == 5 * 16
    bert = transformers.BertModel(
        transformers.BertConfig(
            num_hidden_layers=1, hidden_size=16, num_attention_heads=2, intermediate_size=32
        )
    )
    errors = [
        (
            dict(model=bert, images=DIGITS, hookpoint="encoder", image_processor=_to_tensor),
            "images given to a text model",
        ),
        (dict(model=vit, texts=CAPTIONS, hookpoint="layers.0"), "texts given to a vision model"),
        (
            dict(model=clip, images=DIGITS, hookpoint="text_model.encoder.layers.0"),
            "is in the text tower of this CLIPModel",
        ),
        (
            dict(model=clip, texts=CAPTIONS, hookpoint="vision_model.encoder.layers.0"),
            "is in the image tower",
        ),
        (dict(model=clip, texts=CAPTIONS, hookpoint="image_embeds"), "the image tower's"),
        (
            dict(
                model=models["siglip"][0],
                images=DIGITS,
                hookpoint="vision_model.encoder",
                image_tokens="cls",
            ),
            "has no CLS token",
        ),
        (
            dict(model=vit, images=DIGITS, hookpoint="layers.0", image_tokens="some"),
            "image_tokens must be one of",
        ),
        (dict(model=vit, images=np.zeros((2, 5)), hookpoint="layers.0"), "shape"),
        (dict(model=net, images=DIGITS, hookpoint="stem"), "needs image_processor="),
    ]
    for kwargs, message in errors:
        with pytest.raises((ValueError, TypeError), match=message):
            capture(**kwargs, output=tmp_path / "e.npy")
        assert _nothing_written(tmp_path, "e.npy")


def test_rgb_images_into_a_grayscale_model(tmp_path):
    net = _TinyConvNet().eval()  # one input channel
    rgb = np.stack([DIGITS, DIGITS // 2, DIGITS // 3], axis=3)
    X = capture(
        net,
        images=rgb,
        hookpoint="stem",
        output=tmp_path / "a.npy",
        image_processor=lambda batch: _to_tensor(batch[:, :, :, :1]),
    )
    assert X.shape == (10 * 49, 8)  # one channel of the three reached the module: it ran


def test_cli_capture_images(models, tmp_path, capsys):
    directory, model = models["dinov2"]
    np.save(tmp_path / "d.npy", DIGITS)
    out = tmp_path / "a.npy"
    argv = [
        "capture",
        str(directory),
        "--images",
        str(tmp_path / "d.npy"),
        "--hookpoint",
        "encoder.layer.0",
        "-o",
        str(out),
        "-q",
    ]
    assert main([*argv, "--image-tokens", "cls"]) == 0
    printed = capsys.readouterr().out
    assert "captured 10 rows x 32 features from 10 images" in printed
    assert "grayscale images repeated to 3 channels" in printed
    np.testing.assert_allclose(np.load(out), _reference(directory, model, DIGITS, 0)[:, 0], **TOL)
    meta = json.loads((tmp_path / "a.npy.meta.json").read_text())
    assert meta["model"] == str(directory.resolve()) and meta["image_tokens"] == "cls"

    def error(extra, name="b.npy"):
        err = main_error(capsys, [*argv[:6], "-o", str(tmp_path / name), "-q", *extra])
        assert _nothing_written(tmp_path, name)
        return err

    assert "--hookpoint 'encoder.layer.9': not a module" in error(
        ["--hookpoint", "encoder.layer.9"]
    )
    assert "--skip-special-tokens applies to texts" in error(["--skip-special-tokens"])
    texts, c = tmp_path / "t.txt", tmp_path / "c.npy"
    texts.write_text("a digit\n")
    command = f"capture {directory} --texts {texts} -o {c} --hookpoint"
    assert "--image-tokens applies to --images" in main_error(
        capsys, f"{command} x --image-tokens all".split()
    )
    assert "--texts given to a vision model" in main_error(
        capsys, f"{command} encoder.layer.0".split()
    )
    clip = models["clip"][0]
    assert "is in the text tower" in main_error(
        capsys, f"capture {clip} --images mnist -o {c} --hookpoint text_model.encoder".split()
    )
    assert _nothing_written(tmp_path, "c.npy")


def main_error(capsys, argv):
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_cli_hookpoints_of_an_image_model(models, capsys):
    directory, _ = models["dinov2-registers"]
    assert main(["hookpoints", str(directory), "--json"]) == 0  # a vision model: one image
    shapes = {row["name"]: row["shape"] for row in json.loads(capsys.readouterr().out)}
    assert shapes["encoder.layer.1"] == [1, 3 + GRID * GRID, 32]
    clip, _ = models["clip"]
    assert main(["hookpoints", str(clip), "--image"]) == 0
    out = capsys.readouterr().out
    assert "vision_model.encoder.layers.0 " in out and "text_model" not in out
    assert "image_embeds is the projection" in out
