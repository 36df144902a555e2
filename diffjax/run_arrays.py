"""Arrays in and out of :class:`diffjax.Run`: the checks and conversions of ``run.generate`` / ``run.restore``.

Users hand in numpy or JAX arrays, float in ``[0, 1]`` or ``uint8``, one image
``(H, W, C)`` or a batch ``(N, H, W, C)``; outputs are float32 numpy in
``[0, 1]`` with the rank of the input. Each image is then checked by the same
validators as ``sample.py --input`` (:func:`diffjax.pipelines.restoration.make_input`,
:func:`diffjax.pipelines.sr3.low_res_size_problem`), so both refuse the same things
with the same messages.
"""

from __future__ import annotations

import jax
import numpy as np

from diffjax.pipelines.restoration import check_fill_mask
from diffjax.samplers.base import Sampler

__all__ = ["as_pixels", "as_known_masks", "to_unit", "as_key", "check_sampler"]


def as_pixels(images, name: str = "images") -> tuple[np.ndarray, bool]:
    """User images -> ``(N, H, W, C)`` float32 on the 0..255 scale, and whether one image was given.

    Args:
      images: numpy or JAX array, ``uint8`` or floating point in ``[0, 1]``,
        ``(H, W, C)`` or ``(N, H, W, C)`` with ``C`` 1 or 3.
      name: how to name the argument in messages.

    Raises:
      ValueError: another dtype, values outside ``[0, 1]`` or not finite, another
        rank, an empty batch or a channel count other than 1 or 3.
    """
    try:
        array = np.asarray(images)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numpy or JAX array, got {type(images).__name__} ({err})") from None
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        if array.size and not np.all(np.isfinite(array)):
            raise ValueError(f"{name} hold NaN or inf values; expected floats in [0, 1] or uint8")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"{name} must be floats in [0, 1] or uint8 in [0, 255], got floats in "
                             f"[{float(array.min()):.4g}, {float(array.max()):.4g}]; divide uint8-range floats by 255")
        pixels = array.astype(np.float32) * 255.0
    else:
        raise ValueError(f"{name} must be uint8 or floating point in [0, 1], got dtype {array.dtype}")
    if pixels.ndim not in (3, 4):
        raise ValueError(f"{name} must be one image (H, W, C) or a batch (N, H, W, C), got shape {array.shape}; "
                         "add a channel axis to a grayscale (H, W) image with x[..., None]")
    single = pixels.ndim == 3
    pixels = pixels[None] if single else pixels
    if pixels.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch, shape {array.shape}")
    if pixels.shape[-1] not in (1, 3):
        raise ValueError(f"{name} must have 1 (grayscale) or 3 (RGB) channels last, got shape {array.shape}")
    return pixels, single


def as_known_masks(masks, image_shape: tuple[int, ...], name: str = "masks") -> np.ndarray:
    """User masks -> ``(N, H, W)`` float32, 1 = known (keep), 0 = fill, each checked.

    Args:
      masks: bool or numeric array of 0 / 1 (1 = keep), shaped ``(H, W)``,
        ``(H, W, 1)`` for one image or ``(N, H, W)``, ``(N, H, W, 1)`` for a batch.
      image_shape: the ``(N, H, W, C)`` batch the masks go with.
      name: how to name the argument in messages.

    Raises:
      ValueError: a shape that does not match the images, values other than 0
        and 1, or a mask with nothing to fill or nothing known.
    """
    m = np.asarray(masks)
    n, h, w = image_shape[:3]
    if m.shape in ((h, w), (h, w, 1)):
        m = np.broadcast_to(m.reshape(h, w), (n, h, w))  # one mask for every image
    elif m.shape in ((n, h, w), (n, h, w, 1)):
        m = m.reshape(n, h, w)
    else:
        raise ValueError(f"{name} must be (H, W) or (N, H, W) [or with a trailing 1] matching the images "
                         f"{tuple(image_shape)}, got shape {np.shape(masks)}")
    if m.dtype != bool:
        if not (np.issubdtype(m.dtype, np.number)):
            raise ValueError(f"{name} must be bool or numbers 0 / 1, got dtype {m.dtype}")
        values = np.unique(m)
        if not np.all(np.isin(values, [0, 1])):
            raise ValueError(f"{name} must hold 1 = keep and 0 = fill (bool or 0 / 1), got values "
                             f"{values[:8].tolist()}; a mask PNG (white = fill) converts with mask = png < 128")
    return np.stack([check_fill_mask(m[i] == 0, f"{name}[{i}]") for i in range(n)])


def to_unit(images: np.ndarray, single: bool) -> np.ndarray:
    """Model-range ``[-1, 1]`` images -> float32 numpy in ``[0, 1]`` (the batch axis dropped for one image)."""
    out = np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    return out[0] if single else out


def as_key(key, default_seed: int):
    """``None`` -> ``key(default_seed)``; an int -> ``key(int)``; a JAX key as it is."""
    if key is None:
        return jax.random.key(default_seed)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                       or (key.dtype == np.uint32 and key.shape == (2,))):
        return key
    raise ValueError(f"key must be a jax.random.key, an int seed or None (config.sampling.seed), got {key!r}")


def check_sampler(sampler):
    """``sampler`` itself when it is a :mod:`diffjax.samplers` sampler or ``None``; else a ValueError."""
    if sampler is not None and not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be a diffjax.samplers sampler (e.g. dj.samplers.DDIM(50)) or None "
                         f"(the run's config.sampling), got {type(sampler).__name__}")
    return sampler
