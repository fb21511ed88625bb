"""Plots for sparse autoencoders: dictionary atoms as images, and R2-vs-L0 trade-off curves.

matplotlib is an optional dependency (``pip install -e ".[plot]"`` in the skmpsae checkout); it
is imported only when a plotting function is called.
"""

import math
from collections.abc import Mapping
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import check_is_fitted

from ._compat import HasMethods, StrOptions, validate_params
from ._utils import NotBoolInterval
from .metrics import component_usage

if TYPE_CHECKING:  # matplotlib is optional and imported only to draw
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_atoms", "plot_r2_vs_l0"]


def _import_pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "skmpsae plotting requires matplotlib; install it with: pip install -e '.[plot]' "
            "in the skmpsae checkout"
        ) from exc
    return plt


def _components_of(components_or_estimator):
    if hasattr(components_or_estimator, "fit"):
        check_is_fitted(components_or_estimator, "components_")
        components = components_or_estimator.components_
    else:
        components = components_or_estimator
    if hasattr(components, "detach"):  # a torch tensor, possibly on GPU or with grad
        components = components.detach().cpu().numpy()
    return check_array(components, dtype=np.float64, input_name="components")


def _infer_image_shape(n_features, image_shape):
    if image_shape is None:
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(
                f"Cannot infer a square image shape from n_features={n_features}; "
                "pass image_shape=(height, width)."
            )
        return side, side
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 2 or math.prod(image_shape) != n_features:
        raise ValueError(
            f"image_shape must be (height, width) with height * width = n_features = "
            f"{n_features}, got {image_shape}."
        )
    return image_shape


