"""The public faces of the digit models of :mod:`.digit_models` (published in
:mod:`skmpsae.datasets`)."""

import os
from numbers import Integral

from .._compat import validate_params
from .._utils import NotBoolInterval
from .digit_models import captions, fetch

_FETCH_PARAMS = {
    "cache_dir": [None, str, os.PathLike],
    "max_iter": [NotBoolInterval(Integral, 1, None, closed="left")],
    "random_state": [NotBoolInterval(Integral, 0, None, closed="left")],
    "refit": ["boolean"],
    "verbose": ["verbose"],
}


@validate_params(_FETCH_PARAMS, prefer_skip_nested_validation=True)
def fetch_mnist_vit(*, cache_dir=None, max_iter=40, random_state=0, refit=False, verbose=0):
    """A small ViT digit classifier trained here on the shipped MNIST digits, as a model folder.

    Trained on the first call (a few CPU minutes) and cached: ``transformers``'
    ``ViTForImageClassification`` with 28x28 one-channel inputs, 7x7-pixel patches (a 4x4 grid
    of patch tokens after the CLS token), 4 layers of width 96, trained on 4,000 digits of
    :func:`load_mnist` (a stratified split with ``random_state``) with random shifts of up to two
    pixels, and scored on the 1,000 others. The folder holds the model and its image processor
    (``save_pretrained``), so ``AutoModel.from_pretrained``, ``AutoImageProcessor`` and
    ``skmpsae capture FOLDER --images mnist`` load it. No network is needed.

    Parameters
    ----------
    cache_dir : str or path-like, default=None
        Where model folders are kept; None: ``$SKMPSAE_HOME/models``, else
        ``~/.cache/skmpsae/models``. The folder is ``mnist-vit-<random_state>`` inside it.
    max_iter : int, default=40
        Training epochs. A cached model trained for another number of epochs is retrained.
    random_state : int, default=0
        Seeds the split, the initialisation and the batches; each seed has its own folder.
    refit : bool, default=False
        Retrain even if a cached model exists.
    verbose : int, default=0
        Print the held-out accuracy after each epoch.

    Returns
    -------
    model : :class:`~sklearn.utils.Bunch`
        ``path`` (the model folder, a :class:`pathlib.Path`), ``accuracy`` (on the 1,000
        held-out digits), ``max_iter`` and ``random_state``.

    See Also
    --------
    fetch_mnist_clip : a vision-language model trained on the same digits.
    load_mnist : the digits.

    Examples
    --------
    >>> from skmpsae.datasets import fetch_mnist_vit
    >>> vit = fetch_mnist_vit()  # doctest: +SKIP
    >>> from skmpsae.activations import capture
    >>> X = capture(vit.path, images="mnist", hookpoint="layers.3",
    ...             output="vit_patches.npy")  # doctest: +SKIP
    """
    return fetch(
        "vit",
        cache_dir=cache_dir,
        max_iter=max_iter,
        random_state=random_state,
        refit=refit,
        verbose=verbose,
    )


@validate_params(_FETCH_PARAMS, prefer_skip_nested_validation=True)
def fetch_mnist_clip(*, cache_dir=None, max_iter=20, random_state=0, refit=False, verbose=0):
    """A small CLIP-like vision-language model trained here on digits and captions.

    Two towers (``transformers``' ``CLIPModel``): a ViT over 28x28 digits (7x7-pixel patches, 3
    layers of width 64) and a 2-layer text transformer over a word-level tokenizer built from the
    captions, trained contrastively on 4,000 digits of :func:`load_mnist`, each paired with a
    caption of its digit drawn from several wordings (``captions`` lists them: "a handwritten
    seven", "the digit 7", "7", ...). Every pair of the same digit in a batch counts as a
    positive. Image and text embeddings then share concepts (the digit) across a modality gap.
    Trained on the first call and cached; the folder holds the model, its tokenizer and its
    image processor, so ``skmpsae capture FOLDER --images mnist --hookpoint image_embeds`` and
    ``--texts CAPTIONS --hookpoint text_embeds`` load it.

    Parameters
    ----------
    cache_dir : str or path-like, default=None
        See :func:`fetch_mnist_vit`. The folder is ``mnist-clip-<random_state>``.
    max_iter : int, default=20
        Training epochs. A cached model trained for another number of epochs is retrained.
    random_state : int, default=0
        Seeds the split, the initialisation, the batches and the captions drawn.
    refit : bool, default=False
        Retrain even if a cached model exists.
    verbose : int, default=0
        Print the held-out zero-shot accuracy after each epoch.

    Returns
    -------
    model : :class:`~sklearn.utils.Bunch`
        ``path`` (the model folder), ``accuracy`` (zero-shot on the 1,000 held-out digits: each
        image labelled with the nearest of the captions "the digit 0" ... "the digit 9"),
        ``modality_gap`` (the distance between the mean normalised image embedding and the mean
        normalised caption embedding on those digits), ``max_iter`` and ``random_state``.

    See Also
    --------
    fetch_mnist_vit : the vision-only model.

    Examples
    --------
    >>> from skmpsae.datasets import fetch_mnist_clip, mnist_captions
    >>> mnist_captions(7)[:3]
    ['a handwritten seven', 'the digit 7', '7']
    >>> clip = fetch_mnist_clip()  # doctest: +SKIP
    """
    return fetch(
        "clip",
        cache_dir=cache_dir,
        max_iter=max_iter,
        random_state=random_state,
        refit=refit,
        verbose=verbose,
    )


@validate_params(
    {"digit": [NotBoolInterval(Integral, 0, 9, closed="both")]}, prefer_skip_nested_validation=True
)
def mnist_captions(digit):
    """The captions :func:`fetch_mnist_clip` pairs with images of ``digit``, one per wording.

    Parameters
    ----------
    digit : int
        0 to 9.

    Returns
    -------
    captions : list of str

    Examples
    --------
    >>> from skmpsae.datasets import mnist_captions
    >>> mnist_captions(3)[:4]
    ['a handwritten three', 'the digit 3', '3', 'three']
    """
    return captions(int(digit))
