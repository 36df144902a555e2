"""Optional TensorFlow Datasets source (``load_dataset("tfds:<name>")``), strictly offline.

``tensorflow_datasets`` is imported lazily and only after the prepared dataset has been
found on disk: asking TFDS itself whether a dataset exists can block for minutes while it
retries downloads, so the check here only looks at the file system. Datasets hold images
under the feature ``"image"`` (and optionally ``"label"``).

Datasets prepared as ArrayRecord (``tfds build --file_format=array_record``) stream:
``tfds.data_source`` gives random access to records, which are decoded when a batch
needs them (:mod:`diffjax.data.streaming`), scaled so the shorter side is
``image_size`` and cut to a centre (or seeded random) square, so images of any size are
accepted and host memory does not grow with the split. A dataset prepared as TFRecord
only is read into memory once (then its images must share one size).
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from typing import Sequence

import numpy as np

from diffjax.data.pipeline import ArrayDataset, resize_images, to_unit_range
from diffjax.data.streaming import CROPS, LazyImages, decode_pool, scale_and_crop

__all__ = ["tfds_data_dir", "tfds_has_on_disk", "load_arrays", "load_tfds", "RecordDataset"]

log = logging.getLogger("diffjax.data")

#: Random stream of the random crops (as folders: training batches use 0, evaluation images 1).
CROP_STREAM = 2


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


class RecordDataset(ArrayDataset):
    """A random-access source of ``{"image": (H, W, C) uint8, "label": int}`` records, decoded per batch.

    Args:
      name, split, seed: as :class:`~diffjax.data.pipeline.ArrayDataset`.
      source: a sequence of records (``len`` and integer indexing), e.g. a ``tfds.data_source``.
      image_size: output side (any record size is scaled and cropped); ``None`` keeps the
        first record's size, which every record must then have.
      num_classes: classes of ``"label"`` (0: unlabelled, labels are 0).
      crop: ``"center"``, or ``"random"`` for seeded random squares (``train`` batches only).
    """

    def __init__(self, name: str, split: str, source: Sequence[dict], image_size: int | None, num_classes: int,
                 seed: int = 0, crop: str = "center"):
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
        if crop == "random" and image_size is None:
            raise ValueError("crop='random' needs image_size")
        if len(source) == 0:
            raise ValueError(f"{name} {split!r} has no records")
        self._source, self._size, self._crop = source, image_size, crop
        self.name, self.image_shape = name, None  # the first record sets the shape
        first = self._image(0, None)
        super().__init__(name, split, LazyImages(lambda i: self._image(i, None), len(source), first.shape),
                         None, num_classes, seed=seed)
        self._labelled = num_classes > 0

    def _image(self, i: int, rng) -> np.ndarray:
        return self._image_of(self._source[i], i, rng)

    def _record(self, i: int, rng) -> tuple[np.ndarray, int]:
        record = self._source[i]
        label = int(record["label"]) if self._labelled else 0
        return self._image_of(record, i, rng), label

    def _image_of(self, record: dict, i: int, rng) -> np.ndarray:
        image = np.asarray(record["image"], np.uint8)
        image = image[..., None] if image.ndim == 2 else image
        if self._size is not None:
            return scale_and_crop(image, self._size, rng)
        if self.image_shape is not None and image.shape != self.image_shape:
            raise ValueError(f"record {i} of {self.name} is {image.shape}, the first is {self.image_shape}; "
                             "set image_size (--config.data.image_size=S) to scale and crop every image")
        return image

    def _rows(self, step, global_batch_size, rows, seed):
        index = self._indices(step, global_batch_size, rows, seed)
        positions = step * global_batch_size + rows
        random = self._crop == "random" and self.split.startswith("train")

        def read(k: int):
            rng = (np.random.default_rng([CROP_STREAM, self.seed, seed, int(positions[k])]) if random else None)
            return self._record(int(index[k]), rng)

        # One row (grain's record, already on a decoding thread) is read here; a batch uses the pool.
        records = [read(0)] if len(index) == 1 else list(decode_pool().map(read, range(len(index))))
        images = np.stack([r[0] for r in records])
        return to_unit_range(images), np.asarray([r[1] for r in records], np.int32)

    def labels(self) -> np.ndarray:
        """Every label of the split (reads every record: for small sets)."""
        return np.asarray([int(self._source[i]["label"]) if self._labelled else 0
                           for i in range(len(self._source))], np.int32)


def _data_source(name: str, split: str, data_dir: str | None):
    """``(tfds.data_source, num_classes)``, or ``None`` when the dataset has no ArrayRecord files."""
    import tensorflow_datasets as tfds  # lazy: heavy, and optional

    try:
        source = tfds.data_source(name, split=split, data_dir=tfds_data_dir(data_dir), download=False)
    except Exception as err:  # noqa: BLE001 - TFRecord-only datasets: fall back to reading into memory
        log.warning("TFDS %s has no random-access (ArrayRecord) files (%s); reading the split into memory. "
                    "Rebuild it with `tfds build %s --file_format=array_record` to stream it.", name, err, name)
        return None
    features = source.dataset_info.features
    if "image" not in features:
        raise ValueError(f"TFDS dataset {name!r} has no 'image' feature; it has {list(features)}")
    label = features["label"] if "label" in features else None
    return source, int(label.num_classes) if hasattr(label, "num_classes") else 0


def load_tfds(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    crop: str = "center",
) -> ArrayDataset:
    """A prepared TFDS dataset: streamed (:class:`RecordDataset`) when it has ArrayRecord files.

    Args:
      name: TFDS dataset name (without the ``tfds:`` prefix).
      split: TFDS split string.
      image_size: square output size (each image scaled so its shorter side fits, then
        a centre or random square); ``None`` keeps the stored size.
      seed: base seed of the dataset's shuffles.
      data_dir: TFDS data folder (see :func:`tfds_data_dir`).
      crop: ``"center"`` or ``"random"``.

    Returns:
      The dataset; ``num_classes`` is 0 when the dataset has no class label.
    """
    if not _prepared_on_disk(name, data_dir):
        load_arrays(name, split, data_dir)  # raises its FileNotFoundError
    if importlib.util.find_spec("tensorflow_datasets") is not None:
        found = _data_source(name, split, data_dir)
        if found is not None:
            return RecordDataset(f"tfds:{name}", split, found[0], image_size, found[1], seed=seed, crop=crop)
    images, labels, num_classes = load_arrays(name, split, data_dir)
    if image_size is not None:
        images = resize_images(np.ascontiguousarray(_center_square(images)), image_size)
    return ArrayDataset(f"tfds:{name}", split, images, labels, num_classes, seed=seed)
