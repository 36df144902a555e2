"""Denoising pretraining for semantic segmentation (DDeP, Brempong et al., 2022).

A segmentation network is first trained to denoise unlabelled images under scaled
additive noise

    x~ = sqrt(1 - s^2) x + s eps,    eps ~ N(0, I),

predicting ``eps`` (the paper's best single level is ``s = 0.2``; a range of levels is
drawn uniformly per image). Its output layer is then replaced by one with a channel per
class and the whole network is fine-tuned on a few labelled images with per-pixel
cross-entropy (label 255 = ignore). The same fine-tuning from a random initialisation
is the baseline.

The network reaches this module as ``apply_fn(x, s) -> (B, H, W, C_out)`` with ``s``
of shape ``(B,)`` (its conditioning scalar: the noise level in pretraining, 0 for clean
images in fine-tuning), so the math stays free of Flax.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.tasks.pixel_classifier import masked_cross_entropy
from diffjax.typing import Array, PRNGKey

__all__ = ["check_noise_scales", "scaled_noise", "draw_noise_scales", "ddep_denoising_loss",
           "segmentation_loss"]


def check_noise_scales(noise_scales: Sequence[float]) -> tuple[float, float]:
    """``(s_min, s_max)`` of one level ``(s,)`` or a range ``(s_min, s_max)``, each in ``(0, 1)``.

    Raises:
      ValueError: on an empty, longer, unordered or out-of-range tuple.
    """
    scales = tuple(float(s) for s in np.atleast_1d(np.asarray(noise_scales, np.float64)))
    if len(scales) not in (1, 2) or not all(0 < s < 1 for s in scales) or scales[0] > scales[-1]:
        raise ValueError(f"noise_scales must be (s,) or (s_min, s_max) with 0 < s_min <= s_max < 1, got {scales}")
    return scales[0], scales[-1]


def scaled_noise(x: Array, eps: Array, s: Array) -> Array:
    """``sqrt(1 - s^2) x + s eps`` with one ``s`` per image (``s`` of shape ``(B,)``)."""
    s = jnp.asarray(s, x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.sqrt(1.0 - s**2) * x + s * eps


def draw_noise_scales(key: PRNGKey, batch: int, noise_scales: Sequence[float]) -> Array:
    """``(batch,)`` levels drawn uniformly from ``[s_min, s_max]`` (all ``s`` for a single level)."""
    lo, hi = check_noise_scales(noise_scales)
    return jax.random.uniform(key, (batch,), jnp.float32, lo, hi)


def ddep_denoising_loss(apply_fn: Callable[[Array, Array], Array], x: Array, key: PRNGKey,
                        noise_scales: Sequence[float] = (0.2,)) -> Array:
    """The pretraining loss: mean squared error of the predicted noise.

    Args:
      apply_fn: ``apply_fn(x_noisy, s) -> eps_hat`` shaped like ``x``.
      x: ``(B, H, W, C)`` clean images in [-1, 1].
      key: PRNG key (noise levels and noise).
      noise_scales: ``(s,)`` or ``(s_min, s_max)``.

    Returns:
      Scalar ``mean((eps_hat - eps)^2)``.
    """
    k_s, k_eps = jax.random.split(key)
    s = draw_noise_scales(k_s, x.shape[0], noise_scales)
    eps = jax.random.normal(k_eps, x.shape, x.dtype)
    return jnp.mean((apply_fn(scaled_noise(x, eps, s), s) - eps) ** 2)


def segmentation_loss(logits: Array, label_maps: Array) -> Array:
    """Per-pixel cross-entropy of ``(B, H, W, K)`` logits, averaged over pixels not labelled 255.

    Raises:
      ValueError: when the label maps are not ``logits.shape[:-1]``.
    """
    if tuple(label_maps.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"label_maps must have shape {tuple(logits.shape[:-1])}, got {tuple(label_maps.shape)}")
    return masked_cross_entropy(logits.reshape(-1, logits.shape[-1]), label_maps.reshape(-1))
