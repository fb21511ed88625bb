"""The ``skmpsae`` command line: real runs in subprocesses, error paths in process."""

import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from scipy import sparse

from skmpsae import MatchingPursuitSAE, ReLUSAE, TopKSAE
from skmpsae.cli import main

FIT_ARGS = [
    "--n-components",
    "12",
    "--k",
    "3",
    "--max-iter",
    "3",
    "--batch-size",
    "128",
    "--random-state",
    "0",
    "--device",
    "cpu",
]


@pytest.fixture
def data_file(tmp_path):
    X = np.random.RandomState(0).rand(700, 10).astype(np.float32)
    path = tmp_path / "data.npy"
    np.save(path, X)
    return path, X


def _run_cli(*args, script=False):
    if script:
        executable = Path(sys.executable).with_name("skmpsae")
        if not executable.exists():
            pytest.skip("the skmpsae console script is not installed next to this Python")
        command = [str(executable), *args]
    else:
        command = [sys.executable, "-m", "skmpsae", *args]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env=env, check=False
    )


def _assert_one_line_error(stderr, *fragments):
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("skmpsae")
    for fragment in fragments:
        assert fragment in lines[0]


def test_fit_then_encode_in_subprocesses(data_file, tmp_path):
    path, X = data_file
    model_path, codes_path = tmp_path / "model.joblib", tmp_path / "codes.npz"
    fit = _run_cli("fit", str(path), *FIT_ARGS, "-o", str(model_path))
    assert fit.returncode == 0, fit.stderr
    assert "3/3" in fit.stderr  # the progress bar (or plain lines) reached the last epoch
    assert "saved to" in fit.stdout
    model = joblib.load(model_path)
    assert isinstance(model, MatchingPursuitSAE)
    assert model.components_.shape == (12, 10) and model.n_iter_ == 3
    assert model.verbose == 0 and model.callback is None  # the progress hook is not saved

    encode = _run_cli(
        "encode",
        str(model_path),
        str(path),
        "-o",
        str(codes_path),
        "--chunk-size",
        "256",
        script=True,
    )
    assert encode.returncode == 0, encode.stderr
    codes = sparse.load_npz(codes_path)
    assert sparse.isspmatrix_csr(codes) or isinstance(codes, sparse.csr_array)
    assert codes.shape == (700, 12) and codes.dtype == np.float32
    np.testing.assert_allclose(codes.toarray(), model.transform(X), rtol=1e-6, atol=1e-7)
    assert np.diff(codes.indptr).max() <= 3


def test_missing_file_in_subprocess_is_one_line(tmp_path):
    result = _run_cli("fit", str(tmp_path / "absent.npy"), "-o", str(tmp_path / "m.joblib"))
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, "absent.npy", "no such file")


def test_cli_fit_is_the_python_fit(data_file, tmp_path, capsys):
    path, X = data_file
    assert (
        main(
            [
                "fit",
                str(path),
                "--model",
                "relu",
                "--alpha",
                "0.3",
                *FIT_ARGS[:2],
                *FIT_ARGS[4:],
                "-q",
                "-o",
                str(tmp_path / "m.joblib"),
            ]
        )
        == 0
    )
    fitted = joblib.load(tmp_path / "m.joblib")
    expected = ReLUSAE(
        n_components=12, alpha=0.3, max_iter=3, batch_size=128, random_state=0, device="cpu"
    ).fit(X)
    np.testing.assert_array_equal(fitted.components_, expected.components_)
    np.testing.assert_array_equal(fitted.encoder_weights_, expected.encoder_weights_)
    assert capsys.readouterr().err == ""  # --quiet


def test_param_sets_any_other_estimator_parameter(data_file, tmp_path):
    path, X = data_file
    out = tmp_path / "m.joblib"
    params = ["--param", "min_cosine=0.1", "--param", "selection_method=rows"]
    assert main(["fit", str(path), *FIT_ARGS, *params, "-q", "-o", str(out)]) == 0
    fitted = joblib.load(out)
    assert (fitted.min_cosine, fitted.selection_method) == (0.1, "rows")
    expected = MatchingPursuitSAE(
        n_components=12,
        n_nonzero_coefs=3,
        max_iter=3,
        batch_size=128,
        random_state=0,
        device="cpu",
        min_cosine=0.1,
        selection_method="rows",
    ).fit(X)
    np.testing.assert_array_equal(fitted.components_, expected.components_)


