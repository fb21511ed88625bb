"""``skmpsae synth``: SynthSAEBench samples with their true features, and scoring a model on them.

``skmpsae synth DIR`` writes ``DIR/data.npy`` (the samples), ``DIR/true_features.npy`` and
``DIR/true_activations.npz`` (scipy sparse CSR); ``skmpsae synth DIR --score MODEL`` scores a
model fitted by ``skmpsae fit`` against them (SynthSAEBench's metrics).
"""

import json
from pathlib import Path

import numpy as np

from .._atomic import atomic_write
from .common import CommandError, _positive_int
from .inputs import _load_npy

_FILES = ("data.npy", "true_features.npy", "true_activations.npz")


def _non_negative_int(text):
    return 0 if text.strip() == "0" else _positive_int(text)


def add_parser(commands):
    synth = commands.add_parser(
        "synth",
        help="SynthSAEBench samples with their true features, or score a model on them",
        description="Write SynthSAEBench samples (built with SAELens's generator; needs the "
        "'interop' extra) to DIR/data.npy, with DIR/true_features.npy and "
        "DIR/true_activations.npz; or, with --score, score a fitted model against them.",
    )
    synth.add_argument("directory", metavar="DIR")
    synth.add_argument("--config", choices=("scaled", "full"), default="scaled")
    synth.add_argument("--n-samples", type=_positive_int, default=100_000)
    synth.add_argument("--n-true-features", type=_positive_int, default=None)
    synth.add_argument("--n-features", type=_positive_int, default=None)
    synth.add_argument("--orthogonalization-steps", type=_non_negative_int, default=None)
    synth.add_argument("--random-state", type=_non_negative_int, default=0)
    synth.add_argument(
        "--score",
        metavar="MODEL",
        default=None,
        help="score this model (a .safetensors or .joblib file from 'skmpsae fit') against "
        "the data in DIR instead of writing data; prints the metrics as JSON",
    )
    synth.set_defaults(subparser=synth, run=run)


def _generate(args, directory):
    from scipy import sparse

    from ..datasets import make_synthsaebench

    if not directory.is_dir():
        raise CommandError(f"{directory}: no such directory for the output files")
    try:
        world = make_synthsaebench(
            args.n_samples,
            config=args.config,
            n_true_features=args.n_true_features,
            n_features=args.n_features,
            orthogonalization_steps=args.orthogonalization_steps,
            random_state=args.random_state,
        )
    except ImportError as exc:
        raise CommandError(str(exc)) from None
    except ValueError as exc:  # a size the generator refuses, in the flags' spelling
        raise CommandError(str(exc).replace("n_true_features", "--n-true-features")) from None
    for name, write in (
        ("data.npy", lambda f: np.save(f, world.data)),
        ("true_features.npy", lambda f: np.save(f, world.features)),
        ("true_activations.npz", lambda f: sparse.save_npz(f, world.activations)),
    ):
        with atomic_write(directory / name) as file:
            write(file)
    print(
        f"wrote {world.data.shape[0]} samples of {world.data.shape[1]} features from "
        f"{world.features.shape[0]} true features (true L0 "
        f"{world.activations.nnz / world.data.shape[0]:.1f}) to {directory}"
    )
    return 0


def _score(args, directory):
    from scipy import sparse

    from ..metrics import ground_truth_scores
    from .inputs import _load_model

    missing = [name for name in _FILES if not (directory / name).is_file()]
    if missing:
        raise CommandError(
            f"{directory}: missing {', '.join(missing)} (write them with "
            f"'skmpsae synth {directory}')"
        )
    model = _load_model(args.score)
    X = _load_npy(directory / "data.npy")
    if X.shape[1] != model.n_features_in_:
        raise CommandError(
            f"{directory / 'data.npy'}: has {X.shape[1]} features, but the model was fitted "
            f"on {model.n_features_in_}"
        )
    features = np.load(directory / "true_features.npy")
    activations = sparse.load_npz(directory / "true_activations.npz")
    scores = ground_truth_scores(model, np.asarray(X), activations, features)
    print(json.dumps({k: round(float(v), 6) for k, v in scores.items()}))
    return 0


def run(args):
    directory = Path(args.directory)
    if args.score is not None:
        return _score(args, directory)
    return _generate(args, directory)
