"""``skmpsae evaluate --probing/--labels/--absorption/--detection`` on a capture-like file."""

import json

import joblib
import numpy as np
import pytest

from skmpsae import MatchingPursuitSAE
from skmpsae.cli import main

LETTER_WORDS = [f" {a}{b}" for a in "abcd" for b in ("ge", "ny", "rt", "ox", "ul", "im")]
WORDS = [*LETTER_WORDS, " .", "s", " 42"]


@pytest.fixture
def capture(tmp_path):
    """40 texts of 30 tokens, their rows, provenance and vocabulary, and a fitted model."""
    rng = np.random.RandomState(0)
    n_texts, length = 40, 30
    ids = rng.randint(0, len(WORDS), n_texts * length)
    X = 0.1 * rng.randn(ids.size, 12).astype(np.float32)
    for i, word in enumerate(WORDS):
        X[ids == i, i % 8] += 2.0  # each token its direction
        if word in LETTER_WORDS:
            X[ids == i, 8 + "abcd".index(word[1])] += 1.0  # and its first letter's
    acts = tmp_path / "acts.npy"
    np.save(acts, X)
    table = np.stack(
        [np.repeat(np.arange(n_texts), length), np.tile(np.arange(length), n_texts), ids], axis=1
    ).astype(np.int32)
    np.save(str(acts) + ".tokens.npy", table)
    vocab = {str(i): word for i, word in enumerate(WORDS)}
    (tmp_path / "acts.npy.vocab.json").write_text(json.dumps({"tokenizer": "t", "vocab": vocab}))
    model = tmp_path / "model.joblib"
    sae = MatchingPursuitSAE(16, n_nonzero_coefs=3, max_iter=3, random_state=0).fit(X)
    joblib.dump(sae, model)
    return model, acts, X, table


def _evaluate(capsys, *args):
    rc = main(["evaluate", *map(str, args), "--no-splice", "-q"])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line(err, *fragments):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_every_test_in_one_run(capture, capsys):
    model, acts, X, _ = capture
    rc, out, err = _evaluate(
        capsys,
        model,
        acts,
        "--probing",
        "word-start,position,punctuation",
        "--probing-k",
        "1,5",
        "--absorption",
        "--detection",
        "4",
        "--json",
    )
    assert rc == 0, err
    result = json.loads(out)
    assert set(result["probing"]) == {"word-start", "position", "punctuation"}
    for probe in result["probing"].values():
        assert probe["k"] == [1, 5] and all(0 <= a <= 1 for a in probe["accuracy"])
        assert 0.5 <= probe["dense_accuracy"] <= 1
    # Every " ." row and no other is punctuation; the token's own direction separates them.
    assert result["probing"]["punctuation"]["dense_accuracy"] == 1.0
    assert 0 <= result["absorption"]["mean_absorption_fraction"] <= 1
    assert result["detection"]["n_latents"] == 4
    rc, out, err = _evaluate(capsys, model, acts, "--probing", "digit")
    assert rc == 0 and "probing digit" in out and "dense" in out


def test_labels_by_text_and_by_row(capture, capsys, tmp_path):
    model, acts, X, table = capture
    by_text = tmp_path / "labels.csv"
    by_text.write_text("text,label\n" + "".join(f"{t},{t % 2}\n" for t in range(40)))
    rc, out, err = _evaluate(capsys, model, acts, "--labels", by_text, "--json")
    assert rc == 0, err
    assert json.loads(out)["probing"]["labels.csv"]["n_classes"] == 2
    by_row = tmp_path / "rows.jsonl"
    by_row.write_text(
        "".join(json.dumps({"row": r, "label": int(table[r, 2] < 6)}) + "\n" for r in range(600))
    )
    rc, out, err = _evaluate(capsys, model, acts, "--labels", by_row, "--json")
    assert rc == 0, err
    assert json.loads(out)["probing"]["rows.jsonl"]["dense_accuracy"] == 1.0


def test_one_clear_line_for_each_error(capture, capsys, tmp_path):
    model, acts, X, _ = capture
    rc, _, err = _evaluate(capsys, model, acts, "--probing", "capitalised")
    assert rc == 1
    _one_line(err, "--probing capitalised", "one class for this tokenizer")

    bare = tmp_path / "bare.npy"
    np.save(bare, X)
    rc, _, err = _evaluate(capsys, model, bare, "--probing", "first-letter")
    assert rc == 1
    _one_line(err, "--probing first-letter", "has no provenance")
    rc, _, err = _evaluate(capsys, model, bare, "--absorption")
    _one_line(err, "--absorption", "has no provenance")

    rows = tmp_path / "rows.csv"
    rows.write_text("row,label\n0,a\n1,b\n5000,a\n")
    rc, _, err = _evaluate(capsys, model, acts, "--labels", rows)
    assert rc == 1
    _one_line(err, "--labels", "row 5000 is not a row", "do not belong to these activations")
    texts = tmp_path / "texts.csv"
    texts.write_text("text,label\n0,a\n1,b\n99,a\n")
    rc, _, err = _evaluate(capsys, model, acts, "--labels", texts)
    _one_line(err, "--labels", "text 99 has no row")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label\n0,a\n")
    rc, _, err = _evaluate(capsys, model, acts, "--labels", bad)
    _one_line(err, "needs a 'label' column and a 'row' or 'text' column")


def test_unknown_task_is_an_argument_error(capture, capsys):
    model, acts, _, _ = capture
    assert main(["evaluate", str(model), str(acts), "--probing", "colour"]) == 2
    _one_line(capsys.readouterr().err, "--probing: unknown task colour")
