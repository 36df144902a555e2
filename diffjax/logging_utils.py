"""Run outputs: TensorBoard events, a JSONL metrics log, PNG images and grids.

TensorBoard files are written with ``tensorboardX`` (no TensorFlow needed);
``metrics.jsonl`` holds one JSON object per logged step, easy to read back with
any tool. Only process 0 of a multi-host job writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import jax
import numpy as np

from diffjax import workdir_io
from diffjax.outputs import save_image, to_uint8  # to_uint8 re-exported: the writers' one 8-bit rounding

__all__ = ["MetricWriter", "to_uint8", "image_grid", "save_png", "save_grid", "save_samples", "save_class_samples",
           "Throughput"]

log = logging.getLogger("diffjax")


class MetricWriter:
    """Writes scalars to TensorBoard (``workdir/tb``) and ``workdir/metrics.jsonl``.

    Args:
      workdir: the run's directory.
      enabled: write anything at all (default: only on process 0).
    """

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        self._jsonl = None
        if self.enabled:
            workdir_io.makedirs(workdir)
            self._tb = _tensorboard_writer(os.path.join(workdir, "tb"))
            self._jsonl = workdir_io.AppendLog(self.jsonl_path)

    def write_scalars(self, step: int, scalars: dict) -> None:
        """Log ``{name: number}`` at ``step``."""
        if not self.enabled:
            return
        values = {k: float(v) for k, v in scalars.items()}
        for name, value in values.items():
            if self._tb is not None:
                self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()

    def flush(self) -> None:
        """Make every scalar written so far durable (a bucket's ``metrics.jsonl`` is uploaded now)."""
        if self.enabled:
            self._jsonl.flush(force=True)

    def write_image(self, step: int, name: str, image_uint8: np.ndarray) -> None:
        """Log one ``(H, W, C)`` uint8 image to TensorBoard."""
        if self.enabled and self._tb is not None:
            self._tb.add_image(name, image_uint8, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close the TensorBoard and JSONL files (no-op on processes that do not write)."""
        if self.enabled:
            if self._tb is not None:
                self._tb.close()
            self._jsonl.close()
            self.enabled = False


def _tensorboard_writer(logdir: str):
    """A tensorboardX ``SummaryWriter`` on ``logdir``, or ``None`` (with one warning) where it cannot write.

    tensorboardX writes local folders itself, ``gs://`` through
    ``google-cloud-storage`` and ``s3://`` through ``boto3``; a bucket whose
    package is missing gets no TensorBoard events (``metrics.jsonl`` holds the
    same scalars) rather than a crash.
    """
    from tensorboardX import SummaryWriter, record_writer

    scheme = workdir_io.url_scheme(logdir)
    needs = {"gs": ("GCS_ENABLED", "google-cloud-storage"), "s3": ("S3_ENABLED", "boto3")}
    if scheme is not None and not getattr(record_writer, needs.get(scheme, ("", ""))[0], False):
        package = needs[scheme][1] if scheme in needs else None
        log.warning("no TensorBoard events for %s: %s (metrics.jsonl holds the same scalars)", logdir,
                    f"tensorboardX writes {scheme}:// with {package}: pip install {package}" if package
                    else f"tensorboardX cannot write {scheme}:// URLs")
        return None
    return SummaryWriter(logdir)


def image_grid(images: np.ndarray, columns: int | None = None, padding: int = 1) -> np.ndarray:
    """Tile ``(N, H, W, C)`` uint8 images into one ``(rows*H', cols*W', C)`` image.

    Args:
      images: uint8 batch.
      columns: images per row; default ``ceil(sqrt(N))``.
      padding: pixels of black between tiles.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"image_grid needs a batch (N, H, W, C), got shape {images.shape}")
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.zeros((rows * (h + padding) + padding, columns * (w + padding) + padding, c), images.dtype)
    for i, img in enumerate(images):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(path: str, image_uint8: np.ndarray) -> None:
    """Write an ``(H, W, C)`` uint8 image (C = 1 or 3) as PNG, atomically (:func:`diffjax.outputs.save_image`)."""
    save_image(path, image_uint8)


def save_grid(path: str, images: np.ndarray) -> np.ndarray:
    """Save a batch of ``[-1, 1]`` images as one PNG grid; returns the uint8 grid."""
    grid = image_grid(to_uint8(images))
    save_png(path, grid)
    return grid


def save_samples(output: str, images: np.ndarray) -> None:
    """Write ``[-1, 1]`` images as ``output/000000.png``, ... and the first 256 as ``output/grid.png``."""
    workdir_io.makedirs(output)
    for i, img in enumerate(to_uint8(images)):
        save_png(os.path.join(output, f"{i:06d}.png"), img)
    save_grid(os.path.join(output, "grid.png"), images[:256])


def save_class_samples(output: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write ``[-1, 1]`` images as ``output/000000_class3.png``, ... and the first 256 as ``output/grid.png``."""
    workdir_io.makedirs(output)
    for i, img in enumerate(to_uint8(images)):
        save_png(os.path.join(output, f"{i:06d}_class{int(labels[i])}.png"), img)
    save_grid(os.path.join(output, "grid.png"), images[:256])


class Throughput:
    """Images per second between successive calls, and an ETA for the run."""

    def __init__(self, start_step: int, total_steps: int, batch_size: int):
        self.total_steps = total_steps
        self.batch_size = batch_size
        self._last_step = start_step
        self._last_time = time.perf_counter()

    def update(self, step: int) -> dict:
        """Rates since the previous call: ``images_per_sec`` and ``eta_sec``."""
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        seconds = max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        steps_per_sec = steps / seconds
        return {
            "images_per_sec": steps_per_sec * self.batch_size,
            "eta_sec": max(self.total_steps - step, 0) / steps_per_sec,
        }
