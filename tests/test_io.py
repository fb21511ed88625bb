"""skmpsae.io: safe safetensors files, and the SAELens and sparsify layouts read and written
without those packages (tests/test_interop.py checks them against the real packages)."""

import json
import pickle
import struct

import joblib
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from _helpers import ESTIMATOR_CLASSES, estimator_factory
from skmpsae import BatchTopKSAE, JumpReLUSAE, MatchingPursuitSAE, ReLUSAE, TopKSAE
from skmpsae.cli import main

pytest.importorskip("safetensors")
from skmpsae import io

_make = estimator_factory(n_components=24, n_nonzero_coefs=4, max_iter=3, random_state=0)
# ReLU's L1 weight; JumpReLU keeps its own default L0 weight.
ESTIMATORS = {
    name: (lambda name=name: _make(name, **({"alpha": 0.5} if name == "relu" else {})))
    for name in ESTIMATOR_CLASSES
}


@pytest.fixture(scope="module")
def X():
    rng = np.random.RandomState(0)
    return (rng.randn(300, 10) @ rng.randn(10, 10) + 2.0).astype(np.float32)


@pytest.fixture(scope="module")
def fitted(X):
    return {name: make().fit(X) for name, make in ESTIMATORS.items()}


def _rewrite_header(path, edit):
    """Apply ``edit`` to the JSON header of a safetensors file (keeps the tensor bytes)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])


def _edit_skmpsae(edit):
    def apply(header):
        inner = json.loads(header["__metadata__"]["skmpsae"])
        edit(inner)
        header["__metadata__"]["skmpsae"] = json.dumps(inner)

    return apply


# -- save / load -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(ESTIMATORS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_encodes_identically(name, dtype, X, tmp_path):
    estimator = ESTIMATORS[name]().fit(X.astype(dtype))
    loaded = io.load(io.save(estimator, tmp_path / "m.safetensors"))
    assert type(loaded) is type(estimator)
    assert loaded.get_params() == estimator.get_params()
    _assert_same_fitted_attributes(loaded, estimator)
    for attr, _ in type(estimator)._published_params.values():
        assert np.asarray(getattr(loaded, attr)).dtype == dtype
    Xd = X.astype(dtype)
    np.testing.assert_array_equal(loaded.transform(Xd), estimator.transform(Xd))
    assert loaded.transform(Xd).dtype == dtype


def _assert_same_fitted_attributes(loaded, estimator):
    """Every public fitted attribute (name ending in "_"), with its type and value."""

    def public(obj):
        return {k: v for k, v in vars(obj).items() if k.endswith("_") and not k.startswith("_")}

    expected, got = public(estimator), public(loaded)
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        assert type(got[name]) is type(value), name
        if isinstance(value, (np.ndarray, np.generic)):
            assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
            np.testing.assert_array_equal(got[name], value)
        else:
            assert got[name] == value, name


@pytest.mark.parametrize("name", ["batchtopk", "matryoshka", "jumprelu"])
def test_early_stopping_scores_and_prefix_sizes_survive(name, X, tmp_path):
    estimator = ESTIMATORS[name]().set_params(early_stopping=True, validation_fraction=0.2)
    if name == "matryoshka":  # a list, and an array, come back as given
        estimator.set_params(prefix_sizes=[6, 12])
    estimator.fit(X)
    assert len(estimator.validation_scores_) == 3
    loaded = io.load(io.save(estimator, tmp_path / "m.safetensors"))
    _assert_same_fitted_attributes(loaded, estimator)
    if name == "matryoshka":
        assert loaded.prefix_sizes_ == (6, 12, 24) and loaded.prefix_sizes == [6, 12]
        estimator.set_params(prefix_sizes=np.array([6, 12]))
        loaded = io.load(io.save(estimator, tmp_path / "a.safetensors"))
        assert loaded.prefix_sizes.dtype == np.array([6, 12]).dtype
        np.testing.assert_array_equal(loaded.prefix_sizes, [6, 12])
    np.testing.assert_array_equal(loaded.transform(X), estimator.transform(X))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_partial_fit_after_load_equals_partial_fit_after_joblib(name, fitted, X, tmp_path):
    estimator = fitted[name]
    joblib.dump(estimator, tmp_path / "m.joblib")
    from_pickle = joblib.load(tmp_path / "m.joblib")
    # A pickle also keeps the Adam moments; the safetensors file keeps the model only, so the
    # two continue alike once the pickle's optimiser state is dropped.
    assert from_pickle.__dict__.pop("_trainer_state", None) is not None
    from_pickle.partial_fit(X)
    from_file = io.load(io.save(estimator, tmp_path / "m.safetensors")).partial_fit(X)
    np.testing.assert_array_equal(from_file.components_, from_pickle.components_)
    assert from_file.n_iter_ == estimator.n_iter_ + 1


def test_feature_names_and_dict_init_survive(X, tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    init = np.random.RandomState(1).randn(24, 10)
    estimator = TopKSAE(24, n_nonzero_coefs=4, max_iter=2, dict_init=init, random_state=0)
    loaded = io.load(io.save(estimator.fit(frame), tmp_path / "m.safetensors"))
    np.testing.assert_array_equal(loaded.feature_names_in_, estimator.feature_names_in_)
    np.testing.assert_array_equal(loaded.dict_init, init)
    np.testing.assert_array_equal(loaded.transform(frame), estimator.transform(frame))


def test_random_state_instance_is_saved_as_none_with_a_warning(X, tmp_path):
    estimator = ReLUSAE(8, max_iter=1, random_state=np.random.RandomState(0)).fit(X)
    with pytest.warns(UserWarning, match="RandomState instance"):
        path = io.save(estimator, tmp_path / "m.safetensors")
    assert io.load(path).random_state is None
    estimator.set_params(random_state=0, callback=print)
    with pytest.warns(UserWarning, match="callback"):
        path = io.save(estimator, tmp_path / "m.safetensors")
    assert io.load(path).callback is None


def test_save_refuses_unfitted_and_foreign_objects(tmp_path):
    with pytest.raises(NotFittedError):
        io.save(TopKSAE(), tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="takes a fitted skmpsae estimator .*JumpReLUSAE"):
        io.save(object(), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_load_bad_files_give_one_clear_error(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.load(tmp_path / "missing.safetensors")
    good = io.save(fitted["topk"], tmp_path / "good.safetensors")
    raw = good.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[:-100])
    with pytest.raises(ValueError, match="truncated, corrupted"):
        io.load(truncated)

    flipped = tmp_path / "flipped.safetensors"
    data = bytearray(raw)
    data[-5] ^= 0xFF  # one byte of the last tensor
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        io.load(flipped)

    text = tmp_path / "text.safetensors"
    text.write_text("hello, not a model")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        io.load(text)


def test_load_never_unpickles(tmp_path):
    sentinel = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(sentinel), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="a pickle .*, not a safetensors file"):
        io.load(path)
    assert not sentinel.exists()


def test_load_tampered_header_or_other_architecture(fitted, tmp_path):
    path = io.save(fitted["mp"], tmp_path / "mp.safetensors")
    _rewrite_header(path, _edit_skmpsae(lambda h: h.update(estimator="TopKSAE")))
    with pytest.raises(ValueError, match="invalid hyper-parameters for TopKSAE"):
        io.load(path)
    topk_params = TopKSAE(24).get_params()
    _rewrite_header(path, _edit_skmpsae(lambda h: h.update(params=topk_params)))
    with pytest.raises(ValueError, match="another architecture"):
        io.load(path)

    path = io.save(fitted["topk"], tmp_path / "topk.safetensors")
    _rewrite_header(path, _edit_skmpsae(lambda h: h["params"].update(n_components=30)))
    with pytest.raises(ValueError, match=r"shape \(24, 10\), but the config implies \(30, 10\)"):
        io.load(path)

    path = io.save(fitted["topk"], tmp_path / "bad_param.safetensors")
    _rewrite_header(path, _edit_skmpsae(lambda h: h["params"].update(n_nonzero_coefs=-1)))
    with pytest.raises(ValueError, match="invalid hyper-parameters"):
        io.load(path)

    path = io.save(fitted["matryoshka"], tmp_path / "fitted.safetensors")
    for bad in (
        {"__class__": 1},
        {"prefix_sizes_": {"array": [1], "dtype": "O"}},
        {"prefix_sizes_": {"eval": "1"}},
    ):
        _rewrite_header(path, _edit_skmpsae(lambda h, bad=bad: h["attributes"].update(fitted=bad)))
        with pytest.raises(ValueError, match="header is damaged"):
            io.load(path)

    path = io.save(fitted["topk"], tmp_path / "unknown.safetensors")
    _rewrite_header(path, _edit_skmpsae(lambda h: h.update(estimator="Pickle")))
    with pytest.raises(ValueError, match="unknown estimator 'Pickle'"):
        io.load(path)

    sl = io.to_saelens(fitted["topk"], tmp_path / "sl")
    with pytest.raises(ValueError, match="not an SAE saved by skmpsae.io.save"):
        io.load(sl / "sae_weights.safetensors")


# -- SAELens and sparsify layouts, by their documented semantics ---------------------------------
def _saelens_encode(cfg, w, X):
    """SAELens 6's encode, written out: sae_in = x - b_dec; pre = sae_in @ W_enc + b_enc."""
    pre = (X - w["b_dec"] * cfg["apply_b_dec_to_input"]) @ w["W_enc"] + w["b_enc"]
    if cfg["architecture"] == "standard":
        return np.maximum(pre, 0)
    if cfg["architecture"] == "jumprelu":
        return np.maximum(pre, 0) * (pre > w["threshold"])
    out = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1, kind="stable")[:, : cfg["k"]]
    np.put_along_axis(out, top, np.maximum(np.take_along_axis(pre, top, 1), 0), 1)
    return out


