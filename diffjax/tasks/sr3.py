"""SR3 super-resolution (Saharia et al.): resampling, tiling and the sampling call.

The network sees the low-resolution image upsampled bicubically to the target
size and concatenated to its noisy input, and it is conditioned on the noise
level ``gamma = alpha(t)`` (``time_input="alpha"``), so any sampler, schedule
and step count drives it at inference.

Resampling is written as matrices: antialiased bicubic resizing is linear and
separable, so ``resize(x) = R_h @ x @ R_w^T`` per channel. The same operator
serves numpy (host-side data preparation) and JAX (inside a jitted sampler),
and downsampling the output again (consistency) uses exactly the operator the
training pairs were made with.

Images larger than the network's input are super-resolved as overlapping
tiles *inside* the sampler (:mod:`diffjax.tiling`, shared with every
restoration task; ``tile_offsets`` and ``tiled_score_fn`` are re-exported
here): at every step the score of the whole image is the window-weighted
average of the tiles' scores, so no seam appears.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.guidance import consistent_x0, project_onto_measurement
from diffjax.parametrization import convert, model_score_fn
from diffjax.samplers.base import Sampler, sample
from diffjax.sde import SDE
from diffjax.tiling import tile_offsets, tiled_score_fn
from diffjax.typing import Array, PRNGKey

__all__ = [
    "bicubic_matrix",
    "clip_denoised",
    "conditional_score_fn",
    "consistency_projection",
    "downsample",
    "downsample_pinv",
    "quantize_uint8",
    "resize",
    "super_resolve",
    "tile_offsets",
    "tiled_score_fn",
    "upsample",
]

PROJECTIONS = ("none", "end", "each")
"""Options of :func:`super_resolve`'s low-frequency consistency projection."""

CondScoreFn = Callable[[Array, Array, Array], Array]  # (x, t, cond) -> score


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5, as Pillow and jax.image)."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n_in: int, n_out: int, antialias: bool = True) -> np.ndarray:
    """The ``(n_out, n_in)`` matrix of 1-D bicubic resampling with half-pixel centres.

    When shrinking (``n_out < n_in``) with ``antialias``, the kernel is widened by
    the scale factor so that it low-pass filters before decimating; each row is
    normalised to sum to 1 (this also handles the image border).

    Args:
      n_in: input length.
      n_out: output length.
      antialias: widen the kernel when downsampling.

    Returns:
      float64 matrix; ``x_out = M @ x_in``.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"bicubic_matrix needs positive sizes, got n_in={n_in}, n_out={n_out}")
    scale = n_in / n_out
    support = max(scale, 1.0) if antialias else 1.0
    centres = (np.arange(n_out) + 0.5) * scale - 0.5  # output pixel centres in input coordinates
    weights = _cubic((np.arange(n_in)[None, :] - centres[:, None]) / support)
    return weights / weights.sum(axis=1, keepdims=True)


def resize(images: Array, height: int, width: int) -> Array:
    """Antialiased bicubic resize of ``(N, H, W, C)`` images (numpy in -> numpy out, JAX -> JAX).

    Args:
      images: a batch of images (any range; the result is not clipped).
      height, width: output size.

    Returns:
      ``(N, height, width, C)`` float32.
    """
    if images.ndim != 4:
        raise ValueError(f"resize expects NHWC images, got shape {tuple(images.shape)}")
    _, h, w, _ = images.shape
    rows = bicubic_matrix(h, height).astype(np.float32)
    cols = bicubic_matrix(w, width).astype(np.float32)
    if isinstance(images, np.ndarray):
        return np.einsum("oh,nhwc,pw->nopc", rows, images.astype(np.float32), cols, optimize=True)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, images.astype(jnp.float32), cols)


def _check_factor(factor) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"the scale factor must be an integer >= 1, got {factor!r}")
    return int(factor)


def downsample(images: Array, factor: int) -> Array:
    """Antialiased bicubic downsampling by an integer ``factor`` (sizes must divide)."""
    factor = _check_factor(factor)
    _, h, w, _ = images.shape
    if h % factor or w % factor:
        raise ValueError(f"downsample by {factor} needs sizes divisible by {factor}, got {h}x{w}")
    return resize(images, h // factor, w // factor)


def upsample(images: Array, factor: int) -> Array:
    """Bicubic upsampling by an integer ``factor``: SR3's conditioning image."""
    factor = _check_factor(factor)
    _, h, w, _ = images.shape
    return resize(images, h * factor, w * factor)


