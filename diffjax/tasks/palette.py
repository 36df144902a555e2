"""Palette (Saharia et al., 2022): one conditional model per image-to-image task.

The network sees the noisy target ``x_t`` with a condition image concatenated
along channels (``UNet(cond=...)``); training is the usual denoising loss on the
clean target, optionally restricted to the hole (``loss_mask``). This module
holds the conditions and the sampling; :mod:`diffjax.pipelines.palette` applies
them to data batches and input files.

======================  ===========================================================  ==========
task                    condition (channels last)                                    channels
======================  ===========================================================  ==========
inpainting/uncropping   known pixels, standard noise in the hole; then the mask      ``C + 1``
colorization            BT.601 luma                                                  ``1``
JPEG restoration        the decoded JPEG                                             ``C``
multi-task              the degraded image (luma repeated to ``C`` for colour), mask ``C + 1``
======================  ===========================================================  ==========

Conditions are built on the host in numpy (JPEG needs Pillow); the sampling
functions are pure JAX and jit-able.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.degradations import LUMA_WEIGHTS, jpeg_compress
from diffjax.guidance import sample_with_paste_back
from diffjax.samplers.base import Sampler, sample
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = [
    "inpainting_condition",
    "colorization_condition",
    "jpeg_condition",
    "multitask_condition",
    "palette_restore",
    "keep_luminance",
    "KINDS",
]

#: What a condition can be built for; inpainting covers uncropping (only the masks differ).
KINDS = ("inpainting", "colorization", "jpeg")


def _check_images(images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (B, H, W, C), got shape {images.shape}")
    return images


def inpainting_condition(images, masks, noise) -> np.ndarray:
    """The inpainting / uncropping condition: known pixels, noise in the hole, then the mask.

    Args:
      images: ``(B, H, W, C)`` in [-1, 1].
      masks: ``(B, H, W)`` or ``(B, H, W, 1)``, 1 = known, 0 = fill.
      noise: standard normal ``(B, H, W, C)`` (the hole holds no information, so
        it gets noise rather than a constant the network could mistake for content).

    Returns:
      ``(B, H, W, C + 1)`` float32.
    """
    images = _check_images(images)
    masks = np.asarray(masks, np.float32)
    if masks.ndim == 3:
        masks = masks[..., None]
    if masks.shape != images.shape[:3] + (1,):
        raise ValueError(f"masks must be (B, H, W) or (B, H, W, 1) for images {images.shape}, got {masks.shape}")
    noise = np.asarray(noise, np.float32)
    if noise.shape != images.shape:
        raise ValueError(f"noise must be shaped like images {images.shape}, got {noise.shape}")
    filled = masks * images + (1.0 - masks) * noise
    return np.concatenate([filled, masks], axis=-1)


def colorization_condition(images) -> np.ndarray:
    """The colorization condition: BT.601 luma of RGB images, ``(B, H, W, 1)``."""
    images = _check_images(images)
    if images.shape[-1] != 3:
        raise ValueError(f"colorization needs RGB images (3 channels), got shape {images.shape}")
    return (images @ np.asarray(LUMA_WEIGHTS, np.float32))[..., None]


def keep_luminance(rgb: Array, luma: Array) -> Array:
    """Colour images whose BT.601 luma is exactly ``luma``, in ``[-1, 1]``, keeping the hue of ``rgb``.

    Each pixel becomes ``luma + k (rgb - Y(rgb))`` with ``Y`` the luma of
    :func:`diffjax.degradations.to_grayscale` (weights summing to one, so the
    chroma ``rgb - Y(rgb)`` has zero luma): the output's luma is ``luma`` whatever
    ``k``. ``k = 1`` where that stays in ``[-1, 1]``; elsewhere the largest
    ``k < 1`` that does (the colour is desaturated, never the brightness changed).
    Jit-able.

    Args:
      rgb: ``(..., 3)`` colour estimates (e.g. Palette's colorization output).
      luma: ``(..., 1)`` the grayscale input, in ``[-1, 1]``.

    Returns:
      ``(..., 3)`` float array, in ``[-1, 1]`` when ``luma`` is.

    Raises:
      ValueError: on shapes other than ``(..., 3)`` and ``(..., 1)`` of the same leading size.
    """
    rgb, luma = jnp.asarray(rgb), jnp.asarray(luma)
    if rgb.shape[-1] != 3 or luma.shape != rgb.shape[:-1] + (1,):
        raise ValueError(f"keep_luminance needs rgb (..., 3) and luma (..., 1) of the same size, got "
                         f"{rgb.shape} and {luma.shape}")
    luma = luma.astype(rgb.dtype)
    chroma = rgb - rgb @ jnp.asarray(LUMA_WEIGHTS, rgb.dtype)[:, None]
    # Largest k in [0, 1] with -1 <= luma + k chroma <= 1 in every channel.
    room = jnp.where(chroma > 0, (1.0 - luma) / jnp.where(chroma > 0, chroma, 1.0),
                     jnp.where(chroma < 0, (-1.0 - luma) / jnp.where(chroma < 0, chroma, -1.0), 1.0))
    k = jnp.clip(jnp.min(room, axis=-1, keepdims=True), 0.0, 1.0)
    return luma + k * chroma


def jpeg_condition(images, qualities) -> np.ndarray:
    """The JPEG-restoration condition: each image through Pillow's codec at its quality.

    Args:
      images: ``(B, H, W, C)`` in [-1, 1], C in {1, 3}.
      qualities: one JPEG quality per image (or one int for all), in 1..95.

    Returns:
      ``(B, H, W, C)`` float32 decoded images.
    """
    images = _check_images(images)
    qualities = np.broadcast_to(np.asarray(qualities), images.shape[:1])
    return np.stack([jpeg_compress(img, int(q)) for img, q in zip(images, qualities)]).astype(np.float32)


def multitask_condition(kind: str, images, *, masks=None, noise=None, qualities=None) -> np.ndarray:
    """The multi-task condition: the degraded image in ``C`` channels, then the mask.

    Tasks without a hole get a mask of ones, so one network tells them apart by
    the content alone, as the multi-task Palette model does.

    Args:
      kind: one of :data:`KINDS`.
      images: ``(B, H, W, C)`` clean images (inpainting: the known pixels; for
        ``colorization`` and ``jpeg`` at sampling time, pass the degraded input
        and ``qualities=None`` to use it as it is).
      masks, noise: for ``inpainting``.
      qualities: for ``jpeg`` at training time; ``None`` keeps ``images``.

    Returns:
      ``(B, H, W, C + 1)`` float32.
    """
    images = _check_images(images)
    ones = np.ones(images.shape[:3] + (1,), np.float32)
    if kind == "inpainting":
        return inpainting_condition(images, masks, noise)
    if kind == "colorization":
        luma = colorization_condition(images) if images.shape[-1] == 3 else images
        return np.concatenate([np.repeat(luma, 3, axis=-1), ones], axis=-1)
    if kind == "jpeg":
        degraded = images if qualities is None else jpeg_condition(images, qualities)
        return np.concatenate([degraded, ones], axis=-1)
    raise ValueError(f"unknown Palette task {kind!r}; expected one of {KINDS}")


def palette_restore(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    key: PRNGKey,
    sampler: Sampler,
    known: Array | None = None,
    mask=None,
    denoise: bool = True,
) -> tuple[Array, dict]:
    """Sample a Palette model's output, pasting known pixels back when there are any.

    Args:
      score_fn: the conditional network as ``score_fn(x, t)``, its condition bound
        (``model_score_fn(partial(model, cond=cond), sde, ...)``).
      sde: the process the model was trained under.
      shape: ``(B, H, W, C)`` of the output.
      key: a ``jax.random`` key.
      sampler: any :mod:`diffjax.samplers` sampler.
      known, mask: for inpainting / uncropping, the images holding the known
        pixels and the mask (1 = known); they are pasted back at every step
        (:func:`diffjax.guidance.sample_with_paste_back`). Both or neither.
      denoise: finish with Tweedie's denoising step.

    Returns:
      ``(images, info)``; images clipped to [-1, 1].
    """
    if (known is None) != (mask is None):
        raise ValueError("palette_restore needs both known and mask, or neither")
    if known is None:
        prior_key, sample_key = jax.random.split(key)
        x, info = sample(score_fn, sde, sde.prior_sample(prior_key, shape), key=sample_key, sampler=sampler,
                         denoise=denoise)
    else:
        known = jnp.asarray(known)
        if known.shape != tuple(shape):
            raise ValueError(f"known must have the output shape {tuple(shape)}, got {known.shape}")
        x, info = sample_with_paste_back(score_fn, sde, known, mask, key=key, sampler=sampler, denoise=denoise)
    return jnp.clip(x, -1.0, 1.0), info