@pytest.mark.parametrize("name", ["topk", "relu", "batchtopk", "matryoshka", "jumprelu"])
def test_to_saelens_files_encode_like_the_estimator(name, fitted, X, tmp_path):
    from safetensors.numpy import load_file

    estimator = fitted[name]
    directory = io.to_saelens(estimator, tmp_path / "sl", hook_name="blocks.3.hook_resid_post")
    cfg = json.loads((directory / "cfg.json").read_text())
    weights = load_file(str(directory / "sae_weights.safetensors"))
    assert cfg["metadata"]["hook_name"] == "blocks.3.hook_resid_post"
    assert (cfg["d_in"], cfg["d_sae"]) == (10, 24)
    np.testing.assert_allclose(
        _saelens_encode(cfg, weights, X), estimator.transform(X), rtol=1e-5, atol=1e-5
    )
    assert (estimator.transform(X) != 0).any()  # a model with no active code proves nothing
    back = io.from_saelens(directory)
    np.testing.assert_array_equal(back.transform(X), estimator.transform(X))
    if name in ("batchtopk", "matryoshka", "jumprelu"):
        assert cfg["architecture"] == "jumprelu" and type(back) is JumpReLUSAE
        np.testing.assert_array_equal(back.threshold_, weights["threshold"])
    if name == "matryoshka":
        assert cfg["metadata"]["skmpsae_prefix_sizes"] == list(estimator.prefix_sizes_)


