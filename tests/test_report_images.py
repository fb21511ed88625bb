"""The feature browser's image panels (skmpsae/_inspect/images.py): top images ranked by each
atom's peak over their patches, heat maps equal to the atom's codes on each patch, images from
lower activation bands, and for a vision-language model the top texts and the modality score.
Rows come from tiny randomly initialised ViT and CLIP models captured with skmpsae's own capture;
the numbers are checked against naive loops over ``transform``."""

import base64
import json

import numpy as np
import pytest
import torch

from skmpsae import MatchingPursuitSAE, TopKSAE, io
from skmpsae.cli import main
from skmpsae.datasets import load_mnist

transformers = pytest.importorskip("transformers")
pytest.importorskip("PIL")
from skmpsae._datasets import digit_models as dm  # noqa: E402
from skmpsae._inspect.images import BANDS, image_panels, read_sources  # noqa: E402
from skmpsae.activations import capture  # noqa: E402
from skmpsae.inspect import write_report  # noqa: E402

N_IMAGES = 40


def _captions():
    return [c for d in range(10) for c in dm.captions(d)[:3]]


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    """A tiny ViT and a tiny CLIP (4x4 patch grids over 28x28 digits), their captures, and SAEs."""
    root = tmp_path_factory.mktemp("vision")
    digits = load_mnist(scale=False).images[:: 5000 // N_IMAGES][:N_IMAGES]
    np.save(root / "digits.npy", digits)
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(**dm._vision_kwargs(16, 1, 7)))
    vit.save_pretrained(root / "vit")
    dm._image_processor().save_pretrained(root / "vit")
    tokenizer = dm._tokenizer()
    clip = transformers.CLIPModel(dm._clip_config(tokenizer, 16, 1, 7))
    for save in (clip.save_pretrained, tokenizer.save_pretrained):
        save(root / "clip")
    dm._image_processor().save_pretrained(root / "clip")
    (root / "captions.txt").write_text("\n".join(_captions()) + "\n")
    images = str(root / "digits.npy")
    patches = capture(str(root / "vit"), images=images, hookpoint="layers.0", output=root / "p.npy")
    img = capture(
        str(root / "clip"), images=images, hookpoint="image_embeds", output=root / "i.npy"
    )
    txt = capture(
        str(root / "clip"), texts=_captions(), hookpoint="text_embeds", output=root / "t.npy"
    )
    sae = MatchingPursuitSAE(24, n_nonzero_coefs=3, max_iter=3, random_state=0).fit(patches)
    both = np.concatenate([img, txt])
    vl = TopKSAE(24, n_nonzero_coefs=3, max_iter=5, random_state=0).fit(both)
    return root, sae, vl


def _naive_peaks(codes, items):
    peaks = np.zeros((items.max() + 1, codes.shape[1]))
    for r, j in enumerate(items):
        peaks[j] = np.maximum(peaks[j], codes[r])
    return peaks


def test_top_images_heat_maps_and_bands_match_a_naive_loop(vision):
    root, sae, _ = vision
    X, prov, _ = read_sources([root / "p.npy"])
    index, atoms = image_panels(sae, X, prov, images=root / "digits.npy", n_top=5, n_band=3)
    assert index["grid"] == [4, 4] and "modality" not in index
    items, rc = (
        prov.column("text"),
        np.stack([prov.column("patch_row"), prov.column("patch_col")], 1),
    )
    codes = sae.transform(np.asarray(X))
    peaks = _naive_peaks(codes, items)
    checked = 0
    for k, panel in enumerate(atoms):
        want = [j for j in np.argsort(-peaks[:, k], kind="stable")[:5] if peaks[j, k] > 0]
        assert [e["id"] for e in panel["top"]] == want
        if not want:
            continue
        peak = peaks[want[0], k]
        for e in panel["top"]:
            assert e["v"] == pytest.approx(peaks[e["id"], k], rel=1e-3)
            assert e["src"].startswith("data:image/png;base64,")
            heat = np.frombuffer(base64.b64decode(e["heat"]), dtype=np.uint8).reshape(4, 4)
            expect = np.zeros((4, 4))
            for r in np.flatnonzero(items == e["id"]):
                expect[rc[r, 0], rc[r, 1]] = np.rint(255 * np.clip(codes[r, k] / peak, 0, 1))
            np.testing.assert_array_equal(heat, expect)
            checked += 1
        for (lo, hi), band in zip(BANDS, panel["bands"], strict=True):
            assert (band["lo"], band["hi"]) == (lo, hi) and len(band["images"]) <= 3
            for e in band["images"]:
                assert e["id"] not in want
                assert lo * peak < peaks[e["id"], k] <= hi * peak + 1e-6
    assert checked > 0


def test_modality_score_and_top_texts_match_a_naive_loop(vision):
    root, _, vl = vision
    X, prov, _ = read_sources([root / "i.npy", root / "t.npy"])
    texts = _captions()
    index, atoms = image_panels(vl, X, prov, images=root / "digits.npy", texts=texts, n_top=4)
    codes = vl.transform(np.asarray(X))
    image_rows, text_rows = codes[:N_IMAGES], codes[N_IMAGES:]
    for k, panel in enumerate(atoms):
        mi, mt = np.abs(image_rows[:, k]).mean(), np.abs(text_rows[:, k]).mean()
        want = None if mi + mt == 0 else mi / (mi + mt)
        assert panel["modality"] == (None if want is None else pytest.approx(want, rel=1e-3))
        assert index["modality"][k] == panel["modality"]
        order = [j for j in np.argsort(-text_rows[:, k], kind="stable")[:4] if text_rows[j, k] > 0]
        assert [t["t"] for t in panel["texts"]] == [texts[j] for j in order]
        assert "heat" not in (panel["top"] or [{}])[0]  # one pooled row per image: no grid


def test_report_from_python_and_the_command_line(vision, tmp_path, capsys):
    root, sae, vl = vision
    # The capture's metadata names the image source: nothing more to pass.
    site = write_report(sae, root / "p.npy", tmp_path / "a")
    index = (site / "data" / "index.js").read_text()
    assert '"grid":[4,4]' in index and (site / "static" / "images.js").is_file()
    chunk = (site / "data" / "atoms_0000.js").read_text()
    assert '"vision":' in chunk and "data:image/png;base64," in chunk
    io.save(vl, tmp_path / "vl.safetensors")
    argv = ["report", str(tmp_path / "vl.safetensors"), "--acts", str(root / "i.npy")]
    argv += [str(root / "t.npy"), "--texts", str(root / "captions.txt"), "-o", str(tmp_path / "b")]
    assert main([*argv, "-q"]) == 0
    data = json.loads((tmp_path / "b" / "skmpsae-report.json").read_text())
    assert data["source"] == "i.npy + t.npy"
    assert '"modality":[' in (tmp_path / "b" / "data" / "index.js").read_text()
    assert "a handwritten" in (tmp_path / "b" / "data" / "atoms_0000.js").read_text()
    capsys.readouterr()
    bad = ["report", str(tmp_path / "vl.safetensors"), "--acts", str(root / "i.npy")]
    assert main([*bad, "--images", str(tmp_path / "none"), "-o", str(tmp_path / "c"), "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none" in err[0]
    assert not (tmp_path / "c").exists()
