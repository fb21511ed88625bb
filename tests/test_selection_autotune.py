"""The selection path measured on the machine (``selection_method="auto"``): the rule that picks
it, the memo and the opt-in cache file that remember it, ``skmpsae tune``, and a fit that takes
it, resumes on it and publishes it.

The timing rule is tested with set timings (``_timed`` returns given seconds, the selection
itself still runs), so that the chosen path does not depend on how loaded the machine is; the
codes and fits are real.
"""

import json

import numpy as np
import pytest
import torch

from skmpsae import MatchingPursuitSAE
from skmpsae import io as skio
from skmpsae._models import matching_pursuit as mp_model
from skmpsae._pursuit import autotune
from skmpsae._pursuit.selection import PATHS, _plan_mp, _select_mp

MAX_BYTES = 1 << 31


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    """Each test starts with no choice made: no memory of this process's earlier choices, and
    a cache directory of its own, where a test looks for the file or opts in to writing it."""
    monkeypatch.setenv("SKMPSAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(autotune.SAVE_VARIABLE, raising=False)
    monkeypatch.setattr(autotune, "_chosen", {})


@pytest.fixture
def saving(monkeypatch):
    """The user opted in: fits save what they measure in the cache file."""
    monkeypatch.setenv(autotune.SAVE_VARIABLE, "1")


def set_timings(monkeypatch, seconds):
    """Make path ``p`` take ``seconds[p]`` (the selection still runs); returns the call log."""
    calls = []

    def timed(device, fn):
        out = fn()
        # The path is the one _select_mp planned: read it back from the codes' call.
        path = calls_path[-1]
        calls.append(path)
        return out, seconds[path]

    calls_path = []
    real_select = autotune._select_mp

    def select(*args, method, **kwargs):
        calls_path.append(method)
        return real_select(*args, method=method, **kwargs)

    monkeypatch.setattr(autotune, "_timed", timed)
    monkeypatch.setattr(autotune, "_select_mp", select)
    return calls


def problem(n=48, n_components=40, n_features=12, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(n_components, n_features, generator=g, dtype=dtype)
    D /= D.norm(dim=1, keepdim=True)
    return torch.randn(n, n_features, generator=g, dtype=dtype), D


def favourite(X, D, k):
    plan = _plan_mp(X.shape[0], D.shape[0], X.shape[1], k, X.element_size(), X.device, MAX_BYTES)
    return min(plan.costs, key=plan.costs.get)


def test_the_fastest_path_wins_and_its_codes_are_returned(monkeypatch):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X, D = problem()
    slow = favourite(X, D, 5)
    fast = next(p for p in PATHS if p != slow)
    seconds = {p: 1.0 for p in PATHS} | {fast: 0.5}
    calls = set_timings(monkeypatch, seconds)
    indices, values, path, timed = autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    assert path == fast and timed == seconds
    # Every path timed once, the model's favourite last (warm).
    assert sorted(calls) == sorted(PATHS) and calls[-1] == slow
    ref_indices, ref_values, *_ = _select_mp(X, D, 5, method=fast, max_bytes=MAX_BYTES)
    assert torch.equal(indices, ref_indices) and torch.equal(values, ref_values)


def test_a_near_tie_keeps_the_cost_models_choice(monkeypatch):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X, D = problem()
    model = favourite(X, D, 5)
    # Another path 5% faster: within the switching margin (10%), so the model's choice stays.
    seconds = {p: 1.0 for p in PATHS} | {p: 0.95 for p in PATHS if p != model}
    set_timings(monkeypatch, seconds)
    assert autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)[2] == model


def test_a_single_candidate_is_not_timed_nor_written(monkeypatch):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", 1.0)
    X, D = problem()
    calls = set_timings(monkeypatch, {})
    _, _, path, timed = autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    assert (path, timed, calls) == (favourite(X, D, 5), {}, [])
    assert not autotune.cache_path().exists()


def test_without_opting_in_nothing_is_written_but_the_process_remembers(monkeypatch):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X, D = problem()
    fast = next(p for p in PATHS if p != favourite(X, D, 5))
    seconds = {p: 1.0 for p in PATHS} | {fast: 0.25}
    set_timings(monkeypatch, seconds)
    assert autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)[2] == fast
    assert not autotune.cache_path().parent.exists()
    # A second fit of these sizes in this process recalls the choice: nothing timed.
    calls = set_timings(monkeypatch, {})
    _, _, path, timed = autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    assert (path, timed, calls) == (fast, seconds, [])
    # A fit of an estimator writes nothing either.
    set_timings(monkeypatch, {"gram": 0.3, "rows": 0.2, "gemm": 0.1})
    assert sae().fit(data()).selection_method_ == "gemm"
    assert not autotune.cache_path().parent.exists()