def test_to_saelens_threshold_models_edge_cases(fitted, X, tmp_path):
    from safetensors.numpy import load_file

    # BatchTopK with a fixed k at inference encodes as TopK, and is exported so.
    estimator = BatchTopKSAE(
        24, n_nonzero_coefs=4, transform_n_nonzero_coefs=3, max_iter=1, random_state=0
    ).fit(X)
    cfg = json.loads((io.to_saelens(estimator, tmp_path / "k") / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["k"]) == ("topk", 3)
    np.testing.assert_array_equal(
        io.from_saelens(tmp_path / "k").transform(X), estimator.transform(X)
    )
    # A negative BatchTopK threshold keeps every positive activation: exported as 0.
    estimator.set_params(transform_n_nonzero_coefs=None)
    estimator.threshold_ = np.float32(-1.0)
    directory = io.to_saelens(estimator, tmp_path / "neg")
    weights = load_file(str(directory / "sae_weights.safetensors"))
    np.testing.assert_array_equal(weights["threshold"], np.zeros(24, np.float32))
    np.testing.assert_array_equal(io.from_saelens(directory).transform(X), estimator.transform(X))
    # A negative JumpReLU threshold gives negative codes, which SAELens's ReLU would zero.
    jump = io.load(io.save(fitted["jumprelu"], tmp_path / "j.safetensors"))
    jump.threshold_[0] = -0.5
    with pytest.raises(ValueError, match="negative thresholds"):
        io.to_saelens(jump, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_from_saelens_jumprelu_negative_threshold_loads_as_zero(fitted, X, tmp_path):
    from safetensors.numpy import load_file, save_file

    directory = io.to_saelens(fitted["jumprelu"], tmp_path / "sl")
    cfg = json.loads((directory / "cfg.json").read_text())
    weights = load_file(str(directory / "sae_weights.safetensors"))
    weights["threshold"] = np.linspace(-2, 0.5, 24).astype(np.float32)
    save_file(weights, str(directory / "sae_weights.safetensors"))
    loaded = io.from_saelens(directory)
    assert (loaded.threshold_ >= 0).all()
    codes = loaded.transform(X)
    assert (codes >= 0).all() and (codes > 0).any()
    np.testing.assert_allclose(codes, _saelens_encode(cfg, weights, X), rtol=1e-5, atol=1e-5)


def test_to_saelens_matching_pursuit_settings(fitted, X, tmp_path):
    estimator = MatchingPursuitSAE(24, n_nonzero_coefs=4, max_iter=2, random_state=0).fit(X)
    estimator.set_params(transform_n_nonzero_coefs=7)
    cfg = json.loads((io.to_saelens(estimator, tmp_path / "a") / "cfg.json").read_text())
    assert cfg["architecture"] == "matching_pursuit" and cfg["max_iterations"] == 7
    assert cfg["stop_on_duplicate_support"] is False and cfg["residual_threshold"] == 0
    back = io.from_saelens(tmp_path / "a")
    np.testing.assert_array_equal(back.transform(X), estimator.transform(X))
    for params, match in [
        ({"positive_code": False}, "positive codes only"),
        ({"transform_algorithm": "omp"}, "orthogonal matching pursuit"),
        ({"transform_tol": 1.0}, "transform_tol is not exported"),
    ]:
        refused = MatchingPursuitSAE(24, max_iter=1, random_state=0, **params).fit(X)
        with pytest.raises(ValueError, match=match):
            io.to_saelens(refused, tmp_path / "refused")
        assert not (tmp_path / "refused").exists()


def test_from_saelens_folds_b_dec_when_not_subtracted(fitted, X, tmp_path):
    directory = io.to_saelens(fitted["topk"], tmp_path / "sl")
    cfg = json.loads((directory / "cfg.json").read_text())
    cfg["apply_b_dec_to_input"] = False
    (directory / "cfg.json").write_text(json.dumps(cfg))
    from safetensors.numpy import load_file

    weights = load_file(str(directory / "sae_weights.safetensors"))
    np.testing.assert_allclose(
        io.from_saelens(directory).transform(X),
        _saelens_encode(cfg, weights, X),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "edit, match",
    [
        ({"architecture": "gated"}, "'gated' has no skmpsae estimator"),
        ({"architecture": "batchtopk"}, "saves it for inference as 'jumprelu'"),
        ({"architecture": "jumprelu"}, r"missing \['threshold'\]"),
        ({"d_in": 11}, "shape"),
        ({"d_sae": 0}, "d_sae must be a positive integer"),
        ({"normalize_activations": "expected_average_only_in"}, "normalize_activations"),
        ({"rescale_acts_by_decoder_norm": True}, "rescale_acts_by_decoder_norm"),
    ],
)
def test_from_saelens_refuses_what_it_cannot_represent(edit, match, fitted, tmp_path):
    directory = io.to_saelens(fitted["topk"], tmp_path / "sl")
    cfg = json.loads((directory / "cfg.json").read_text())
    (directory / "cfg.json").write_text(json.dumps({**cfg, **edit}))
    with pytest.raises(ValueError, match=match):
        io.from_saelens(directory)


def test_from_saelens_bad_directories(fitted, tmp_path):
    with pytest.raises(FileNotFoundError):
        io.from_saelens(tmp_path / "missing")
    io.to_saelens(fitted["topk"], tmp_path / "parent" / "layer_3")
    with pytest.raises(ValueError, match=r"sub-directories \['layer_3'\]"):
        io.from_saelens(tmp_path / "parent")
    (tmp_path / "parent" / "layer_3" / "cfg.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        io.from_saelens(tmp_path / "parent" / "layer_3")


def _write_sparsify(directory, cfg, tensors):
    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cfg.json").write_text(json.dumps(cfg))
    save_file(tensors, str(directory / "sae.safetensors"))


def test_from_sparsify_by_its_documented_semantics(X, tmp_path):
    rng = np.random.RandomState(0)
    W_enc, W_dec = rng.randn(40, 10).astype(np.float32), rng.randn(40, 10).astype(np.float32)
    b_enc, b_dec = rng.randn(40).astype(np.float32), rng.randn(10).astype(np.float32)
    cfg = {
        "activation": "topk",
        "expansion_factor": 4,
        "normalize_decoder": False,
        "num_latents": 0,
        "k": 5,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": 10,
    }
    tensors = {"encoder.weight": W_enc, "encoder.bias": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    _write_sparsify(tmp_path / "sp", cfg, tensors)
    estimator = io.from_sparsify(tmp_path / "sp")
    # sparsify: relu((x - b_dec) @ W_enc.T + b_enc), keep the top k, decode + b_dec.
    pre = np.maximum((X - b_dec) @ W_enc.T + b_enc, 0)
    expected = np.zeros_like(pre)
    top = np.argsort(-pre, axis=1)[:, :5]
    np.put_along_axis(expected, top, np.take_along_axis(pre, top, 1), 1)
    np.testing.assert_allclose(estimator.transform(X), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        estimator.inverse_transform(expected), expected @ W_dec + b_dec, rtol=1e-5, atol=1e-4
    )
    for edit, match in [
        ({"transcode": True}, "transcoder"),
        ({"skip_connection": True}, "skip connection"),
        ({"activation": "groupmax"}, "groupmax"),
        ({"d_in": 12}, "shape"),
    ]:
        _write_sparsify(tmp_path / "bad", {**cfg, **edit}, tensors)
        with pytest.raises(ValueError, match=match):
            io.from_sparsify(tmp_path / "bad")
    _write_sparsify(tmp_path / "nodec", cfg, {k: v for k, v in tensors.items() if k != "W_dec"})
    with pytest.raises(ValueError, match="missing \\['W_dec'\\]"):
        io.from_sparsify(tmp_path / "nodec")


# -- command line ------------------------------------------------------------------------------
def test_cli_fit_writes_and_encode_reads_safetensors(X, tmp_path, capsys):
    from scipy import sparse

    np.save(tmp_path / "X.npy", X)
    model = tmp_path / "model.safetensors"
    args = [
        "fit",
        str(tmp_path / "X.npy"),
        "--model",
        "topk",
        "--n-components",
        "16",
        "--k",
        "3",
        "--max-iter",
        "2",
        "--random-state",
        "0",
        "--device",
        "cpu",
        "-q",
    ]
    assert main([*args, "-o", str(model)]) == 0
    estimator = io.load(model)
    assert (
        main(
            ["encode", str(model), str(tmp_path / "X.npy"), "-o", str(tmp_path / "codes.npz"), "-q"]
        )
        == 0
    )
    codes = sparse.load_npz(tmp_path / "codes.npz").toarray()
    np.testing.assert_array_equal(codes, estimator.transform(X))

    model.write_bytes(model.read_bytes()[:-50])
    capsys.readouterr()
    assert (
        main(["encode", str(model), str(tmp_path / "X.npy"), "-o", str(tmp_path / "c2.npz"), "-q"])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated, corrupted" in err[0]


def test_pickling_leaves_the_estimator_as_it_was():
    """Pickling reads the estimator: its live trainer (and so the next partial_fit, and the
    collectives of a data-parallel run) must be the same after pickle.dumps as before."""
    import pickle

    X = np.random.RandomState(0).rand(64, 6).astype(np.float32)
    sae = MatchingPursuitSAE(n_components=8, n_nonzero_coefs=2, max_iter=2, random_state=0)
    sae.fit(X)
    before = dict(vars(sae))
    pickle.dumps(sae)
    assert vars(sae).keys() == before.keys()
    assert all(vars(sae)[name] is value for name, value in before.items())


def test_a_refit_drops_the_provenance_of_the_earlier_model():
    X = np.random.RandomState(0).rand(64, 6).astype(np.float32)
    sae = ReLUSAE(n_components=8, max_iter=1, random_state=0).fit(X)
    sae.provenance_ = {"hookpoint": "h.0"}
    sae.partial_fit(X)  # the same model, trained further: where its rows came from stays
    assert sae.provenance_ == {"hookpoint": "h.0"}
    sae.fit(X)  # a new model
    assert not hasattr(sae, "provenance_")
