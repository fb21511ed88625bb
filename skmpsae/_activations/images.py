"""The images a capture reads: a folder of png/jpg files, an ``.npy`` array, an array in
memory, or the MNIST digits shipped with the package, given to the model batch by batch as
8-bit arrays of shape (height, width, channels).

Every problem a source can have is found before a capture writes anything where that is cheap
(a file that is no image, sizes that no processor will reconcile, an array of the wrong
shape); a file whose header reads but whose pixels do not is reported, by name, when its batch
is read.
"""

import hashlib
import os
from importlib import resources
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MNIST = "mnist"


class BadImage(ValueError):
    """An image file that cannot be decoded; the message names it."""


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading image files needs Pillow: pip install -e '.[activations]' in the skmpsae "
            "checkout"
        ) from None
    return Image


class ImageSource:
    """A sequence of images; ``source[a:b]`` gives a list of uint8 arrays (H, W, C).

    Attributes: ``description`` (what the metadata records), ``sizes`` (list of (H, W), one per
    image), ``channels`` (list of channel counts), ``paths`` (the files of a folder, else None).
    """

    def __init__(self, images):
        self.paths, self.array = None, None
        if isinstance(images, str) and images == MNIST:
            self.description = MNIST
            self.array = _mnist_images()
        elif isinstance(images, (str, os.PathLike)):
            path = Path(images)
            self.description = str(path.resolve())
            if path.is_dir():
                self.paths = _image_files(path)
            elif path.suffix == ".npy" and path.is_file():
                try:
                    array = np.load(path, mmap_mode="r", allow_pickle=False)
                except (ValueError, OSError) as exc:
                    raise ValueError(f"{path}: not a readable .npy array ({exc}).") from None
                self.array = _checked_array(array, str(path))
            elif not path.exists():
                raise FileNotFoundError(f"{path}: no such file or directory of images")
            else:
                raise ValueError(
                    f"{path}: images are a folder of png/jpg files, an .npy array of shape "
                    f"(N, H, W) or (N, H, W, C), or {MNIST!r} (the digits shipped with skmpsae)."
                )
        else:
            self.description = "array"
            self.array = _checked_array(np.asarray(images), "images")
        if self.paths is not None:
            headers = [_header(path) for path in self.paths]
            self.sizes = [size for size, _ in headers]
            self.channels = [channels for _, channels in headers]
        else:
            n, height, width = self.array.shape[:3]
            self.sizes = [(height, width)] * n
            self.channels = [1 if self.array.ndim == 3 else self.array.shape[3]] * n
        if not self.sizes:
            raise ValueError(f"{self.description}: no images.")

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, items):
        if self.paths is not None:
            return [_read(path) for path in self.paths[items]]
        return [_as_uint8(image) for image in self.array[items]]

    def fingerprint(self):
        """A digest of the images' identity: the files' names, sizes and times, or the pixels."""
        digest = hashlib.sha256()
        if self.paths is not None:
            for path in self.paths:
                stat = path.stat()
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        else:
            for start in range(0, len(self.array), 4096):
                digest.update(np.ascontiguousarray(self.array[start : start + 4096]).tobytes())
        return digest.hexdigest()

    def check_one_size(self, why):
        """Raise unless every image has the same size (nothing will resize them)."""
        first = self.sizes[0]
        for index, size in enumerate(self.sizes):
            if size != first:
                where = f" ({self.paths[index]})" if self.paths is not None else ""
                raise ValueError(
                    f"images of mixed sizes: image 0 is {first[0]}x{first[1]}, image {index} is "
                    f"{size[0]}x{size[1]}{where}, and {why}."
                )


def _mnist_images():
    source = resources.files("skmpsae") / "data" / "mnist_5k.npz"
    with source.open("rb") as handle, np.load(handle) as stored:
        return stored["X"].reshape(-1, 28, 28)


def _image_files(folder):
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not files:
        raise ValueError(f"{folder}: no .png or .jpg files in this folder or below it.")
    return files


def _checked_array(array, name):
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[3] not in (1, 3, 4)):
        raise ValueError(
            f"{name}: images are an array of shape (N, H, W) or (N, H, W, C) with C 1, 3 or 4, "
            f"got shape {array.shape}."
        )
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: images must be numbers, got dtype {array.dtype}.")
    return array


def _as_uint8(image):
    """Pixels as 8-bit (H, W, C): floats in [0, 1] are intensities, other numbers 0-255."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        out = image
    elif image.dtype.kind == "b":
        out = image.astype(np.uint8) * 255
    elif image.dtype.kind == "f" and image.size and np.nanmax(image) <= 1.0:
        out = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    else:
        out = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def _header(path):
    """(height, width) and channel count from a file's header, without decoding its pixels."""
    Image = _pillow()
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except Exception as exc:  # Pillow raises many types for a file that is no image
        raise BadImage(f"{path}: not a readable image ({_reason(exc)}).") from None
    return (height, width), _channels_of(mode)


def _channels_of(mode):
    return 1 if mode in ("1", "L", "I", "I;16", "F", "P;L") else 3


def _read(path):
    Image = _pillow()
    try:
        with Image.open(path) as image:
            image.load()
            converted = image.convert("L" if _channels_of(image.mode) == 1 else "RGB")
    except Exception as exc:
        raise BadImage(f"{path}: not a readable image ({_reason(exc)}).") from None
    return _as_uint8(np.asarray(converted))


def _reason(exc):
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def to_channels(images, channels):
    """The images with ``channels`` channels (1 or 3): grayscale repeated to RGB, RGB to its
    luminance (ITU-R 601-2, as Pillow's "L"), an alpha channel dropped."""
    out = []
    for image in images:
        if image.shape[2] == 4:
            image = image[:, :, :3]
        if image.shape[2] == channels:
            out.append(image)
        elif channels == 3:
            out.append(np.repeat(image, 3, axis=2))
        else:
            weights = np.array([299, 587, 114], dtype=np.float32) / 1000
            gray = np.rint(image.astype(np.float32) @ weights).astype(np.uint8)
            out.append(gray[:, :, None])
    return out


def conversion(source_channels, channels):
    """What :func:`to_channels` does to a source (a note for the metadata), or None."""
    present = {min(c, 3) for c in source_channels}
    if channels is None or present == {channels}:
        return None
    if channels == 3:
        return "grayscale images repeated to 3 channels (RGB)"
    return "RGB images converted to grayscale (luminance)"