@pytest.mark.parametrize(
    ("value", "saving"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("", False), ("0", False)],
)
def test_the_variable_opts_in(monkeypatch, value, saving):
    monkeypatch.setenv(autotune.SAVE_VARIABLE, value)
    assert autotune._saving() is saving


def test_tune_saves_the_choice_that_later_fits_recall(monkeypatch, capsys):
    from skmpsae.cli import main

    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    seconds = {"gram": 0.3, "rows": 0.1, "gemm": 0.2}
    set_timings(monkeypatch, seconds)
    # The sizes of sae()'s first batch on data(): 32 rows, 64 atoms, 16 features, k=2.
    argv = ["tune", "--n-components", "64", "--n-features", "16", "--n-nonzero-coefs", "2"]
    assert main([*argv, "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert ": rows (" in out and str(autotune.cache_path()) in out
    (entry,) = json.loads(autotune.cache_path().read_text())["entries"].values()
    assert entry == {"path": "rows", "seconds": seconds}
    # A new process reads the file: its fit times nothing and takes the saved path.
    monkeypatch.setattr(autotune, "_chosen", {})
    calls = set_timings(monkeypatch, {})
    model = sae().fit(data())
    assert (model.selection_method_, model.selection_seconds_, calls) == ("rows", seconds, [])
    # Bad input: one line on stderr, a non-zero exit.
    assert main([*argv, "--device", "gpu"]) == 1
    assert capsys.readouterr().err.strip().endswith("(cpu, cuda, cuda:N)")


def test_the_choice_is_recalled_from_the_file_without_timing(monkeypatch, saving):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X, D = problem()
    fast = next(p for p in PATHS if p != favourite(X, D, 5))
    seconds = {p: 1.0 for p in PATHS} | {fast: 0.25}
    set_timings(monkeypatch, seconds)
    autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    content = json.loads(autotune.cache_path().read_text())
    (key, entry), *others = content["entries"].items()
    assert not others and entry == {"path": fast, "seconds": seconds}
    assert f"K={D.shape[0]}" in key and "float64" in key and "threads=" in key
    # A new process (no memory of the choice) reads it back and times nothing.
    monkeypatch.setattr(autotune, "_chosen", {})
    calls = set_timings(monkeypatch, {})
    _, _, path, timed = autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    assert (path, timed, calls) == (fast, seconds, [])
    # Other sizes are another key: measured again.
    calls = set_timings(monkeypatch, seconds)
    autotune.measured_selection(X[:10], D, 5, max_bytes=MAX_BYTES)
    assert sorted(calls) == sorted(PATHS)


def test_a_damaged_or_unwritable_cache_costs_only_a_measurement(tmp_path, monkeypatch, saving):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X, D = problem()
    seconds = dict.fromkeys(PATHS, 1.0)
    cache = autotune.cache_path()
    cache.parent.mkdir(parents=True)
    cache.write_text('{"version": 1, "entries": {"trunc')
    calls = set_timings(monkeypatch, seconds)
    autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    assert len(calls) == len(PATHS)
    assert len(json.loads(cache.read_text())["entries"]) == 1  # rewritten whole
    # A cache directory that cannot be created (a file is in the way): the fit goes on.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("SKMPSAE_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(autotune, "_chosen", {})
    indices, _, path, _ = autotune.measured_selection(X, D, 5, max_bytes=MAX_BYTES)
    assert path in PATHS and indices.shape == (X.shape[0], 5)


# -- the estimator -----------------------------------------------------------------------------
def data(n=256, n_features=16, seed=0):
    rng = np.random.RandomState(seed)
    return (rng.rand(n, 4) @ rng.randn(4, n_features) + 0.1 * rng.randn(n, n_features)).astype(
        np.float32
    )


def sae(**params):
    # k=2 over 64 atoms and batches of 32: no Gram matrix in training, so a path is chosen.
    base = {
        "n_components": 64,
        "n_nonzero_coefs": 2,
        "batch_size": 32,
        "max_iter": 2,
        "random_state": 0,
        "device": "cpu",
    }
    return MatchingPursuitSAE(**{**base, **params})


def test_a_fit_takes_the_measured_path_and_publishes_it(monkeypatch, tmp_path):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X = data()
    seconds = {"gram": 0.3, "rows": 0.2, "gemm": 0.1}
    set_timings(monkeypatch, seconds)
    auto = sae().fit(X)
    assert auto.selection_method_ == "gemm" and auto.selection_seconds_ == seconds
    forced = sae(selection_method="gemm").fit(X)
    np.testing.assert_array_equal(auto.components_, forced.components_)
    assert auto.loss_curve_ == forced.loss_curve_
    assert forced.selection_method_ == "gemm" and forced.selection_seconds_ == {}
    # The record survives save and load.
    skio.save(auto, tmp_path / "m.safetensors")
    loaded = skio.load(tmp_path / "m.safetensors")
    assert (loaded.selection_method_, loaded.selection_seconds_) == ("gemm", seconds)


def test_small_dictionaries_take_the_gram_matrix_unmeasured(monkeypatch):
    calls = set_timings(monkeypatch, {})
    model = sae(n_components=8, n_nonzero_coefs=4).fit(data())
    assert (model.selection_method_, model.selection_seconds_, calls) == ("gram", {}, [])


def test_a_resumed_fit_continues_on_the_path_of_the_run_it_continues(monkeypatch, tmp_path, saving):
    """The path travels in the checkpoint: a resume where the timings would now choose
    another path (or where the cache is gone) still continues on the first run's path."""
    from skmpsae._train import checkpoint as _checkpoint

    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X = data()
    set_timings(monkeypatch, {"gram": 0.3, "rows": 0.1, "gemm": 0.2})
    straight = sae(max_iter=3).fit(X)
    assert straight.selection_method_ == "rows"
    directory, saved = tmp_path / "ckpt", []
    save = _checkpoint.save_checkpoint

    def keep_copy(*args):
        save(*args)
        saved.append((directory / "checkpoint.pt").read_bytes())

    monkeypatch.setattr(_checkpoint, "save_checkpoint", keep_copy)
    sae(max_iter=3).fit(X, checkpoint_dir=directory, checkpoint_every=5)
    monkeypatch.setattr(_checkpoint, "save_checkpoint", save)
    (directory / "checkpoint.pt").write_bytes(saved[1])  # mid-way through the first epoch
    monkeypatch.setattr(autotune, "_chosen", {})
    autotune.cache_path().unlink()
    set_timings(monkeypatch, {"gram": 0.3, "rows": 0.2, "gemm": 0.1})
    resumed = sae(max_iter=3).fit(X, checkpoint_dir=directory, resume=True)
    assert resumed.selection_method_ == "rows"
    np.testing.assert_array_equal(resumed.components_, straight.components_)
    assert resumed.loss_curve_ == straight.loss_curve_


def test_transform_without_a_cached_gram_takes_the_measured_path(monkeypatch):
    monkeypatch.setattr(autotune, "_CANDIDATE_RATIO", float("inf"))
    X = data()
    set_timings(monkeypatch, {"gram": 0.3, "rows": 0.2, "gemm": 0.1})
    # 64 x 64 float32 Gram matrix: 16 KiB, more than half of a 20 KiB budget: not cached.
    model = sae(cache_size=20 / 1024).fit(X)
    methods = []
    real = mp_model._select_mp

    def recording(*args, method="auto", **kwargs):
        methods.append(method)
        return real(*args, method=method, **kwargs)

    monkeypatch.setattr(mp_model, "_select_mp", recording)
    codes = model.transform(X)
    assert methods == ["gemm"]
    # With the Gram matrix cached (the default budget), transform leaves it to the model.
    model.set_params(cache_size=2048)
    np.testing.assert_allclose(model.transform(X), codes, rtol=1e-5, atol=1e-6)
    assert methods == ["gemm", "auto"]


def test_bad_selection_methods_are_refused():
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="selection_method"):
        sae(selection_method="fastest").fit(data())
    # The whole Gram matrix forced where it cannot fit the budget: the message says so.
    with pytest.raises(ValueError, match=r"selection_method='gram' needs; raise cache_size"):
        sae(selection_method="gram", cache_size=20 / 1024).fit(data())
