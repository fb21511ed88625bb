"""Scale and workflow: memory-mapped training, devices and pickles, dask, scikit-learn interop."""

import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.decomposition import DictionaryLearning

from skmpsae import MatchingPursuitSAE, ReLUSAE, TopKSAE, orthogonal_matching_pursuit
from skmpsae._utils import resolve_device

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def memmap_file(tmp_path_factory):
    """A float32 .npy on disk, 400,000 x 16 (25.6 MB): 13 batches of 32,768 rows."""
    path = tmp_path_factory.mktemp("ooc") / "activations.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(400_000, 16))
    rng = np.random.RandomState(0)
    for start in range(0, X.shape[0], 100_000):
        X[start : start + 100_000] = rng.rand(100_000, 16)
    X.flush()
    del X
    return path


def _numpy_peak(func):
    """Peak of numpy allocations (traced by tracemalloc) while ``func`` runs, in bytes."""
    tracemalloc.start()
    try:
        func()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fit_and_partial_fit_stream_a_memmap(memmap_file):
    X_disk = np.load(memmap_file, mmap_mode="r")
    params = {
        "n_components": 8,
        "n_nonzero_coefs": 2,
        "max_iter": 1,
        "batch_size": 32768,
        "random_state": 0,
        "device": "cpu",
    }
    MatchingPursuitSAE(**params).fit(X_disk[:500])  # lazy imports would count in the peak

    streamed = MatchingPursuitSAE(**params)
    fit_peak = _numpy_peak(lambda: streamed.fit(X_disk))
    # No copy of the 25.6 MB array: what remains is the scale sample (16,384 rows in float64),
    # the shuffled row order (8 bytes a row) and one batch.
    assert fit_peak < X_disk.nbytes / 2, fit_peak
    chunks = [X_disk[start : start + 100_000] for start in range(0, 400_000, 100_000)]
    partial_peak = _numpy_peak(lambda: [streamed.partial_fit(chunk) for chunk in chunks])
    assert partial_peak < X_disk.nbytes / 2, partial_peak
    assert streamed.n_iter_ == 1 + len(chunks)

    # The very same training as on the array in memory.
    X_memory = np.load(memmap_file)
    in_memory = MatchingPursuitSAE(**params).fit(X_memory)
    for chunk in chunks:
        in_memory.partial_fit(np.array(chunk))
    np.testing.assert_array_equal(streamed.components_, in_memory.components_)
    np.testing.assert_array_equal(streamed.intercept_, in_memory.intercept_)
    assert np.isfinite(streamed.components_).all()


def test_memmap_is_never_written(memmap_file):
    X_disk = np.load(memmap_file, mmap_mode="r")
    before = np.array(X_disk[:1000])
    sae = ReLUSAE(
        n_components=8, alpha=0.5, max_iter=1, batch_size=8192, random_state=0, device="cpu"
    ).fit(X_disk[:40_000])
    assert sae.transform(X_disk[:1000]).shape == (1000, 8)
    np.testing.assert_array_equal(np.load(memmap_file, mmap_mode="r")[:1000], before)


def test_device_auto_picks_cuda_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def _torch_free_objects(obj, seen=None):
    """Yield every torch object reachable through containers and instance dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if type(obj).__module__.split(".")[0] == "torch":
        yield obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _torch_free_objects(key, seen)
            yield from _torch_free_objects(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            yield from _torch_free_objects(item, seen)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        yield from _torch_free_objects(vars(obj), seen)


_LOAD_AND_TRANSFORM = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np
    import torch
    assert not torch.cuda.is_available()
    with open(sys.argv[1], "rb") as f:
        models, X = pickle.load(f)
    codes = []
    for model in models:
        if str(model.device).startswith("cuda"):
            model.set_params(device="cpu")
        codes.append(model.transform(X))
    np.save(sys.argv[2], np.stack(codes))
    """
)


