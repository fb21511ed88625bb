"""Before/after check for refactors: a commit must train, encode and save bit for bit as its
parent did.

``record OUT.npz`` fits every registered estimator for two seeds on a few hundred MNIST digits
and saves what a refactor of the training, encoding or io code could change: ``components_``,
``intercept_`` and every other fitted array, ``loss_curve_``, the codes of held-out rows, the
tensors of a file written by :func:`skmpsae.io.save` and of a :func:`skmpsae.io.to_saelens`
export (its ``cfg.json`` too), and the same after ``partial_fit`` (twice, with a pickle in
between, so the live trainer and its pickled Adam moments are both exercised), after a fit with
``early_stopping=True`` and after a fit resumed from its checkpoint. ``compare A.npz B.npz``
says which arrays differ and exits 1 if any does.

Usage (a few CPU minutes)::

    git stash; git checkout PARENT; python benchmarks/check_identical.py record /tmp/before.npz
    git checkout COMMIT;             python benchmarks/check_identical.py record /tmp/after.npz
    python benchmarks/check_identical.py compare /tmp/before.npz /tmp/after.npz

Not a benchmark (``run_all.py`` runs ``bench_*.py`` only): it measures no time.
"""

import argparse
import json
import pickle
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

SEEDS = (0, 1)
N_TRAIN, N_HELD_OUT = 400, 100


def _data():
    from skmpsae.datasets import load_mnist

    X = load_mnist().data
    rows = np.random.RandomState(0).permutation(X.shape[0])[: N_TRAIN + N_HELD_OUT]
    return X[rows[:N_TRAIN]], X[rows[N_TRAIN:]]


def _make(spec, seed, **params):
    settings = {
        "n_components": 48,
        "max_iter": 3,
        "batch_size": 64,
        "random_state": seed,
        "device": "cpu",
    }
    if spec.sparsity == "n_nonzero_coefs":
        settings["n_nonzero_coefs"] = 4
    return spec.estimator(**{**settings, **params})


def _interrupt(info):
    raise KeyboardInterrupt


def _fitted(prefix, sae, X_held_out, out):
    """Every public fitted attribute that is numeric, and the held-out codes, into ``out``."""
    for name, value in sorted(vars(sae).items()):
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True, default=str)
        if value is None:
            continue
        array = np.asarray(value)
        if array.dtype.kind in "biufU":
            out[f"{prefix}/{name}"] = array
    codes = sae.transform(X_held_out)
    out[f"{prefix}/codes"] = codes.toarray() if hasattr(codes, "toarray") else codes


def _files(prefix, sae, directory, out):
    """The tensors of ``io.save``'s file and of a SAELens export (or the refusal's message)."""
    from safetensors.numpy import load_file

    from skmpsae import io

    path = Path(directory) / f"{prefix.replace('/', '_')}.safetensors"
    io.save(sae, path)
    for name, tensor in load_file(path).items():
        out[f"{prefix}/save/{name}"] = tensor
    export = Path(directory) / f"{prefix.replace('/', '_')}_saelens"
    try:
        io.to_saelens(sae, export)
    except ValueError as exc:
        out[f"{prefix}/saelens/refused"] = np.array(str(exc))
        return
    for name, tensor in load_file(export / "sae_weights.safetensors").items():
        out[f"{prefix}/saelens/{name}"] = tensor
    cfg = json.loads((export / "cfg.json").read_text())
    for key in ("sae_lens_version", "skmpsae_version"):
        cfg["metadata"].pop(key, None)
    out[f"{prefix}/saelens/cfg"] = np.array(json.dumps(cfg, sort_keys=True))


def record(path):
    """Fit, encode and save every registered estimator for each seed; write one ``.npz``."""
    import torch

    from skmpsae._models.registry import estimator_specs

    torch.set_num_threads(1)
    X, X_held_out = _data()
    out = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, spec in estimator_specs().items():
            for seed in SEEDS:
                prefix = f"{name}/{seed}"
                print(prefix, flush=True)
                sae = _make(spec, seed).fit(X)
                _fitted(f"{prefix}/fit", sae, X_held_out, out)
                _files(f"{prefix}/fit", sae, directory, out)

                sae = _make(spec, seed).partial_fit(X[:200]).partial_fit(X[200:])
                sae = pickle.loads(pickle.dumps(sae)).partial_fit(X)
                _fitted(f"{prefix}/partial_fit", sae, X_held_out, out)

                sae = _make(spec, seed, early_stopping=True, n_iter_no_change=1, tol=0.5)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _fitted(f"{prefix}/early_stopping", sae.fit(X), X_held_out, out)

                # Ctrl-C after the first epoch leaves its checkpoint; resuming runs the rest.
                checkpoint = Path(directory) / prefix.replace("/", "_")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    _make(spec, seed, callback=_interrupt).fit(
                        X, checkpoint_dir=checkpoint, checkpoint_every=3
                    )
                sae = _make(spec, seed).fit(X, checkpoint_dir=checkpoint, resume=True)
                _fitted(f"{prefix}/resumed", sae, X_held_out, out)
    np.savez(path, **out)
    print(f"{len(out)} arrays -> {path}")


def compare(before, after):
    """The names of the arrays that differ (or are missing from one file); 1 if any does."""
    a, b = np.load(before), np.load(after)
    differ = sorted(set(a.files) ^ set(b.files))
    for name in sorted(set(a.files) & set(b.files)):
        x, y = a[name], b[name]
        same = x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
        if not same:
            differ.append(name)
    for name in differ:
        print(f"differs: {name}")
    print(f"{len(set(a.files) | set(b.files)) - len(differ)} identical, {len(differ)} differ")
    return 1 if differ else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("record", help="fit and save every estimator").add_argument("out")
    cmp = commands.add_parser("compare", help="compare two recordings bit for bit")
    cmp.add_argument("before")
    cmp.add_argument("after")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
