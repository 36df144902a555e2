"""Optional TensorFlow Datasets source (``load_dataset("tfds:<name>")``), strictly offline.

``tensorflow_datasets`` is imported lazily and only after the prepared dataset has been
found on disk: asking TFDS itself whether a dataset exists can block for minutes while it
retries downloads, so the check here only looks at the file system. Datasets must hold
fixed-size images under the feature ``"image"`` (and optionally ``"label"``); the whole
split is read into memory once.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np

from diffjax.data.pipeline import ArrayDataset, resize_images

__all__ = ["tfds_data_dir", "tfds_has_on_disk", "load_arrays", "load_tfds"]


def tfds_data_dir(data_dir: str | None = None) -> str:
    """The folder TFDS reads from: ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    if data_dir is not None:
        return data_dir
    return os.environ.get("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def _dataset_folder(name: str, data_dir: str | None) -> str:
    # "mnist", "mnist:3.0.1" and "celeb_a/config" all live under <data_dir>/<base name>.
    base = name.split(":")[0].split("/")[0]
    return os.path.join(tfds_data_dir(data_dir), base)


def tfds_has_on_disk(name: str, data_dir: str | None = None) -> bool:
    """Whether TFDS is importable AND a prepared copy of ``name`` is on disk (no TFDS call).

    Args:
      name: TFDS dataset name, optionally with ``/config`` or ``:version``.
      data_dir: TFDS data folder (see :func:`tfds_data_dir`).

    Returns:
      True when ``tensorflow_datasets`` can be imported and ``<data_dir>/<name>`` holds a
      ``dataset_info.json`` (written only once a dataset is fully prepared).
    """
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return False
    return _prepared_on_disk(name, data_dir)


def _prepared_on_disk(name: str, data_dir: str | None) -> bool:
    folder = _dataset_folder(name, data_dir)
    # Layout: <name>/[<config>/]<version>/dataset_info.json.
    return bool(glob.glob(os.path.join(folder, "**", "dataset_info.json"), recursive=True))


def load_arrays(name: str, split: str, data_dir: str | None = None):
    """Read a prepared TFDS split into numpy arrays.

    Args:
      name: TFDS dataset name (``"mnist"``, ``"cifar10"``, ...).
      split: TFDS split string (``"train"``, ``"test"``, ``"train[:90%]"``, ...).
      data_dir: TFDS data folder (see :func:`tfds_data_dir`).

    Returns:
      ``(images uint8 (N, H, W, C), labels int32 (N,) or None, num_classes)``.

    Raises:
      FileNotFoundError: when no prepared copy is on disk.
      ImportError: when ``tensorflow_datasets`` is not installed.
      ValueError: when the dataset has no ``"image"`` feature.
    """
    if not _prepared_on_disk(name, data_dir):
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared under {_dataset_folder(name, data_dir)!r} "
            "(no dataset_info.json found). diffjax never downloads: prepare it on a machine "
            f"with network access (`tfds build {name.split(':')[0]}`) and copy the folder there, "
            "or point data_dir / $TFDS_DATA_DIR at an existing copy."
        )
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise ImportError(
            f"TFDS dataset {name!r} is on disk but tensorflow_datasets is not installed; "
            "install the optional extra: `pip install 'diffjax[tfds]'` "
            "(tensorflow-datasets and tensorflow-cpu)."
        )
    import tensorflow_datasets as tfds  # lazy: heavy, and optional

    builder = tfds.builder(name, data_dir=tfds_data_dir(data_dir))
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"TFDS dataset {name!r} has no 'image' feature; it has {list(features)}")
    # download=False semantics: as_dataset only reads the prepared files.
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    images = np.asarray(arrays["image"], dtype=np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels, num_classes = None, 0
    if "label" in features and hasattr(features["label"], "num_classes"):
        labels = np.asarray(arrays["label"], dtype=np.int32)
        num_classes = int(features["label"].num_classes)
    return images, labels, num_classes


def _center_square(images: np.ndarray) -> np.ndarray:
    h, w = images.shape[1:3]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return images[:, top : top + side, left : left + side]


def load_tfds(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
) -> ArrayDataset:
    """A prepared TFDS dataset as an :class:`ArrayDataset`.

    Args:
      name: TFDS dataset name (without the ``tfds:`` prefix).
      split: TFDS split string.
      image_size: square output size (non-square images are centre-cropped first);
        ``None`` keeps the stored size.
      seed: base seed of the dataset's shuffles.
      data_dir: TFDS data folder (see :func:`tfds_data_dir`).

    Returns:
      The dataset; ``num_classes`` is 0 when the dataset has no class label.
    """
    images, labels, num_classes = load_arrays(name, split, data_dir)
    if image_size is not None:
        images = resize_images(np.ascontiguousarray(_center_square(images)), image_size)
    return ArrayDataset(f"tfds:{name}", split, images, labels, num_classes, seed=seed)
