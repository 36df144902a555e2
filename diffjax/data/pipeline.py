"""The dataset interface shared by every source: stateless batches, per-host shards.

A batch is a *pure function* of ``(step, global_batch_size, seed, split,
process_index, process_count)``. Nothing about "where the iterator is" lives in
the dataset object, so a run resumed at step ``s`` sees exactly the batch the
uninterrupted run saw, and the hosts of a multi-host job each build their own
rows of the same global batch without talking to each other.

Finite datasets (:class:`ArrayDataset`) walk an endless sequence of epochs; the
global row ``i = step * B + r`` belongs to epoch ``i // N`` and is example
``perm_e[i % N]`` of that epoch's permutation, which is drawn from a numpy
generator seeded by ``(dataset seed, batch seed, epoch)``. Each epoch therefore
visits every example exactly once, also when a batch straddles two epochs.
"""

from __future__ import annotations

import abc
import functools
import operator
import os
import threading
from typing import Iterator

import numpy as np
from PIL import Image

__all__ = ["Dataset", "ArrayDataset", "resize_images", "to_unit_range", "host_rows", "select_classes"]

# Separate random streams for training batches and evaluation images, so that
# eval_images(n, seed=s) never equals the first training batch of seed s.
TRAIN_STREAM = 0
EVAL_STREAM = 1


def check_nonneg_int(name: str, value, minimum: int = 0) -> int:
    """``int(value)`` if it is an integer (Python, numpy or a 0-d JAX array) >= ``minimum``."""
    try:
        # operator.index accepts exactly the integer-like types (not floats, not strings).
        number = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        number = None
    if number is None or number < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return number


def host_rows(global_batch_size: int, process_index: int, process_count: int) -> np.ndarray:
    """Rows of the global batch that one host builds.

    Args:
      global_batch_size: rows in the batch across all hosts.
      process_index: this host's index, in ``[0, process_count)``.
      process_count: number of hosts.

    Returns:
      ``np.arange(p * L, (p + 1) * L)`` with ``L = global_batch_size // process_count``.

    Raises:
      ValueError: when the batch does not split evenly, or the indices are out of range.
    """
    global_batch_size = check_nonneg_int("global_batch_size", global_batch_size, 1)
    process_count = check_nonneg_int("process_count", process_count, 1)
    process_index = check_nonneg_int("process_index", process_index)
    if process_index >= process_count:
        raise ValueError(
            f"process_index must be in [0, process_count={process_count}), got {process_index}"
        )
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"process_count={process_count}; choose a global batch size that is a multiple "
            f"of {process_count} (e.g. {(global_batch_size // process_count + 1) * process_count})"
        )
    local = global_batch_size // process_count
    return np.arange(process_index * local, (process_index + 1) * local)


