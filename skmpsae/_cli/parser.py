"""The ``skmpsae`` command line's arguments: the parser of every command and the value types
its options take. :mod:`skmpsae.cli` runs the commands.
"""

import argparse

import numpy as np

# Rows encoded at a time by `skmpsae encode` (the default of --chunk-size).
_ENCODE_CHUNK = 4096

# --model names and their estimators; the penalised ones set sparsity by --alpha, not --k.
_MODELS = {
    "mp": "MatchingPursuitSAE",
    "topk": "TopKSAE",
    "batchtopk": "BatchTopKSAE",
    "matryoshka": "MatryoshkaSAE",
    "jumprelu": "JumpReLUSAE",
    "relu": "ReLUSAE",
}
_PENALISED_MODELS = {"relu", "jumprelu"}


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # argparse prints the whole usage block first; one line that points to --help is easier
        # to read in a terminal and to match in scripts.
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text, allow_zero=False):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise argparse.ArgumentTypeError(f"expected {kind} number, got {text!r}")
    return value


def _learning_rate(text):
    return "auto" if text == "auto" else _positive_float(text)


def _non_negative_float(text):
    return _positive_float(text, allow_zero=True)


def _build_parser():
    from .. import __version__
    from .compare import MODEL_NAMES

    parser = _ArgumentParser(
        prog="skmpsae",
        description="Sparse autoencoders (matching pursuit, TopK, ReLU) on .npy files.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_ArgumentParser
    )
    commands.required = True

    fit = commands.add_parser(
        "fit",
        help="train an SAE on a 2-D .npy file (memory-mapped, streamed by batch)",
        description="Train an SAE on DATA.npy, read memory-mapped and streamed batch by batch; "
        "float32 and float64 files are never loaded whole.",
    )
    fit.add_argument("data", metavar="DATA.npy", help="2-D array (n_samples, n_features)")
    fit.add_argument("--model", choices=list(_MODELS), default="mp", help="default: mp")
    fit.add_argument(
        "--n-components", type=_positive_int, default=None, help="default: the estimator's (256)"
    )
    fit.add_argument(
        "--k",
        type=_positive_int,
        default=None,
        help="non-zero codes per sample for mp, topk, batchtopk and matryoshka "
        "(default: the estimator's n_nonzero_coefs, 16)",
    )
    fit.add_argument(
        "--alpha",
        type=_non_negative_float,
        default=None,
        help="sparsity penalty for relu (L1) and jumprelu (L0) (default: the estimator's)",
    )
    fit.add_argument(
        "--batch-size", type=_positive_int, default=None, help="default: the estimator's (256)"
    )
    fit.add_argument(
        "--max-iter", type=_positive_int, default=None, help="epochs (default: the estimator's, 50)"
    )
    fit.add_argument(
        "--learning-rate",
        type=_learning_rate,
        default=None,
        help="a positive number or 'auto' (default: the estimator's)",
    )
    fit.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    fit.add_argument("--random-state", type=int, default=None, help="seed (default: none)")
    fit.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="MODEL.safetensors (safe to share: loading runs no code) or MODEL.joblib (a pickle)",
    )
    fit.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    fit.add_argument(
        "--nproc-per-node",
        type=_positive_int,
        default=1,
        metavar="N",
        help="train data-parallel in N local worker processes started by "
        "torch.distributed.run (gloo on the CPU, nccl on GPUs; default: 1)",
    )
    fit.add_argument(
        "--checkpoint-dir",
        default=None,
        metavar="DIR",
        help="save a checkpoint (DIR/checkpoint.pt, replaced atomically) every "
        "--checkpoint-every steps and at each epoch's end",
    )
    fit.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        default=1000,
        metavar="STEPS",
        help="steps between checkpoints (default: 1000)",
    )
    fit.add_argument(
        "--resume",
        action="store_true",
        help="continue from the checkpoint in --checkpoint-dir, with the same "
        "data and options as the interrupted run",
    )
    fit.set_defaults(subparser=fit)

    encode = commands.add_parser(
        "encode",
        help="encode a .npy file with a fitted model into a sparse .npz matrix",
        description="Encode DATA.npy chunk by chunk and save the codes as a scipy sparse CSR "
        "matrix (load it with scipy.sparse.load_npz).",
    )
    encode.add_argument(
        "model", metavar="MODEL", help="a .safetensors or .joblib file written by 'skmpsae fit'"
    )
    encode.add_argument("data", metavar="DATA.npy")
    encode.add_argument("-o", "--output", required=True, metavar="CODES.npz")
    encode.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=_ENCODE_CHUNK,
        help=f"rows encoded at a time (default: {_ENCODE_CHUNK})",
    )
    encode.add_argument("--device", default=None, help="override the model's device")
    encode.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    encode.set_defaults(subparser=encode)

    compare = commands.add_parser(
        "compare",
        help="compare MP, TopK and ReLU SAEs with MiniBatchDictionaryLearning",
        description="Fit MatchingPursuitSAE, TopKSAE, ReLUSAE and scikit-learn's "
        "MiniBatchDictionaryLearning (OMP codes) on one split and print one table of held-out "
        "R2, mean L0, dead atoms and fit time.",
    )
    compare.add_argument(
        "--data",
        default="mnist",
        metavar="{digits,mnist,PATH.npy}",
        help="mnist: 4000 train / 1000 held out (default); digits or a .npy file: 20%% held out",
    )
    compare.add_argument("--k", type=_positive_int, default=16, help="default: 16")
    compare.add_argument("--n-components", type=_positive_int, default=256, help="default: 256")
    compare.add_argument(
        "--alpha",
        type=_non_negative_float,
        default=None,
        help="ReLUSAE's L1 strength (default: ReLUSAE's, chosen for L0 near 16 on mnist)",
    )
    compare.add_argument(
        "--max-iter",
        type=_positive_int,
        default=None,
        help="epochs of the SAEs (default: the estimators' 50)",
    )
    compare.add_argument(
        "--models",
        default=",".join(MODEL_NAMES),
        help=f"comma-separated subset of {','.join(MODEL_NAMES)} (default: all)",
    )
    compare.add_argument("--device", default="auto")
    compare.add_argument("--random-state", type=int, default=0, help="default: 0")
    compare.add_argument("--plot", metavar="PNG", default=None, help="also save a figure")
    compare.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    compare.set_defaults(subparser=compare)

    from ..activations import _add_capture_command

    _add_capture_command(commands, _positive_int)
    return parser


# -- data ----------------------------------------------------------------------------------