def test_plain_epoch_lines_without_tqdm(data_file, tmp_path, capsys, monkeypatch):
    path, _ = data_file
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    assert main(["fit", str(path), *FIT_ARGS, "-o", str(tmp_path / "m.joblib")]) == 0
    err = capsys.readouterr().err
    epoch_lines = [line for line in err.splitlines() if " epoch " in line]
    assert [line.split(":")[0] for line in epoch_lines] == [
        f"MatchingPursuitSAE epoch {i}/3" for i in (1, 2, 3)
    ]
    model = joblib.load(tmp_path / "m.joblib")
    # The lines come from the per-epoch callback: the last one carries the final numbers.
    assert epoch_lines[-1].endswith(
        f"loss {model.loss_curve_[-1]:.5f}, dead atoms {model.n_dead_components_}/12, "
        + epoch_lines[-1].rsplit(", ", 1)[1]
    )


@pytest.mark.parametrize(
    "model, Estimator", [("mp", MatchingPursuitSAE), ("topk", TopKSAE), ("relu", ReLUSAE)]
)
def test_fit_takes_its_defaults_from_the_estimator(data_file, tmp_path, model, Estimator):
    path, _ = data_file
    out = tmp_path / "m.joblib"
    assert (
        main(
            [
                "fit",
                str(path),
                "--model",
                model,
                "--max-iter",
                "1",
                "--device",
                "cpu",
                "--random-state",
                "0",
                "-q",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    params = joblib.load(out).get_params()
    defaults = Estimator().get_params()
    for name in ("max_iter", "device", "random_state"):
        params.pop(name), defaults.pop(name)
    assert params == defaults


def test_non_float_data_is_converted(tmp_path, capsys):
    X = np.random.RandomState(1).randint(0, 256, size=(300, 8)).astype(np.uint8)
    np.save(tmp_path / "pixels.npy", X)
    model = tmp_path / "m.joblib"
    assert main(["fit", str(tmp_path / "pixels.npy"), *FIT_ARGS, "-o", str(model)]) == 0
    assert "converting it to float32 in memory" in capsys.readouterr().err
    assert (
        main(
            [
                "encode",
                str(model),
                str(tmp_path / "pixels.npy"),
                "-q",
                "-o",
                str(tmp_path / "codes.npz"),
            ]
        )
        == 0
    )
    codes = sparse.load_npz(tmp_path / "codes.npz")
    expected = joblib.load(model).transform(X.astype(np.float32))
    np.testing.assert_allclose(codes.toarray(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["fit", "{data}", "--n-components", "0", "-o", "m.joblib"], "positive integer"),
        (["fit", "{data}", "--model", "pca", "-o", "m.joblib"], "invalid choice"),
        (["fit", "{data}", "--bogus", "-o", "m.joblib"], "unrecognized arguments"),
        (["fit", "{data}"], "-o/--output"),
        (["fit", "{data}", "--model", "relu", "--k", "4", "-o", "m.joblib"], "--alpha"),
        (["fit", "{data}", "--alpha", "1", "-o", "m.joblib"], "relu only"),
        (["fit", "{data}", "--learning-rate", "nan", "-o", "m.joblib"], "positive number"),
        (["compare", "--models", "mp,pca"], "--models"),
        (["fit", "{data}", "--param", "min_cosine", "-o", "m.joblib"], "NAME=VALUE"),
        (["fit", "{data}", "--param", "k=3", "-o", "m.joblib"], "has no parameter 'k'"),
        (["fit", "{data}", "--param", "n_components=3", "-o", "m.joblib"], "use --n-components"),
        (["fit", "{data}", "--param", "min_cosine=2", "-o", "m.joblib"], "'min_cosine' parameter"),
        (["fit", "{data}", "--param", "tol=1", "--param", "tol=2", "-o", "m.joblib"], "twice"),
    ],
)
def test_usage_errors_exit_2(argv, fragment, data_file, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([a.format(data=data_file[0]) for a in argv]) == 2
    _assert_one_line_error(capsys.readouterr().err, fragment)


def test_runtime_errors_exit_1(data_file, tmp_path, capsys):
    path, _ = data_file
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2), dtype=np.float32))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    np.savez(tmp_path / "archive.npz", X=np.zeros((3, 2)))
    (tmp_path / "garbage.npy").write_bytes(b"not an array")
    np.save(tmp_path / "other_width.npy", np.zeros((5, 4), dtype=np.float32))
    out = str(tmp_path / "m.joblib")
    cases = [
        (["fit", str(tmp_path / "cube.npy"), "-o", out], "expected a 2-D array"),
        (["fit", str(tmp_path / "objects.npy"), "-o", out], "of Python objects"),
        (["fit", str(tmp_path / "text.npy"), "-o", out], "expected real numbers"),
        (["fit", str(tmp_path / "archive.npz"), "-o", out], "got a .npz archive"),
        (["fit", str(tmp_path / "garbage.npy"), "-o", out], "a text file, not a .npy array"),
        (["fit", str(path), "-o", str(tmp_path / "no" / "m.joblib")], "no such directory"),
        (["fit", str(path), "--device", "tpu", "-o", out], "not a valid torch device"),
        (["encode", str(path), str(path), "-o", "c.npz"], "a numpy array, not a model"),
        (["encode", out, str(path), "-o", "c.npz"], "no such file"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 1, argv
        _assert_one_line_error(capsys.readouterr().err, fragment)
    assert main(["fit", str(path), *FIT_ARGS, "-q", "-o", out]) == 0
    capsys.readouterr()
    assert main(["encode", out, str(tmp_path / "other_width.npy"), "-o", "c.npz"]) == 1
    _assert_one_line_error(capsys.readouterr().err, "has 4 features", "fitted on 10")


def test_compare_prints_one_table_and_a_figure(tmp_path, capsys):
    png = tmp_path / "compare.png"
    argv = [
        "compare",
        "--data",
        "digits",
        "--n-components",
        "24",
        "--k",
        "4",
        "--max-iter",
        "4",
        "--alpha",
        "0.5",
        "--device",
        "cpu",
        "--plot",
        str(png),
        "-q",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line
        for line in out.splitlines()
        if line.split() and line.split()[0].endswith(("SAE", "Learning"))
    }
    assert set(rows) == {
        "MatchingPursuitSAE",
        "TopKSAE",
        "BatchTopKSAE",
        "MatryoshkaSAE",
        "JumpReLUSAE",
        "ReLUSAE",
        "MiniBatchDictionaryLearning",
    }
    assert "alpha=0.5, L0 emergent" in rows["ReLUSAE"]
    assert "L0 emergent" in rows["JumpReLUSAE"]
    for name, line in rows.items():
        r2, l0, dead, seconds = line.split()[-4:]
        assert float(r2) <= 1.0 and float(seconds) >= 0 and dead.endswith("/24"), line
        # Four epochs are too few for a penalty's warm-up to settle; BatchTopK keeps k per
        # sample on average, not at most.
        if name in ("MatchingPursuitSAE", "TopKSAE", "MiniBatchDictionaryLearning"):
            assert 0.0 < float(r2) and float(l0) <= 4.0, line
    assert "1438 train / 359 held out" in out
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize("model", ["mp", "topk"])
def test_estimator_warnings_reach_stderr_in_the_flags_spelling(model, data_file, tmp_path, capsys):
    import warnings

    path, _ = data_file
    argv = ["fit", str(path), "--model", model, "--n-components", "8", "--k", "20"]
    argv += ["--max-iter", "1", "-q", "-o", str(tmp_path / "m.joblib")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what a caller set does not hide a command's warnings
        assert main(argv) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("skmpsae fit: warning: ")
    assert "--k 20 is larger than --n-components 8" in lines[0]


def test_cli_spelling_replaces_whole_parameter_names_only():
    from skmpsae._cli.spelling import _cli_spelling

    spelling = {"n_nonzero_coefs": "--k", "batch_size": "--sae-batch-size"}
    message = "n_nonzero_coefs=5 and transform_n_nonzero_coefs=5, batch_size=3 (x.batch_size=3)"
    assert _cli_spelling(message, spelling) == (
        "--k 5 and transform_n_nonzero_coefs=5, --sae-batch-size 3 (x.batch_size=3)"
    )
