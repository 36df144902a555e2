"""A small Fashion-MNIST stand-in: valid gzipped IDX files the real loader reads end to end.

The test suite must run on a fresh machine without system packages, so tests never read
``/usr/share/datasets/fashion-mnist``: ``conftest.py`` writes these files once per session
and points ``$DIFFJAX_FASHION_MNIST_DIR`` at them (subprocesses inherit it).
"""

import gzip
import os

import numpy as np

SIZES = {"train": 1000, "test": 300}
"""Examples per split in the fixture (the real set has 60,000 and 10,000)."""
_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array as an IDX file (magic 0x00 0x00 0x08 rank, big-endian dims)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def fashion_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images and their labels: a bright class-sized box on black, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = np.zeros((n, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        half_w, half_h = 3 + int(label), 4 + int(label) % 5  # size says the class
        cy, cx = rng.integers(12, 17, 2)
        box = images[i, max(cy - half_h, 0) : cy + half_h, max(cx - half_w, 0) : cx + half_w]
        box[...] = rng.integers(180, 256, box.shape)
    return images, labels


def write_fashion_mnist_fixture(folder: str) -> str:
    """Write the four IDX ``.gz`` files of :data:`SIZES` into ``folder``; returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for seed, (split, (image_file, label_file)) in enumerate(_FILES.items()):
        images, labels = fashion_like(SIZES[split], seed)
        for name, array in ((image_file, images), (label_file, labels)):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(gzip.compress(idx_bytes(array), mtime=0))
    return folder
