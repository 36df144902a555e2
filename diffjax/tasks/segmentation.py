"""Per-pixel features from a diffusion model's network (Baranchuk et al., 2022).

An image ``x`` is noised to ``x_t = alpha_t x + sigma_t n`` at a few times ``t`` with
one noise image ``n`` drawn once and kept fixed (the paper's choice: the same ``n`` for
every image, so a pixel's features depend only on the image); the network's activations
at chosen blocks are upsampled bilinearly to the image size and concatenated per pixel,
in the order ``for t in times: for block in blocks``.

The network reaches this module only as ``activations_fn(x_t, t) -> {name: (B, h, w, c)}``
(e.g. ``lambda x, t: unet.activations(x, t)`` for ``diffjax.nn.UNet``), so the math
stays free of Flax.

Features are big (channels x pixels), so :func:`compute_features` builds them in
batches of images and writes each batch into a preallocated array, a NumPy ``.npy``
memory map from :func:`open_feature_memmap` when they should not live in RAM.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey

__all__ = ["fixed_noise", "ddpm_feature_fn", "feature_channels", "stream_features", "compute_features",
           "open_feature_memmap"]


def fixed_noise(key: PRNGKey, image_shape: Sequence[int]) -> Array:
    """The one noise image ``n ~ N(0, I)`` of shape ``(H, W, C)`` that every image shares."""
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {tuple(image_shape)}")
    return jax.random.normal(key, tuple(image_shape), jnp.float32)


def _check_times(sde: SDE, times) -> tuple[float, ...]:
    times = tuple(float(t) for t in np.atleast_1d(np.asarray(times, np.float64)))
    if not times or not all(0 < t <= sde.T for t in times):
        raise ValueError(f"times must be a non-empty list of values in (0, T={sde.T}], got {times}")
    return times


def ddpm_feature_fn(
    activations_fn: Callable[[Array, Array], dict],
    sde: SDE,
    *,
    times: Sequence[float],
    blocks: Sequence[str],
    noise: Array,
) -> Callable[[Array], Array]:
    """``features(images) -> (B, H, W, F)``: noised activations, upsampled and concatenated.

    Args:
      activations_fn: ``activations_fn(x_t, t)`` with ``t`` of shape ``(B,)``, returning a
        dict of NHWC activations whose sizes divide or equal the image size.
      sde: the process the network was trained with (``alpha_t``, ``sigma_t``).
      times: noise levels in ``(0, T]`` (the paper's 50, 150, 250 of 1,000 steps are
        0.05, 0.15, 0.25 on a continuous VP process with ``T = 1``).
      blocks: names of the activations to use, in order.
      noise: ``(H, W, C)`` fixed noise (:func:`fixed_noise`), shared by all images.

    Returns:
      A pure function of ``(B, H, W, C)`` images in [-1, 1]; jit it once and call it on
      batches. ``F = len(times) * sum(channels of blocks)`` (:func:`feature_channels`).

    Raises:
      ValueError: on bad times or an empty block list (at once), and at the first call on
        an unknown block name (listing the available ones) or images whose shape differs
        from the noise's.
    """
    times = _check_times(sde, times)
    blocks = tuple(blocks)
    if not blocks or not all(isinstance(b, str) for b in blocks):
        raise ValueError(f"blocks must be a non-empty list of activation names, got {blocks!r}")
    noise = jnp.asarray(noise, jnp.float32)
    if noise.ndim != 3:
        raise ValueError(f"noise must be one (H, W, C) image, got shape {noise.shape}")

    def features(images: Array) -> Array:
        images = jnp.asarray(images, jnp.float32)
        if images.ndim != 4 or images.shape[1:] != noise.shape:
            raise ValueError(f"images must have shape (B, {', '.join(map(str, noise.shape))}) like the "
                             f"fixed noise, got {images.shape}")
        batch, height, width, _ = images.shape
        parts = []
        for t in times:
            t_batch = jnp.full((batch,), t, jnp.float32)
            alpha, sigma = sde.alpha_sigma(t_batch)
            x_t = alpha[:, None, None, None] * images + sigma[:, None, None, None] * noise[None]
            acts = activations_fn(x_t, t_batch)
            for name in blocks:
                if name not in acts:
                    raise ValueError(f"unknown block {name!r}; the network gives {list(acts)}")
                a = acts[name].astype(jnp.float32)
                if a.shape[1:3] != (height, width):
                    # Half-pixel centres, as PyTorch's interpolate(align_corners=False).
                    a = jax.image.resize(a, (batch, height, width, a.shape[-1]), "bilinear")
                parts.append(a)
        return jnp.concatenate(parts, axis=-1)

    return features


def feature_channels(feature_fn: Callable[[Array], Array], image_shape: Sequence[int]) -> int:
    """``F`` of a feature function for images of ``image_shape`` (e.g. to size a memory map).

    Shape inference only (``jax.eval_shape`` on one image): the network is traced, not run.
    """
    return int(jax.eval_shape(feature_fn, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)).shape[-1])


def stream_features(feature_fn: Callable[[Array], Array], images: np.ndarray,
                    batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, features of images[start:start + b])`` for consecutive batches.

    Every call of ``feature_fn`` sees exactly ``batch_size`` images (the last batch is
    padded with copies of its final image and the padding dropped), so a jitted
    ``feature_fn`` compiles once.

    Args:
      feature_fn: from :func:`ddpm_feature_fn`, ideally jitted.
      images: ``(N, H, W, C)`` float images in [-1, 1] (a NumPy array or memory map).
      batch_size: images per call (>= 1).

    Yields:
      ``(start, float32 (b, H, W, F))`` with ``b = min(batch_size, N - start)``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = len(images)
    for start in range(0, n, batch_size):
        chunk = np.asarray(images[start : start + batch_size], np.float32)
        size = len(chunk)
        if size < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - size, axis=0)])
        yield start, np.asarray(feature_fn(chunk))[:size]


def compute_features(feature_fn: Callable[[Array], Array], images: np.ndarray, batch_size: int,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Features of all ``images``, built batch by batch into ``out``.

    Args:
      feature_fn, images, batch_size: as in :func:`stream_features`.
      out: float32 ``(N, H, W, F)`` to fill, e.g. :func:`open_feature_memmap`; ``None``
        allocates it in RAM.

    Returns:
      ``out``.

    Raises:
      ValueError: when ``out`` has the wrong shape.
    """
    for start, feats in stream_features(feature_fn, images, batch_size):
        if start == 0:  # F from the first batch: no extra trace at another batch size
            shape = (len(images), *feats.shape[1:])
            if out is None:
                out = np.empty(shape, np.float32)
            elif tuple(out.shape) != shape:
                raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
        out[start : start + len(feats)] = feats
    return out


def open_feature_memmap(path: str, shape: Sequence[int]) -> np.ndarray:
    """A float32 ``.npy`` memory map to write features into (read back with
    ``np.load(path, mmap_mode="r")``; plain ``.npy``, never pickled)."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(int(s) for s in shape))