def to_unit_range(images: np.ndarray) -> np.ndarray:
    """Stored images (uint8 in [0, 255], or float32 already in [-1, 1]) -> float32 in [-1, 1]."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 127.5 - 1.0
    return images.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=16)
def _bicubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Pillow's 1-D antialiased bicubic resampling as an ``(n_out, n_in)`` matrix.

    Resampling is linear and separable, so resizing an identity image along one axis
    yields the operator itself; applying it with matmuls then resizes a whole stack of
    images at once instead of one Pillow call per plane.
    """
    eye = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
    return np.asarray(eye.resize((n_in, n_out), Image.Resampling.BICUBIC), dtype=np.float32)


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize a stack of images to ``size x size`` with Pillow's antialiased bicubic filter.

    Args:
      images: ``(N, H, W, C)`` uint8 (result rounded and clipped to [0, 255]) or float32
        in [-1, 1] (result clipped to [-1, 1], since bicubic overshoots at edges).
      size: output height and width.

    Returns:
      ``(N, size, size, C)`` array of the input dtype.
    """
    size = check_nonneg_int("image_size", size, 1)
    _, h, w, _ = images.shape
    if (h, w) == (size, size):
        return images
    rows, cols = _bicubic_matrix(h, size), _bicubic_matrix(w, size)
    planes = np.moveaxis(images, -1, 1).astype(np.float32)  # (N, C, H, W): batched matmuls
    out = np.moveaxis(rows @ planes @ cols.T, 1, -1)
    if images.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


class Dataset(abc.ABC):
    """Image dataset with stateless, shardable batches.

    Attributes:
      name: the name given to :func:`diffjax.data.load_dataset`.
      split: ``"train"`` or ``"test"``.
      seed: base seed mixed into every random draw of this dataset.
      image_shape: ``(H, W, C)`` of every image.
      num_classes: number of label classes, 0 if unlabelled (labels are then 0).
      num_examples: dataset size, or ``None`` for an endless stream.
    """

    name: str
    split: str
    seed: int
    image_shape: tuple[int, int, int]
    num_classes: int
    num_examples: int | None

    @abc.abstractmethod
    def _rows(
        self, step: int, global_batch_size: int, rows: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Images (float32 [-1, 1]) and int32 labels of the given rows of global batch ``step``."""

    @abc.abstractmethod
    def eval_images(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` deterministic images, float32 ``(n, H, W, C)`` in [-1, 1], for metrics."""

    def _batch_of_rows(self, step: int, global_batch_size: int, rows: np.ndarray, seed: int) -> dict[str, np.ndarray]:
        """The given rows of global batch ``step`` as a batch dict (datasets with more entries extend it)."""
        images, labels = self._rows(step, global_batch_size, rows, seed)
        return {"image": images, "label": labels}

    def _row(self, step: int, global_batch_size: int, row: int, seed: int) -> dict[str, np.ndarray]:
        """One row of global batch ``step``: the pipeline's record (a batch's rows never depend on each other)."""
        return {k: v[0] for k, v in self._batch_of_rows(step, global_batch_size, np.asarray([row]), seed).items()}

    def batch(
        self,
        step: int,
        global_batch_size: int,
        *,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ) -> dict[str, np.ndarray]:
        """This host's share of global batch ``step``.

        Args:
          step: training step (>= 0).
          global_batch_size: rows in the batch across all hosts.
          seed: batch seed (>= 0), mixed with the dataset seed.
          process_index: this host's index (``jax.process_index()``).
          process_count: number of hosts (``jax.process_count()``).

        Returns:
          ``{"image": float32 (L, H, W, C) in [-1, 1], "label": int32 (L,)}`` with
          ``L = global_batch_size // process_count``: rows ``[p*L, (p+1)*L)`` of the global batch.

        Raises:
          ValueError: when ``global_batch_size`` is not divisible by ``process_count``,
            or an argument is negative / not an integer.
        """
        step = check_nonneg_int("step", step)
        seed = check_nonneg_int("seed", seed)
        rows = host_rows(global_batch_size, process_index, process_count)
        return self._batch_of_rows(step, int(global_batch_size), rows, seed)

    def records(
        self,
        global_batch_size: int,
        start_step: int = 0,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
    ):
        """This host's rows of every step from ``start_step`` on, as a random-access ``grain.MapDataset``.

        Element ``k`` is row ``host_rows[k % L]`` of global batch ``start_step + k // L``
        (``L`` rows per host), decoded, scaled, cropped and flipped by this dataset's own
        seeded rules, so any element is a pure function of its index: the step is the
        pipeline's whole position, and the hosts read disjoint rows of one global batch.

        Args:
          global_batch_size, start_step, seed, process_index, process_count: as in :meth:`iterator`.

        Returns:
          An endless ``grain.MapDataset`` of ``{"image", "label", ...}`` rows.
        """
        import grain  # local: the pipeline's only user of it

        start_step = check_nonneg_int("start_step", start_step)
        seed = check_nonneg_int("seed", seed)
        rows = host_rows(global_batch_size, process_index, process_count)
        size, local = int(global_batch_size), len(rows)

        def record(k: int) -> dict[str, np.ndarray]:
            step, r = divmod(k, local)
            return self._row(step, size, int(rows[r]), seed)

        return grain.MapDataset.range(start_step * local, _ENDLESS).map(record)

    def iterator(
        self,
        global_batch_size: int,
        start_step: int = 0,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        prefetch: int = 2,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Endless iterator over ``batch(s, ...)`` for ``s = start_step, start_step + 1, ...``.

        The rows come from :meth:`records` through grain: decoded by ``DIFFJAX_DECODE_THREADS``
        threads (default the CPU count, at most 32) ``prefetch`` batches ahead, then
        batched in order, so the batches are exactly :meth:`batch`'s.

        Args:
          global_batch_size, seed, process_index, process_count: as in :meth:`batch`.
          start_step: first step to yield (the step to resume from).
          prefetch: batches decoded ahead by the threads; 0 decodes each row when it is needed.

        Returns:
          A generator; closing it (or dropping it) stops grain's threads.
        """
        import grain

        # Validate now, not at the first next(), so mistakes surface at the call site.
        prefetch = check_nonneg_int("prefetch", prefetch)
        records = self.records(global_batch_size, start_step, seed, process_index, process_count)
        local = len(host_rows(global_batch_size, process_index, process_count))
        threads = decode_threads() if prefetch else 0
        options = grain.ReadOptions(num_threads=threads, prefetch_buffer_size=prefetch * local)
        batches = records.to_iter_dataset(options).batch(local, drop_remainder=True)
        return _closing(iter(batches))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes}, "
            f"num_examples={self.num_examples})"
        )


# MapDataset needs a length: one no run reaches stands for "endless".
_ENDLESS = 2**62


def decode_threads() -> int:
    """Threads that decode rows (``DIFFJAX_DECODE_THREADS``, default the CPU count, at most 32)."""
    return int(os.environ.get("DIFFJAX_DECODE_THREADS", 0)) or min(32, os.cpu_count() or 1)


def _closing(batches):
    """Yield from a grain iterator; closing the generator stops grain's prefetch threads."""
    try:
        yield from batches
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()


class ArrayDataset(Dataset):
    """A finite in-memory dataset: images decoded once, batches by numpy indexing.

    Args:
      name: dataset name.
      split: split name.
      images: ``(N, H, W, C)`` uint8 in [0, 255] or float32 in [-1, 1].
      labels: ``(N,)`` integer labels, or ``None`` when unlabelled.
      num_classes: number of classes (0 when unlabelled).
      seed: base seed (>= 0).
    """

    def __init__(self, name, split, images, labels, num_classes, seed=0):
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be a non-empty (N, H, W, C) array, got {images.shape}")
        if images.dtype not in (np.uint8, np.float32):
            raise ValueError(f"images must be uint8 or float32, got {images.dtype}")
        self.name, self.split = name, split
        self.seed = check_nonneg_int("seed", seed)
        self._images = images
        if labels is None:
            labels = np.zeros(images.shape[0], np.int32)
        self._labels = np.asarray(labels, np.int32)
        if self._labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {self._labels.shape}")
        self.image_shape = tuple(int(d) for d in images.shape[1:])
        self.num_classes = int(num_classes)
        self.num_examples = int(images.shape[0])
        self._perm_cache: dict[tuple[int, int, int], np.ndarray] = {}
        self._cache_lock = threading.Lock()

    def _permutation(self, stream: int, seed: int, epoch: int) -> np.ndarray:
        # A consecutive run of steps reuses one or two epochs' permutations: keep the last
        # few per instance (a lock, because the prefetch thread calls this too).
        key = (stream, seed, epoch)
        with self._cache_lock:
            perm = self._perm_cache.get(key)
        if perm is None:
            rng = np.random.default_rng([stream, self.seed, seed, epoch])
            perm = rng.permutation(self.num_examples)
            with self._cache_lock:
                self._perm_cache[key] = perm
                while len(self._perm_cache) > 4:
                    self._perm_cache.pop(next(iter(self._perm_cache)))
        return perm

    def _indices(self, step, global_batch_size, rows, seed) -> np.ndarray:
        """Storage indices of the given rows of global batch ``step``."""
        positions = step * global_batch_size + rows  # python ints: no int64 overflow worries
        epochs, within = np.divmod(positions, self.num_examples)
        index = np.empty_like(positions)
        # At most two epochs meet inside one batch (unless B > N): loop over the few present.
        for epoch in np.unique(epochs):
            sel = epochs == epoch
            index[sel] = self._permutation(TRAIN_STREAM, seed, int(epoch))[within[sel]]
        return index

    def _rows(self, step, global_batch_size, rows, seed):
        index = self._indices(step, global_batch_size, rows, seed)
        return to_unit_range(self._images[index]), self._labels[index]

    def eval_images(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` distinct examples of this split in a seeded order (``n <= num_examples``).

        Args:
          n: number of images.
          seed: selects the order (>= 0).

        Returns:
          float32 ``(n, H, W, C)`` in [-1, 1].
        """
        n = check_nonneg_int("n", n, 1)
        seed = check_nonneg_int("seed", seed)
        if n > self.num_examples:
            raise ValueError(
                f"eval_images: asked for n={n} images but the {self.split!r} split of "
                f"{self.name!r} has only {self.num_examples}"
            )
        index = self._permutation(EVAL_STREAM, seed, 0)[:n]
        return to_unit_range(self._images[index])

    def labels(self) -> np.ndarray:
        """All labels of the split, int32 ``(N,)``, in storage order."""
        return self._labels.copy()

    def stored_images(self) -> np.ndarray:
        """All images of the split as stored (uint8 or float32 ``(N, H, W, C)``), read-only view."""
        view = self._images.view()
        view.flags.writeable = False
        return view

def select_classes(dataset: Dataset, classes) -> ArrayDataset:
    """The examples of ``classes`` only, relabelled ``0 .. len(classes) - 1`` in the given order.

    E.g. ``select_classes(fashion_mnist, (7, 9))``: sneakers become class 0 and
    ankle boots class 1 (a two-domain set for a domain classifier);
    ``(9,)`` keeps the ankle boots alone (a target-domain score model).

    Args:
      dataset: a labelled in-memory dataset (``digits``, ``fashion_mnist``, ...).
      classes: distinct class ids of ``dataset``.

    Returns:
      An :class:`ArrayDataset` with ``num_classes = len(classes)``.

    Raises:
      ValueError: on an unlabelled or streaming dataset, or a class id out of range or repeated.
    """
    if not isinstance(dataset, ArrayDataset) or dataset.num_classes == 0:
        raise ValueError(f"selecting classes needs a labelled in-memory dataset, got {dataset!r}")
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < dataset.num_classes for c in classes):
        raise ValueError(
            f"classes must be distinct ids in [0, {dataset.num_classes}) of {dataset.name!r}, got {classes}"
        )
    labels = dataset.labels()
    keep = np.isin(labels, classes)
    relabel = np.zeros(dataset.num_classes, np.int32)
    relabel[classes] = np.arange(len(classes), dtype=np.int32)
    return ArrayDataset(
        dataset.name, dataset.split, dataset._images[keep], relabel[labels[keep]], len(classes), dataset.seed
    )
