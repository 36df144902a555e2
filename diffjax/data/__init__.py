"""Offline image datasets with stateless, per-host-sharded batches.

Example::

    from diffjax.data import load_dataset
    ds = load_dataset("fashion_mnist", image_size=32)
    batch = ds.batch(step, 128, process_index=jax.process_index(),
                     process_count=jax.process_count())
    batch["image"]  # float32 (128 // process_count, 32, 32, 1) in [-1, 1]
"""

from __future__ import annotations

from diffjax.data.builtin import load_digits, load_fashion_mnist
from diffjax.data.folder import FolderDataset, load_folder
from diffjax.data.corpus import EVAL_SOURCES, TRAIN_SOURCES, PhotoCorpus, texture_labels
from diffjax.data.photos import TEST_PHOTOS, TRAIN_PHOTOS, PhotoCrops
from diffjax.data.scenes import Scenes
from diffjax.data.pipeline import ArrayDataset, Dataset, resize_images, select_classes
from diffjax.data.tfds import load_tfds

__all__ = [
    "DATASETS",
    "load_dataset",
    "Dataset",
    "ArrayDataset",
    "PhotoCrops",
    "PhotoCorpus",
    "TRAIN_SOURCES",
    "EVAL_SOURCES",
    "texture_labels",
    "TRAIN_PHOTOS",
    "TEST_PHOTOS",
    "resize_images",
    "select_classes",
    "FolderDataset",
    "load_folder",
    "Scenes",
]

DATASETS = ("digits", "fashion_mnist", "photos", "photo_corpus", "scenes", "folder", "tfds:<name>")
"""Names :func:`load_dataset` accepts; ``tfds:<name>`` takes any prepared TFDS image dataset."""


def load_dataset(
    name: str,
    *,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    channels: int = 0,
    num_classes: int = 0,
    eval_fraction: float = 0.1,
    crop: str = "center",
) -> Dataset:
    """Load a dataset by name; nothing is downloaded.

    Args:
      name: ``"digits"`` (8x8 grey, 10 classes), ``"fashion_mnist"`` (28x28 grey,
        10 classes), ``"photos"`` (endless random RGB crops of scikit-image's photos,
        unlabelled), ``"photo_corpus"`` (multi-scale RGB crops of a larger photo corpus whose
        ``test`` split holds photos from other sources than ``train``, see
        :mod:`diffjax.data.corpus`), ``"scenes"`` (endless procedural Fashion-MNIST scenes with label
        maps, 32x32 RGB by default, see :mod:`diffjax.data.scenes`), ``"folder"``
        (every PNG/JPEG under ``data_dir``, see
        :mod:`diffjax.data.folder`) or ``"tfds:<name>"`` (a TFDS dataset already prepared
        on disk).
      split: ``"train"`` or ``"test"`` (any TFDS split string for ``tfds:``; the
        held-out share for ``folder``).
      image_size: resize to this square size (the crop size for ``photos``, default 64);
        ``None`` keeps the native size.
      seed: base seed mixed into every shuffle / crop draw of the dataset.
      data_dir: for ``fashion_mnist`` and ``scenes`` the folder of Fashion-MNIST's IDX files (default
        ``$DIFFJAX_FASHION_MNIST_DIR`` if set, else ``/usr/share/datasets/fashion-mnist``);
        for ``tfds:`` the TFDS data folder; for ``folder`` the folder of images (required).
      channels: ``folder``: 3 (RGB), 1 (grey) or 0 (grey if every file is grey, else
        RGB); ``scenes``: 3 or 0 (RGB) or 1. Other datasets have fixed channels: 0 or
        their own count.
      num_classes: ``folder``: classes of the ``name_label.png`` maps (0 = unlabelled).
        ``scenes``: 0 or 11. Other datasets: must be 0.
      eval_fraction: ``folder``: share of the files held out as the ``test`` split.
      crop: ``folder`` and ``tfds:``: ``"center"`` or ``"random"`` square of each scaled
        image (the other datasets take ``"center"``, their own crops).

    Returns:
      A :class:`Dataset` with ``image_shape``, ``num_classes``, ``num_examples``,
      ``batch``, ``iterator`` and ``eval_images``.

    Raises:
      ValueError: on an unknown name or a bad argument.
      FileNotFoundError: when the dataset's files are not on disk (the message says how
        to install them offline).
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, one of {DATASETS}; got {name!r}")
    if name == "folder":
        return load_folder(data_dir, split, image_size, seed, channels, num_classes, eval_fraction, crop)
    if crop != "center" and not name.startswith("tfds:"):
        raise ValueError(f"crop={crop!r} (config.data.crop) is for folder and TFDS datasets; {name!r} takes 'center'")
    if name == "scenes":
        if num_classes not in (0, Scenes.label_classes):
            raise ValueError(f"scenes have {Scenes.label_classes} classes, got num_classes={num_classes}; use 0 or 11")
        return Scenes(split, image_size, seed, channels, fashion_mnist_dir=data_dir)
    if num_classes:
        raise ValueError(
            f"num_classes={num_classes} (config.data.num_classes) is for labelled folders; "
            f"dataset {name!r} brings its own classes, set it to 0"
        )
    dataset = _load_builtin(name, split, image_size, seed, data_dir, crop)
    if channels not in (0, dataset.image_shape[-1]):
        raise ValueError(
            f"dataset {name!r} has {dataset.image_shape[-1]} channel(s), got channels={channels!r} "
            "(config.data.channels); use 0 or its own count"
        )
    return dataset


def _load_builtin(name, split, image_size, seed, data_dir, crop="center") -> Dataset:
    if name == "digits":
        return load_digits(split, image_size, seed)
    if name == "fashion_mnist":
        return load_fashion_mnist(split, image_size, seed, data_dir)
    if name == "photos":
        return PhotoCrops(split, image_size, seed)
    if name == "photo_corpus":
        return PhotoCorpus(split, image_size, seed)
    if name.startswith("tfds:") and len(name) > len("tfds:"):
        return load_tfds(name[len("tfds:") :], split, image_size, seed, data_dir, crop)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")
