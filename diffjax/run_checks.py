"""The checks every run kind, :class:`diffjax.Run` and the ``sample.py`` writers share (each exists once), and the
conversions of user arrays: float in ``[0, 1]`` or ``uint8``, one image or a batch, in; float32 in ``[0, 1]`` of
the input's rank, out."""

from __future__ import annotations

import logging
import os

import jax
import ml_collections
import numpy as np

from diffjax import distributed, workdir_io
from diffjax.pipelines.restoration import check_fill_mask
from diffjax.samplers.base import Sampler

__all__ = ["NONFINITE_MODES", "check_workdir_path", "check_workdir_writable", "check_int", "check_num", "check_channels",
           "check_training_section", "restore_or_start", "lead_print", "as_pixels", "as_known_masks", "to_unit", "as_key",
           "check_sampler"]

NONFINITE_MODES = ("stop", "skip")


def check_workdir_path(workdir) -> str:
    """``workdir`` as a path string, or a ValueError if it is not one (the first check of train and load)."""
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir):
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    workdir = os.fspath(workdir)
    # A bucket URL is written through etils.epath; one it cannot write (unknown scheme, file system
    # not installed) is refused here, before it could become a local folder named "gs:".
    workdir_io.check_url(workdir)
    return workdir


def check_int(value, name: str, minimum: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) >= ``minimum``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_num(num: int) -> None:
    """``sample.py --num``: at least one image."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")


def check_channels(pixels: np.ndarray, channels: int) -> None:
    """User images (``(N, H, W, C)``) must have the model's channel count."""
    if pixels.shape[-1] != channels:
        raise ValueError(f"images have {pixels.shape[-1]} channels; the model takes {channels}-channel images")


def restore_or_start(checkpointer, init_state, sharding):
    """The latest checkpoint's state restored onto ``sharding``, or ``init_state`` placed there if there is none.

    Every trainer resumes this way; a refused restore (another model's
    checkpoint) closes the checkpointer before the error propagates.
    """
    from diffjax.checkpoint import abstract_state

    if checkpointer.latest_step() is None:
        return jax.device_put(init_state, sharding)
    try:
        state = checkpointer.restore(abstract_state(lambda: init_state, sharding))
    except ValueError:
        checkpointer.close()
        raise
    if distributed.is_lead():
        logging.getLogger("diffjax.train").info("resumed from checkpoint step %d in %s", int(state.step),
                                                checkpointer.directory)
    return state


def check_workdir_writable(workdir: str) -> None:
    """Refuse (ValueError naming the path in the way and what to do) a workdir that cannot be created or written."""
    workdir_io.check_url(workdir)
    if workdir_io.url_scheme(workdir):
        return  # a bucket has no permission bits to read here: the first write names any refusal
    path = os.path.abspath(workdir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--workdir {workdir} cannot be created: {existing} is a file, not a directory; "
                         "choose another --workdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir} is not writable ({existing} does not allow writing); "
                         "choose a writable --workdir or fix its permissions")


def check_training_section(tc: ml_collections.ConfigDict) -> None:
    """``config.training``'s counts are integers in range, ``ema_decay`` in [0, 1), ``nonfinite`` a known mode."""
    for key, minimum in (("num_steps", 1), ("batch_size", 1), ("log_every", 1), ("ckpt_every", 1),
                         ("keep_checkpoints", 1), ("sample_every", 0), ("num_grid_samples", 0)):
        if isinstance(tc[key], bool) or not isinstance(tc[key], (int, np.integer)):
            raise ValueError(f"config.training.{key} must be an integer, got {tc[key]!r} "
                             f"({type(tc[key]).__name__}); e.g. --config.training.{key}=100")
        if tc[key] < minimum:
            raise ValueError(f"config.training.{key} must be >= {minimum}, got {tc[key]}")
    if not isinstance(tc.ema_decay, (int, float)) or not 0.0 <= tc.ema_decay < 1.0:
        raise ValueError(f"config.training.ema_decay must lie in [0, 1), got {tc.ema_decay!r}; e.g. 0.999")
    if tc.nonfinite not in NONFINITE_MODES:
        raise ValueError(f"config.training.nonfinite must be one of {list(NONFINITE_MODES)}, got {tc.nonfinite!r}")


def lead_print(message: str) -> None:
    """Print on process 0 only."""
    if distributed.is_lead():
        print(message)


def as_pixels(images, name: str = "images") -> tuple[np.ndarray, bool]:
    """User images (numpy or JAX, ``uint8`` or floats in ``[0, 1]``, ``(H, W, C)`` or ``(N, H, W, C)``, ``C`` 1 or 3)
    -> ``(N, H, W, C)`` float32 on the 0..255 scale, and whether one image was given; else a ValueError naming ``name``.
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
    """User masks (bool or 0 / 1, ``(H, W)`` or ``(N, H, W)``, optionally ``[..., 1]``) for the ``(N, H, W, C)`` batch
    ``image_shape`` -> ``(N, H, W)`` float32, 1 = known (keep), 0 = fill; a ValueError (naming ``name``) for another
    shape, other values, or a mask with nothing to fill or nothing known.
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