@validate_params(
    {
        # A torch tensor counts as array-like; an estimator is recognised by its fit method.
        "components_or_estimator": ["array-like", HasMethods(["fit"])],
        "usage": ["array-like", "sparse matrix", None],
        "image_shape": ["array-like", None],
        "n_atoms": [NotBoolInterval(Integral, 1, None, closed="left")],
        "order": [StrOptions({"auto", "usage", "index"})],
        "n_cols": [NotBoolInterval(Integral, 1, None, closed="left"), None],
        # A matplotlib Colormap is callable; matplotlib itself is imported only to draw.
        "cmap": [str, callable],
        "fig": [HasMethods(["add_subplot"]), None],
    },
    prefer_skip_nested_validation=True,
)
def plot_atoms(
    components_or_estimator,
    *,
    usage=None,
    image_shape: tuple[int, int] | None = None,
    n_atoms: int = 64,
    order: str = "auto",
    n_cols: int | None = None,
    cmap="RdBu_r",
    fig=None,
) -> "Figure":
    """Show dictionary atoms as a grid of images.

    Each atom gets its own symmetric color scale ``[-max|atom|, max|atom|]``, so zero
    is always the middle color of a diverging ``cmap`` and the sign pattern of every
    atom is visible whatever its contrast.

    Parameters
    ----------
    components_or_estimator : array-like of shape (n_components, n_features) or estimator
        The dictionary, one atom per row, or a fitted estimator with a
        ``components_`` attribute.
    usage : array-like of shape (n_components,) or (n_samples, n_components), default=None
        How often each atom is used: per-atom frequencies (e.g. from
        :func:`skmpsae.metrics.component_usage`), or a code matrix from which
        they are computed. Needed for ``order="usage"`` and shown in the titles.
    image_shape : tuple of int (height, width), default=None
        Shape of one atom as an image; ``None`` infers a square, which requires
        ``n_features`` to be a perfect square (784 -> 28 x 28).
    n_atoms : int, default=64
        Maximum number of atoms to show.
    order : {"auto", "usage", "index"}, default="auto"
        Which atoms come first: ``"usage"`` shows the most used atoms first,
        ``"index"`` follows the dictionary order, ``"auto"`` is ``"usage"`` when
        ``usage`` is given and ``"index"`` otherwise.
    n_cols : int, default=None
        Number of columns of the grid; ``None`` makes the grid roughly square.
    cmap : str or Colormap, default="RdBu_r"
        Colormap; a diverging one suits the symmetric scale.
    fig : matplotlib Figure, default=None
        Figure to draw into (its existing axes are kept); a new one is created if None.

    Returns
    -------
    fig : matplotlib Figure
        The figure, with one image axes per atom shown, titled with the atom index
        (and its usage in percent when known).

    Examples
    --------
    >>> import numpy as np
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmpsae.plotting import plot_atoms
    >>> D = np.random.RandomState(0).randn(10, 64)
    >>> fig = plot_atoms(D)
    >>> len(fig.axes)
    10
    """
    components = _components_of(components_or_estimator)
    n_components, n_features = components.shape
    height, width = _infer_image_shape(n_features, image_shape)

    if usage is not None:
        if getattr(usage, "ndim", np.ndim(usage)) == 2:  # a (possibly sparse) code matrix
            usage = component_usage(usage)
        else:
            usage = check_array(usage, ensure_2d=False, dtype=np.float64, input_name="usage")
        if usage.shape != (n_components,):
            raise ValueError(
                f"usage must have one value per atom ({n_components}) or be a code matrix "
                f"with {n_components} columns, got shape {usage.shape}."
            )
    if order == "auto":
        order = "index" if usage is None else "usage"
    if order == "usage":
        if usage is None:
            raise ValueError('order="usage" needs usage= (frequencies or a code matrix).')
        # Stable sort keeps index order among equally used (e.g. dead) atoms.
        shown = np.argsort(-usage, kind="stable")[:n_atoms]
    else:
        shown = np.arange(min(n_atoms, n_components))

    n_shown = shown.size
    if n_cols is None:
        n_cols = math.ceil(math.sqrt(n_shown))
    n_cols = min(n_cols, n_shown)
    n_rows = math.ceil(n_shown / n_cols)
    if fig is None:
        plt = _import_pyplot()
        fig = plt.figure(figsize=(1.2 * n_cols, 1.3 * n_rows), layout="constrained")

    for position, atom in enumerate(shown):
        ax = fig.add_subplot(n_rows, n_cols, position + 1)
        image = components[atom].reshape(height, width)
        # An all-zero atom would give a degenerate color range.
        vmax = float(np.abs(image).max()) or 1.0
        ax.imshow(image, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
        title = f"#{atom}" if usage is None else f"#{atom} ({100 * usage[atom]:.1f}%)"
        ax.set_title(title, fontsize="x-small")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _curve_points(label, points):
    # A mapping (dict, DataFrame) with "l0" and "r2" keys gives the two columns;
    # anything else is read as a sequence of (l0, r2) pairs. Pairs are rows so that a
    # 2 x 2 input is never ambiguous.
    if hasattr(points, "keys") and "l0" in points.keys() and "r2" in points.keys():
        l0s = np.asarray(points["l0"], dtype=np.float64).ravel()
        r2s = np.asarray(points["r2"], dtype=np.float64).ravel()
        if l0s.shape != r2s.shape:
            raise ValueError(
                f"results[{label!r}]: 'l0' and 'r2' have different lengths "
                f"({l0s.size} and {r2s.size})."
            )
    else:
        pairs = np.asarray(points, dtype=np.float64)
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
            raise ValueError(
                f"results[{label!r}] must be a non-empty sequence of (l0, r2) pairs or a "
                f"mapping with 'l0' and 'r2' arrays; got an array of shape {pairs.shape}."
            )
        l0s, r2s = pairs[:, 0], pairs[:, 1]
    if not (np.all(np.isfinite(l0s)) and np.all(np.isfinite(r2s))):
        raise ValueError(f"results[{label!r}] contains NaN or infinite values.")
    ordering = np.argsort(l0s, kind="stable")
    return l0s[ordering], r2s[ordering]


@validate_params(
    {
        "results": [Mapping],
        "ax": [HasMethods(["plot"]), None],
        # matplotlib accepts many marker forms (str, int, tuple, Path) and validates them.
        "marker": "no_validation",
        "logx": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def plot_r2_vs_l0(results, *, ax=None, marker="o", logx: bool = False) -> "Axes":
    """Plot the sparsity / reconstruction trade-off, one curve per model.

    Parameters
    ----------
    results : mapping of str to points
        Curve label -> points. Points are either a sequence of ``(l0, r2)`` pairs
        (an array of shape (n_points, 2)) or a mapping (dict, DataFrame) with
        ``"l0"`` and ``"r2"`` arrays. Points are joined in increasing L0.
    ax : matplotlib Axes, default=None
        Axes to draw on; a new figure is created if None.
    marker : str, default="o"
        Marker for the measured points.
    logx : bool, default=False
        Use a logarithmic L0 axis (handy when k sweeps powers of two).

    Returns
    -------
    ax : matplotlib Axes
        The axes with one line per entry of ``results`` and a legend.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> from skmpsae.plotting import plot_r2_vs_l0
    >>> ax = plot_r2_vs_l0({
    ...     "MP-SAE": [(4, 0.61), (8, 0.74), (16, 0.85)],
    ...     "TopK": {"l0": [4, 8, 16], "r2": [0.55, 0.70, 0.81]},
    ... })
    >>> len(ax.get_lines())
    2
    """
    if len(results) == 0:
        raise ValueError("results must be a non-empty mapping of label -> (l0, r2) points.")
    curves = {label: _curve_points(label, points) for label, points in results.items()}
    if ax is None:
        plt = _import_pyplot()
        _, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for label, (l0s, r2s) in curves.items():
        ax.plot(l0s, r2s, marker=marker, label=str(label))
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel("L0 (mean non-zero codes per sample)")
    ax.set_ylabel("explained variance $R^2$")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return ax