def _transform_in_cpu_only_subprocess(tmp_path, models, X):
    with open(tmp_path / "models.pkl", "wb") as f:
        pickle.dump((models, X), f)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_AND_TRANSFORM,
            str(tmp_path / "models.pkl"),
            str(tmp_path / "codes.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return np.load(tmp_path / "codes.npy")


def test_pickles_hold_arrays_only_and_load_without_cuda(tmp_path):
    X = np.random.RandomState(0).rand(300, 6)
    models = []
    for Estimator, extra in [
        (MatchingPursuitSAE, {"n_nonzero_coefs": 3}),
        (TopKSAE, {"n_nonzero_coefs": 3}),
        (ReLUSAE, {"alpha": 0.3}),
    ]:
        model = Estimator(n_components=10, max_iter=2, random_state=0, **extra).fit(X)
        model.partial_fit(X)  # leaves live torch training state behind
        model.transform(X)  # and a cache of tensors
        models.append(model)
        state = model.__getstate__()
        assert list(_torch_free_objects(state)) == [], Estimator.__name__
        published = [value for key, value in state.items() if key.endswith("_")]
        assert any(isinstance(value, np.ndarray) for value in published)
        opcodes = [
            arg for op, arg, _ in pickletools.genops(pickle.dumps(model)) if isinstance(arg, str)
        ]
        assert not any(arg.startswith("torch") for arg in opcodes), Estimator.__name__
    codes = _transform_in_cpu_only_subprocess(tmp_path, models, X)
    for model, model_codes in zip(models, codes, strict=True):
        np.testing.assert_array_equal(model_codes, model.transform(X))


@requires_cuda
def test_gpu_fit_loads_and_transforms_on_cpu_only_machine(tmp_path, memmap_file):
    X_disk = np.load(memmap_file, mmap_mode="r")
    torch.cuda.reset_peak_memory_stats()
    model = MatchingPursuitSAE(
        n_components=32,
        n_nonzero_coefs=4,
        max_iter=1,
        batch_size=4096,
        random_state=0,
        device="cuda",
    ).fit(X_disk)
    # Only batches go to the GPU, never the whole array.
    assert torch.cuda.max_memory_allocated() < X_disk.nbytes / 2
    assert list(_torch_free_objects(model.__getstate__())) == []
    X = np.asarray(X_disk[:2000], dtype=np.float64)
    on_gpu = model.transform(X)
    on_cpu = _transform_in_cpu_only_subprocess(tmp_path, [model], X)[0]
    # Same atoms chosen; coefficients equal up to float rounding of the two devices.
    agree = ((on_gpu != 0) == (on_cpu != 0)).all(axis=1).mean()
    assert agree > 0.99
    np.testing.assert_allclose(on_cpu, on_gpu, rtol=1e-4, atol=1e-6)


@requires_cuda
def test_device_auto_trains_on_cuda():
    X = np.random.RandomState(0).rand(500, 16).astype(np.float32)
    model = TopKSAE(n_components=16, n_nonzero_coefs=4, max_iter=2, random_state=0).fit(X)
    tensors = model._params_as_tensors(np.float32)
    assert tensors["components_"].device.type == "cuda"
    assert isinstance(model.components_, np.ndarray)


def test_dict_init_from_dictionary_learning():
    X = np.random.RandomState(0).rand(120, 10)
    # The SAEs encode X - intercept_, so atoms learned on centred data suit them.
    learned = DictionaryLearning(n_components=12, max_iter=5, random_state=0).fit(X - X.mean(0))
    atoms = learned.components_ / np.linalg.norm(learned.components_, axis=1, keepdims=True)
    # A vanishing learning rate leaves the dictionary where dict_init put it...
    kept = MatchingPursuitSAE(
        n_components=12,
        dict_init=learned.components_,
        max_iter=1,
        learning_rate=1e-12,
        random_state=0,
    ).fit(X)
    np.testing.assert_allclose(kept.components_, atoms, atol=1e-8)
    # ...and an ordinary fit trains on from it.
    trained = MatchingPursuitSAE(
        n_components=12,
        n_nonzero_coefs=4,
        batch_size=32,
        dict_init=learned.components_,
        max_iter=20,
        random_state=0,
    ).fit(X)
    assert not np.allclose(trained.components_, atoms, atol=1e-3)
    assert trained.score(X) > 0.6


def test_sparse_coder_reproduces_omp_codes():
    X = np.random.RandomState(0).rand(200, 10)
    k = 4
    sae = MatchingPursuitSAE(
        n_components=20,
        n_nonzero_coefs=k,
        positive_code=False,
        transform_algorithm="omp",
        max_iter=3,
        random_state=0,
    ).fit(X)
    coder = sae.to_sparse_coder(transform_algorithm="omp", transform_n_nonzero_coefs=k)
    centred = X - sae.intercept_
    sklearn_codes = coder.transform(centred)
    np.testing.assert_allclose(
        sklearn_codes,
        orthogonal_matching_pursuit(centred, sae.components_, n_nonzero_coefs=k),
        atol=1e-8,
    )
    np.testing.assert_allclose(sklearn_codes, sae.transform(X), atol=1e-8)
    np.testing.assert_allclose(
        sklearn_codes @ coder.dictionary + sae.intercept_,
        sae.inverse_transform(sae.transform(X)),
        atol=1e-8,
    )
    assert (np.count_nonzero(sklearn_codes, axis=1) == k).all()


def test_grid_search_on_a_dask_cluster_without_oversubscription():
    distributed = pytest.importorskip("dask.distributed")
    import joblib
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.random.RandomState(0).rand(240, 8)
    pipe = Pipeline(
        [
            ("scale", StandardScaler()),
            ("sae", MatchingPursuitSAE(n_components=8, max_iter=3, random_state=0, device="cpu")),
        ]
    )
    grid = {"sae__n_nonzero_coefs": [1, 4]}
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=50,
        ) as cluster,
        distributed.Client(cluster) as client,
        joblib.parallel_config(backend="dask"),
        distributed.get_task_stream(client) as tasks,
    ):
        search = GridSearchCV(pipe, grid, cv=2, n_jobs=-1).fit(X)
        worker_threads = joblib.Parallel(n_jobs=-1)(
            joblib.delayed(torch.get_num_threads)() for _ in range(4)
        )
        workers = set(cluster.scheduler_info["workers"])
    assert {task["worker"] for task in tasks.data} <= workers and len(workers) == 2
    assert len(tasks.data) >= 5  # 4 fits (2 candidates x 2 folds), the refit, the thread probe
    # The nanny starts workers with OMP_NUM_THREADS=1: one torch thread per single-threaded
    # worker, so two workers never run more threads than cores.
    assert worker_threads == [1, 1, 1, 1]
    assert search.best_params_ == {"sae__n_nonzero_coefs": 4}  # more steps, better R2

    local = GridSearchCV(pipe, grid, cv=2).fit(X)
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"], rtol=1e-5
    )


def test_loky_workers_split_the_cores_between_torch_threads():
    import joblib

    threads = joblib.Parallel(n_jobs=2, backend="loky")(
        joblib.delayed(torch.get_num_threads)() for _ in range(2)
    )
    # joblib caps each loky worker's OpenMP threads at cpu_count // n_jobs, which torch reads.
    assert all(t * 2 <= max(2, joblib.cpu_count()) for t in threads), threads
