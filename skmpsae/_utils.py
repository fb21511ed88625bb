"""Helpers shared across the package: devices, seeds and parameter checks."""

import torch
from sklearn.utils import check_random_state

from ._compat import Interval


def resolve_device(device):
    """Turn the ``device`` parameter into a ``torch.device``.

    ``"auto"`` picks CUDA when a GPU is visible, else the CPU. An explicit CUDA device on a
    machine without one is an error, not a silent fall-back.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(
                f"device={device!r} is not a valid torch device; use 'auto', 'cpu', 'cuda' "
                "or 'cuda:N'."
            ) from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA but torch sees no GPU "
            f"(torch {torch.__version__}); use device='auto' or 'cpu'."
        )
    return resolved


def torch_generator(random_state):
    """A CPU ``torch.Generator`` seeded from ``random_state``.

    Estimators draw all their torch randomness from such a generator, so a fit never reads or
    advances torch's global RNG.
    """
    seed = check_random_state(random_state).randint(2**31 - 1)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int(seed))
    return generator


class NotBoolInterval(Interval):
    """``Interval`` constraint that also rejects booleans.

    Python counts ``True`` as the integer 1 (and the float 1.0), so scikit-learn's
    ``Interval(Integral, 1, None, closed="left")`` accepts ``n_samples=True``. Passing a flag
    where a number is expected is a slip, not a request for one sample: this constraint turns
    it into the usual ``InvalidParameterError`` (a ``ValueError`` and a ``TypeError``) that
    names the parameter. It takes the same arguments as ``Interval`` and works wherever it
    does: ``_parameter_constraints`` of an estimator and ``validate_params`` of a function.

    Examples
    --------
    >>> from numbers import Integral
    >>> from skmpsae._utils import NotBoolInterval
    >>> positive = NotBoolInterval(Integral, 1, None, closed="left")
    >>> positive.is_satisfied_by(3), positive.is_satisfied_by(True)
    (True, False)
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


# The constraint of an array parameter that admits sparse matrices: functions that read sparse
# input take them, and the others leave it to check_array to say that dense data is required
# (clearer than "not an array-like").
ARRAY_OR_SPARSE = ["array-like", "sparse matrix"]


class SigintHandler:
    """Within the block, SIGINT calls ``self._handler(signum, frame)`` (a subclass's); the
    previous handler is restored on exit. Off the main thread nothing is installed, and
    Ctrl-C raises KeyboardInterrupt as usual."""

    previous = None

    def _handler(self, signum, frame):
        raise KeyboardInterrupt

    def __enter__(self):
        import signal

        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
