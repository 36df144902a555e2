"""Finite datasets that are available offline: scikit-learn digits and Fashion-MNIST.

* ``digits``: scikit-learn's ``load_digits`` (1,797 8x8 grey digits, 17 grey levels,
  10 classes). It has no official split, so the first 1,500 rows are ``train`` and
  the last 297 rows are ``test``.
* ``fashion_mnist``: 28x28 grey clothing images, 10 classes, 60,000 train / 10,000
  test, read from the IDX files of the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), or from the folder named by the environment
  variable ``DIFFJAX_FASHION_MNIST_DIR`` (the tests point it at a small generated fixture).
  If those are absent, a TFDS copy already on disk is used; nothing is ever downloaded.
"""

from __future__ import annotations

import functools
import gzip
import os

import numpy as np

from diffjax.data import tfds as tfds_source
from diffjax.data.pipeline import ArrayDataset, resize_images

__all__ = ["load_digits", "load_fashion_mnist", "read_idx", "fashion_mnist_dir", "FASHION_MNIST_DIR",
           "FASHION_MNIST_ENV"]

DIGITS_TRAIN_SIZE = 1500
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
"""Where Debian's ``dataset-fashion-mnist`` package puts the IDX files."""
FASHION_MNIST_ENV = "DIFFJAX_FASHION_MNIST_DIR"
"""Environment variable naming another folder of the four IDX files (overrides the default)."""
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# IDX magic numbers: two zero bytes, a type code (0x08 = unsigned byte), the rank.
_IDX_UBYTE = 0x08


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"{name} has splits 'train' and 'test', got split={split!r}")


def load_digits(split: str = "train", image_size: int | None = None, seed: int = 0) -> ArrayDataset:
    """scikit-learn's 8x8 handwritten digits as an :class:`ArrayDataset`.

    Args:
      split: ``"train"`` (first 1,500 rows) or ``"test"`` (last 297 rows).
      image_size: square output size; ``None`` keeps 8x8.
      seed: base seed of the dataset's shuffles.

    Returns:
      A dataset with ``image_shape == (S, S, 1)`` and ``num_classes == 10``.
    """
    _check_split("digits", split)
    from sklearn.datasets import load_digits as sklearn_digits  # local: sklearn is slow to import

    bunch = sklearn_digits()
    # Pixel values are integers 0..16; map them linearly onto [-1, 1] in float32
    # (uint8 storage would round the 17 levels unevenly).
    images = (bunch.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    labels = bunch.target.astype(np.int32)
    rows = slice(0, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    images, labels = images[rows], labels[rows]
    if image_size is not None:
        images = resize_images(images, image_size)
    return ArrayDataset("digits", split, images, labels, num_classes=10, seed=seed)


@functools.lru_cache(maxsize=4)
def read_idx(path: str) -> np.ndarray:
    """Read one (optionally gzipped) IDX file of unsigned bytes.

    Decoded arrays are cached per path (read-only) so several datasets share one copy.

    Args:
      path: file path; ``.gz`` files are decompressed.

    Returns:
      uint8 array with the shape stored in the file header.

    Raises:
      ValueError: when the header is not an unsigned-byte IDX header or the size mismatches.
    """
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE:
        raise ValueError(f"{path}: expected an unsigned-byte IDX header, got {raw[:4]!r}")
    rank = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * rank)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} bytes")
    data = data.reshape(shape)
    data.flags.writeable = False
    return data


def fashion_mnist_dir(data_dir: str | None = None) -> str:
    """The folder Fashion-MNIST's IDX files are read from.

    Args:
      data_dir: an explicit folder; wins over everything else when given.

    Returns:
      ``data_dir`` if given, else ``$DIFFJAX_FASHION_MNIST_DIR`` if set and non-empty, else
      :data:`FASHION_MNIST_DIR` (the Debian package's location).
    """
    if data_dir:
        return data_dir
    return os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DIR


def load_fashion_mnist(
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> ArrayDataset:
    """Fashion-MNIST from the Debian IDX files (or an on-disk TFDS copy).

    Args:
      split: ``"train"`` (60,000) or ``"test"`` (10,000).
      image_size: square output size; ``None`` keeps 28x28.
      seed: base seed of the dataset's shuffles.
      data_dir: folder holding the four IDX ``.gz`` files; default
        ``$DIFFJAX_FASHION_MNIST_DIR`` if set, else ``/usr/share/datasets/fashion-mnist``
        (see :func:`fashion_mnist_dir`).

    Returns:
      A dataset with ``image_shape == (S, S, 1)`` and ``num_classes == 10``.

    Raises:
      FileNotFoundError: when neither the IDX files nor a TFDS copy are on disk; the message
        names ``apt-get install dataset-fashion-mnist``.
    """
    _check_split("fashion_mnist", split)
    folder = fashion_mnist_dir(data_dir)
    paths = [os.path.join(folder, f) for f in _FASHION_FILES[split]]
    if all(os.path.isfile(p) for p in paths):
        images = read_idx(paths[0])[..., None]
        labels = read_idx(paths[1]).astype(np.int32)
    elif tfds_source.tfds_has_on_disk("fashion_mnist"):
        images, labels, _ = tfds_source.load_arrays("fashion_mnist", split)
    else:
        missing = [p for p in paths if not os.path.isfile(p)]
        raise FileNotFoundError(
            f"Fashion-MNIST not found: missing {missing}, and no TFDS copy on disk. "
            "Install it offline-ready with `apt-get install dataset-fashion-mnist` "
            f"(files go to {FASHION_MNIST_DIR}), or pass data_dir=<folder with "
            f"{', '.join(_FASHION_FILES[split])}> (or set {FASHION_MNIST_ENV} to that folder)."
        )
    if images.shape[1:] != (28, 28, 1) or len(images) != len(labels):
        raise ValueError(
            f"Fashion-MNIST files hold images {images.shape} and labels {labels.shape}; "
            "expected (N, 28, 28, 1) and (N,)"
        )
    if image_size is not None:
        images = resize_images(images, image_size)
    return ArrayDataset("fashion_mnist", split, images, labels, num_classes=10, seed=seed)
