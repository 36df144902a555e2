"""Conditioning augmentation for cascaded diffusion models (Ho et al., CDM).

An SR stage of a cascade is an SR3 model whose low-resolution condition is
corrupted in training, so that it tolerates the imperfect samples of the stage
below it. Two corruptions:

* **Gaussian noise at level s** (both CDM variants). The level ``s`` in
  ``[0, 1)`` is a variance-preserving noise level with closed form
  ``z_s = cos(pi s / 2) x + sin(pi s / 2) eps`` (s = 0: the clean image), added
  to the low-resolution image before upsampling; the network is told ``s``
  (``aug_level``). *Non-truncated* sampling runs the stage below to the end and
  then noises its output to a fixed ``s``. *Truncated* sampling stops the stage
  below at the time ``t`` whose log-SNR equals that of ``s`` and uses its latent
  ``z_t`` rescaled to the ``alpha(s)`` of the augmentation (exact for any
  process: equal log-SNR means ``z_s = alpha(s) / alpha(t) * z_t``).
* **Gaussian blur** of the low-resolution image (for higher stages), which the
  network is not told about.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from diffjax.sde import SDE
from diffjax.typing import Array

__all__ = [
    "aug_alpha_sigma",
    "gaussian_blur",
    "gaussian_kernel_matrix",
    "noise_augment",
    "truncated_condition",
    "truncation_time",
]


def _check_level(s) -> None:
    values = np.asarray(s)
    if not np.all((values >= 0) & (values < 1)):
        raise ValueError(f"augmentation levels must lie in [0, 1), got {values}")


def aug_alpha_sigma(s: Array) -> tuple[Array, Array]:
    """Signal and noise scales ``(cos(pi s / 2), sin(pi s / 2))`` of augmentation level ``s``."""
    xp = np if isinstance(s, (np.ndarray, float, int)) else jnp
    return xp.cos(0.5 * np.pi * s), xp.sin(0.5 * np.pi * s)


def noise_augment(low_res: Array, s: Array, noise: Array) -> Array:
    """``z_s = alpha(s) x + sigma(s) eps`` per example.

    Args:
      low_res: ``(B, h, w, C)`` low-resolution images.
      s: ``(B,)`` levels in ``[0, 1)``.
      noise: standard normal noise shaped like ``low_res``.

    Returns:
      The corrupted images (numpy in -> numpy out).
    """
    if not isinstance(low_res, np.ndarray) or not isinstance(s, np.ndarray):
        alpha, sigma = aug_alpha_sigma(jnp.asarray(s))
        return alpha[:, None, None, None] * low_res + sigma[:, None, None, None] * noise
    _check_level(s)
    alpha, sigma = aug_alpha_sigma(s.astype(np.float64))
    out = alpha[:, None, None, None] * low_res + sigma[:, None, None, None] * noise
    return out.astype(np.float32)


def truncation_time(sde: SDE, s: float) -> float:
    """The time ``t`` of ``sde`` with the log-SNR of augmentation level ``s`` (where truncation stops).

    Raises:
      ValueError: if ``s`` is outside ``(0, 1)`` or ``t`` falls outside ``[sde.eps, sde.T]``.
    """
    if not 0.0 < s < 1.0:
        raise ValueError(f"truncated augmentation needs a level s in (0, 1), got {s}")
    alpha, sigma = aug_alpha_sigma(float(s))
    t = float(sde.t_from_log_snr(jnp.float32(np.log(alpha / sigma))))
    if not sde.eps <= t <= sde.T:
        raise ValueError(
            f"augmentation level s={s} maps to time {t:.4g} of the stage below, outside its "
            f"interval [{sde.eps}, {sde.T}]; choose a level whose noise the process reaches"
        )
    return t


def truncated_condition(z_t: Array, sde: SDE, t: float, s: float) -> Array:
    """Rescale the latent ``z_t`` of a process stopped at ``t`` to augmentation level ``s``.

    ``t = truncation_time(sde, s)`` has the same log-SNR as ``s``, so
    ``z_t = alpha_t x + sigma_t eps`` and ``z_s = alpha_s x + sigma_s eps`` differ
    only by the factor ``alpha_s / alpha_t``.
    """
    alpha_t = sde.alpha_sigma(jnp.float32(t))[0]
    return z_t * (aug_alpha_sigma(float(s))[0] / alpha_t)


@functools.lru_cache(maxsize=64)
def gaussian_kernel_matrix(n: int, sigma: float, radius: int = 1) -> np.ndarray:
    """``(n, n)`` matrix of 1-D Gaussian blurring (``2 radius + 1`` taps, reflected edges).

    CDM blurs with a 3-tap kernel (``radius=1``) and sigma in ``[0.4, 0.6]``.
    """
    if sigma <= 0:
        raise ValueError(f"blur sigma must be > 0, got {sigma}")
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    matrix = np.zeros((n, n))
    for i in range(n):
        for k, w in zip(range(-radius, radius + 1), taps):
            j = i + k
            j = -j if j < 0 else (2 * (n - 1) - j if j >= n else j)  # reflect without repeating the edge
            matrix[i, min(max(j, 0), n - 1)] += w
    return matrix


def gaussian_blur(images: np.ndarray, sigma: float, radius: int = 1) -> np.ndarray:
    """Separable Gaussian blur of ``(N, H, W, C)`` numpy images (host-side augmentation)."""
    _, h, w, _ = images.shape
    rows = gaussian_kernel_matrix(h, float(sigma), radius)
    cols = gaussian_kernel_matrix(w, float(sigma), radius)
    return np.einsum("oh,nhwc,pw->nopc", rows, images, cols, optimize=True).astype(np.float32)