@functools.lru_cache(maxsize=64)
def _pinv_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_in, n_out)`` Moore-Penrose pseudo-inverse of ``bicubic_matrix(n_in, n_out)`` (host, float64)."""
    return np.linalg.pinv(bicubic_matrix(n_in, n_out))


def downsample_pinv(low: Array, factor: int) -> Array:
    """The pseudo-inverse of :func:`downsample`: the least-norm image ``x`` with ``downsample(x) = low``.

    :func:`downsample` is ``x -> R_h x R_w^T`` per channel with full-row-rank
    ``R``; its pseudo-inverse is ``y -> R_h^+ y (R_w^+)^T``, so
    ``downsample(downsample_pinv(y)) = y`` up to float error (bicubic
    :func:`upsample` does not have this property). The matrices are computed
    once per size on the host; the product runs in numpy or JAX like :func:`resize`.

    Args:
      low: ``(N, h, w, C)`` low-resolution images.
      factor: the downsampling factor.

    Returns:
      ``(N, h * factor, w * factor, C)`` float32.
    """
    factor = _check_factor(factor)
    if low.ndim != 4:
        raise ValueError(f"downsample_pinv expects NHWC images, got shape {tuple(low.shape)}")
    _, h, w, _ = low.shape
    rows = _pinv_matrix(h * factor, h).astype(np.float32)
    cols = _pinv_matrix(w * factor, w).astype(np.float32)
    if isinstance(low, np.ndarray):
        return np.einsum("oh,nhwc,pw->nopc", rows, low.astype(np.float32), cols, optimize=True)
    return jnp.einsum("oh,nhwc,pw->nopc", rows, low.astype(jnp.float32), cols)


def consistency_projection(images: Array, low: Array, factor: int) -> Array:
    """Replace the low-pass of ``images`` by the input's: ``x + D^+ (low - D x)``, ``D`` = :func:`downsample`.

    The result is the image nearest to ``images`` whose downsampling is exactly
    ``low`` (up to float error); its high frequencies (the null space of ``D``)
    are those of ``images``.

    Args:
      images: ``(N, H, W, C)`` estimates.
      low: ``(N, H / factor, W / factor, C)`` low-resolution inputs.
      factor: the SR factor.

    Returns:
      ``(N, H, W, C)`` float32.

    Raises:
      ValueError: when the shapes do not match.
    """
    return project_onto_measurement(images, low, lambda x: downsample(x, factor),
                                    lambda y: downsample_pinv(y, factor))


def quantize_uint8(images: np.ndarray) -> np.ndarray:
    """Round ``[-1, 1]`` images to the 256 levels a PNG stores (and clip).

    Training pairs go through this so that the network sees low-resolution inputs
    like the PNG files it restores at inference.
    """
    return (np.clip(np.round((np.asarray(images) + 1.0) * 127.5), 0, 255) / 127.5 - 1.0).astype(np.float32)


def conditional_score_fn(
    apply_fn: Callable[..., Array], sde: SDE, *, prediction: str = "eps", time_input: str = "alpha"
) -> CondScoreFn:
    """Wrap a network ``apply_fn(x, c, cond) -> prediction`` as ``cond_score_fn(x, t, cond)``."""

    def cond_score_fn(x: Array, t: Array, cond: Array) -> Array:
        net = lambda x_, c_: apply_fn(x_, c_, cond)
        return model_score_fn(net, sde, prediction=prediction, time_input=time_input)(x, t)

    return cond_score_fn


def clip_denoised(cond_score_fn: CondScoreFn, sde: SDE) -> CondScoreFn:
    """Clip the implied ``x0`` to ``[-1, 1]`` at every evaluation (DDPM's ``clip_denoised``).

    An eps-network's ``x0 = (x - sigma eps) / alpha`` amplifies its errors by
    ``sigma / alpha`` at high noise; clipping keeps the sampler on the image
    range. The score is rebuilt from the clipped ``x0``, so every sampler
    benefits.
    """

    def clipped(x: Array, t: Array, cond: Array) -> Array:
        x0 = convert(cond_score_fn(x, t, cond), source="score", target="x0", x=x, t=t, sde=sde)
        return convert(jnp.clip(x0, -1.0, 1.0), source="x0", target="score", x=x, t=t, sde=sde)

    return clipped


def super_resolve(
    cond_score_fn: CondScoreFn,
    sde: SDE,
    cond: Array,
    *,
    key: PRNGKey,
    sampler: Sampler,
    channels: int,
    tile: int | None = None,
    overlap: int = 0,
    denoise: bool = True,
    clip_x0: bool = False,
    low: Array | None = None,
    projection: str = "none",
) -> Array:
    """Sample high-resolution images given their conditioning image (jit-able as a whole).

    Args:
      cond_score_fn: ``(x, t, cond) -> score`` of the conditional model.
      sde: the process it was trained under.
      cond: ``(B, H, W, Cc)`` conditioning image at the output size (for SR3,
        ``upsample(low_res, factor)``).
      key: random key (prior sample and sampler noise).
      sampler: any :mod:`diffjax.samplers` sampler.
      channels: channels of the output image.
      tile: the network's input size when it is smaller than ``H x W`` (tiled
        sampling, see :func:`tiled_score_fn`); ``None`` = the whole image at once.
      overlap: tile overlap in output pixels.
      denoise: finish with a Tweedie step.
      clip_x0: clip the implied ``x0`` at every step (:func:`clip_denoised`).
      low: ``(B, H / f, W / f, channels)`` low-resolution inputs, needed by ``projection``.
      projection: low-frequency consistency with ``low`` (:func:`consistency_projection`):
        ``"none"``; ``"end"`` projects the clipped output; ``"each"`` projects the
        implied ``x0`` at every score evaluation (after clipping, when ``clip_x0``)
        and the output.

    Returns:
      ``(B, H, W, channels)`` samples clipped to ``[-1, 1]``; with a projection, the
      projected output, whose :func:`downsample` equals ``low`` up to float error
      (its values may then leave ``[-1, 1]`` by what that takes).

    Raises:
      ValueError: on an unknown ``projection``, or one without ``low``, or ``low`` of the
        wrong size.
    """
    batch, height, width, _ = cond.shape
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    factor = None
    if projection != "none":
        if low is None or low.ndim != 4 or low.shape[0] != batch or height % low.shape[1] or width % low.shape[2] \
                or height // low.shape[1] != width // low.shape[2] or low.shape[1] >= height:
            raise ValueError(f"projection={projection!r} needs low-resolution inputs (B, H/f, W/f, C) for outputs "
                             f"{(batch, height, width, channels)}, got {None if low is None else tuple(low.shape)}")
        factor = height // low.shape[1]
    if clip_x0:
        cond_score_fn = clip_denoised(cond_score_fn, sde)
    if tile is None or (tile == height and tile == width):
        score_fn = lambda x, t: cond_score_fn(x, t, cond)
    else:
        score_fn = tiled_score_fn(cond_score_fn, cond, tile, overlap)
    if projection == "each":
        score_fn = consistent_x0(score_fn, sde, low, lambda x: downsample(x, factor),
                                 lambda y: downsample_pinv(y, factor))
    prior_key, sample_key = jax.random.split(key)
    x_init = sde.prior_sample(prior_key, (batch, height, width, channels))
    x, _ = sample(score_fn, sde, x_init, key=sample_key, sampler=sampler, denoise=denoise)
    x = jnp.clip(x, -1.0, 1.0)
    return x if projection == "none" else consistency_projection(x, low, factor)
