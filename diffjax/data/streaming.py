"""Records decoded when a batch needs them: an array-like image store with a decoding thread pool.

A :class:`LazyImages` stands where an in-memory ``(N, H, W, C)`` uint8 array used
to: indexing it with storage indices decodes those files (Pillow releases the
GIL while decoding, so worker threads decode in parallel) and keeps nothing, so
host memory is that of the batches in flight whatever the number of files.
Which files a batch reads stays a pure function of the step
(:class:`~diffjax.data.pipeline.ArrayDataset`), so the checkpoint's step is the
pipeline's whole position: a run resumed mid-epoch reads exactly the batches
the uninterrupted run read, and each host decodes only its own rows. Training
reads through grain (:meth:`~diffjax.data.pipeline.Dataset.iterator`); this pool
serves :meth:`~diffjax.data.pipeline.Dataset.batch` and evaluation images.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Callable, Sequence

import numpy as np

from diffjax.data.pipeline import decode_threads

__all__ = ["LazyImages", "decode_pool", "scale_and_crop", "CROPS"]

CROPS = ("center", "random")

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def decode_pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's decoding threads (``DIFFJAX_DECODE_THREADS``, default the CPU count, at most 32)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(decode_threads(), thread_name_prefix="diffjax-decode")
        return _POOL


def scale_and_crop(image: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Scale ``image`` so its shorter side is ``size`` (antialiased bicubic), then cut a square.

    The centre square is exactly what :func:`diffjax.data.folder.read_image` gives for
    ``image_size=size`` (same filter and rounding).

    Args:
      image: uint8 ``(H, W, C)``.
      size: output side.
      rng: ``None`` keeps the centre square; a generator draws the square's position uniformly.

    Returns:
      uint8 ``(size, size, C)``.
    """
    from PIL import Image  # resampling only: decoding stays in diffjax.data.folder.read_image

    h, w, c = image.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        # Pillow releases the GIL while resampling, so the decoding threads run in parallel.
        pil = Image.fromarray(image[..., 0] if c == 1 else image)
        image = np.asarray(pil.resize((new_w, new_h), Image.Resampling.BICUBIC)).reshape(new_h, new_w, c)
    if rng is None:
        top, left = (new_h - size) // 2, (new_w - size) // 2
    else:
        top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
    return np.ascontiguousarray(image[top:top + size, left:left + size])


class LazyImages:
    """A read-only ``(N, *shape)`` array whose rows are decoded on indexing.

    Args:
      read: ``read(i) -> ndarray`` of ``shape`` for storage index ``i``.
      count: ``N``.
      shape: the shape of one row.
      dtype: the rows' dtype.
    """

    def __init__(self, read: Callable[[int], np.ndarray], count: int, shape: Sequence[int], dtype=np.uint8):
        self._read = read
        self.shape = (int(count),) + tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, index, read: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
        """Rows ``index`` (any integer array or boolean mask), decoded by the pool; ``read`` overrides the reader."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        flat = [int(i) for i in index.ravel()]
        reader = read or self._read
        items = list(decode_pool().map(reader, flat)) if len(flat) > 1 else [reader(i) for i in flat]
        out = np.empty((len(flat),) + self.shape[1:], self.dtype)
        for k, item in enumerate(items):
            if item.shape != self.shape[1:]:
                raise ValueError(f"row {flat[k]} decoded to shape {item.shape}, expected {self.shape[1:]}")
            out[k] = item
        return out.reshape(index.shape + self.shape[1:])

    def __getitem__(self, index) -> np.ndarray:
        return self.rows(index)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.rows(np.arange(len(self)))
        return out if dtype is None else out.astype(dtype)

    def view(self) -> np.ndarray:
        """Every row decoded (memory grows with ``N``: for small sets and tests)."""
        return np.asarray(self)
