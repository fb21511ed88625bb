"""modality_scores against a naive loop, and the modality summary of several row files (fit
and evaluate on the command line)."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from skmpsae import MatchingPursuitSAE, TopKSAE
from skmpsae.inspect import modality_scores

RNG = np.random.RandomState(0)
X_IMAGE = RNG.rand(300, 8).astype(np.float32)
X_TEXT = (RNG.rand(30, 8) + np.eye(8)[RNG.randint(0, 8, 30)]).astype(np.float32)


@pytest.mark.parametrize("cls", [TopKSAE, MatchingPursuitSAE])
def test_modality_scores_equal_a_naive_loop(cls):
    sae = cls(n_components=24, n_nonzero_coefs=2, max_iter=3, random_state=0)
    sae.fit(np.vstack([X_IMAGE, X_TEXT]))
    result = modality_scores(sae, X_IMAGE, X_TEXT, chunk_size=7)
    codes_image, codes_text = np.abs(sae.transform(X_IMAGE)), np.abs(sae.transform(X_TEXT))
    expected, bimodal, firing = [], 0, 0
    for j in range(24):
        image = sum(codes_image[i, j] for i in range(len(X_IMAGE))) / len(X_IMAGE)
        text = sum(codes_text[i, j] for i in range(len(X_TEXT))) / len(X_TEXT)
        if image + text == 0:
            expected.append(np.nan)
            continue
        expected.append(image / (image + text))
        firing += 1
        bimodal += 0.1 <= expected[-1] <= 0.9
    np.testing.assert_allclose(result.scores, expected, rtol=1e-6)
    assert result.n_firing == firing and result.bimodal_fraction == pytest.approx(bimodal / firing)
    np.testing.assert_allclose(result.image_mass, codes_image.mean(axis=0), rtol=1e-5)


def test_modality_scores_weigh_each_modality_per_row():
    """An atom as strong on one caption as on each of 100 patches scores 0.5."""

    class Fixed(BaseEstimator):  # codes equal to the rows: masses known by hand
        def fit(self, X):
            self.components_ = np.eye(2)
            return self

        def transform(self, X):
            return np.asarray(X, dtype=float)

    image = np.tile([[1.0, 0.0]], (100, 1))
    text = np.array([[1.0, 0.0], [0.0, 0.0]])
    est = Fixed().fit(None)
    with pytest.raises(ValueError, match="no atom fires"):
        modality_scores(est, np.zeros((3, 2)), np.zeros((2, 2)))
    result = modality_scores(est, image, text)
    assert result.scores[0] == pytest.approx(1 / 1.5) and np.isnan(result.scores[1])
    assert result.n_firing == 1 and result.bimodal_fraction == 1.0
    with pytest.raises(ValueError, match="X_text has no rows"):
        modality_scores(est, image, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="X_image has 3 features"):
        modality_scores(est, np.zeros((4, 3)), text)


def test_fit_and_evaluate_image_and_text_rows(tmp_path, capsys):
    """The command-line path of the paper's vision-language analysis on a tiny CLIP: capture
    each tower's projected embeddings, train one SAE on both files, evaluate both."""
    import json
    import warnings

    pytest.importorskip("transformers")
    from _vision_models import CAPTIONS, build
    from skmpsae import io
    from skmpsae.cli import main

    build("clip", tmp_path / "clip")
    images, texts = tmp_path / "i.npy", tmp_path / "t.npy"
    base = ["capture", str(tmp_path / "clip"), "-o"]
    assert (
        main(
            [
                *base,
                str(images),
                "--images",
                "mnist",
                "--hookpoint",
                "image_embeds",
                "--batch-size",
                "1000",
                "-q",
            ]
        )
        == 0
    )
    (tmp_path / "c.txt").write_text("\n".join(CAPTIONS * 40) + "\n")
    assert (
        main(
            [
                *base,
                str(texts),
                "--texts",
                str(tmp_path / "c.txt"),
                "--hookpoint",
                "text_embeds",
                "-q",
            ]
        )
        == 0
    )
    model = tmp_path / "m.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "another place" warning for its own sources
        assert (
            main(
                f"fit {images} {texts} --model topk --n-components 32 --k 4 --max-iter 2 "
                f"--random-state 0 -o {model}".split()
            )
            == 0
        )
        out = capsys.readouterr()
        sae = io.load(model)
        sources = sae.provenance_["sources"]
        assert [s["hookpoint"] for s in sources] == ["image_embeds", "text_embeds"]
        assert [s["modality"] for s in sources] == ["image", "text"]
        assert sae.n_features_in_ == 16 and " on 5200 x 16 (float32) from " in out.err + out.out
        assert main(["info", str(model)]) == 0
        described = capsys.readouterr().out
        assert f"from {images}: 5000 image rows at image_embeds" in described
        assert f"from {texts}: 200 text rows at text_embeds" in described
        assert main(["evaluate", str(model), str(images), str(texts), "--json", "-q"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert main(["evaluate", str(model), str(images), "--no-splice", "-q"]) == 0
    X_image, X_text = np.load(images), np.load(texts)
    expected = modality_scores(sae, X_image, X_text)
    summary = result["modality"]
    assert (summary["n_image_rows"], summary["n_text_rows"]) == (5000, 200)
    assert summary["bimodal_fraction"] == pytest.approx(expected.bimodal_fraction)
    assert summary["n_firing"] == expected.n_firing
    assert main(["evaluate", str(model), str(images), str(texts), "-q"]) == 0
    assert "bimodal (image share in [0.1, 0.9])" in capsys.readouterr().out


def test_fit_several_files_holds_out_the_tail_of_each(tmp_path, capsys):
    from skmpsae import io
    from skmpsae.cli import main

    np.save(tmp_path / "a.npy", X_IMAGE)
    np.save(tmp_path / "b.npy", X_TEXT)
    model = tmp_path / "m.safetensors"
    argv = ["fit", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--model", "topk"]
    argv += ["--k", "2", "--max-iter", "1", "--validation-fraction", "0.2", "-q", "-o"]
    assert main([*argv, str(model)]) == 0
    held = io.load(model).provenance_["held_out"]
    assert held["n_rows"] == 60 + 6  # the last fifth of each file's rows
    np.save(tmp_path / "c.npy", X_IMAGE[:, :5])
    assert (
        main(["fit", str(tmp_path / "a.npy"), str(tmp_path / "c.npy"), "-q", "-o", str(model)]) != 0
    )
    assert "c.npy: has 5 features, but" in capsys.readouterr().err
