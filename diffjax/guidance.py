"""Score-function transforms: known-pixel replacement ("paste-back"), energy guidance.

The samplers of :mod:`diffjax.samplers` take nothing but a ``score_fn(x, t)``,
so conditioning on known pixels is written as a transform of the score function,
which then works unchanged with every sampler (fixed-step, multistep and the
adaptive ODE alike):

* :func:`paste_back` turns an image score into one that, at every evaluation,
  pastes the known pixels, noised to the current level, into the network's
  input, and gives the known coordinates the exact score of their own forward
  process (a point mass at the known value, noised): the state's known pixels
  are pulled onto ``alpha(t) y + sigma(t) z`` and end at ``y``;
* :func:`sample_with_paste_back` wraps :func:`diffjax.sample`: it starts the known
  pixels on that trajectory, runs any sampler on the transformed score and
  pastes the exact known pixels into the result.

* :func:`energy_guidance` subtracts the gradient of an energy from the score,
  so every sampler's reverse SDE has its mean shifted by ``-g(t)^2 dt grad E``
  (EGSDE's guidance, :mod:`diffjax.tasks.egsde`).
* :func:`project_onto_measurement` and :func:`consistent_x0` keep what a linear
  measurement already says (ILVR / DDRM / DDNM-style range projection): the
  estimate ``x0`` is replaced by ``x0 + A^+ (y - A x0)``, which has ``A x0 = y``
  exactly when ``A^+`` is the pseudo-inverse of ``A``; for super-resolution this
  swaps the low-pass of the estimate (``A^+ A x0``) for the input's (``A^+ y``).

Nothing here knows about networks: a conditional model (Palette) is turned into
a ``score_fn`` first, with its condition bound in a closure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.samplers.base import Sampler, sample
from diffjax.sde import SDE, broadcast_to_x
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["paste_back", "sample_with_paste_back", "check_known_mask", "clip_x0", "energy_guidance",
           "project_onto_measurement", "consistent_x0"]


def check_known_mask(mask, image: Array) -> Array:
    """Validate a known-pixel mask and return it as a boolean array broadcast to ``image``.

    Args:
      mask: 1 for known pixels, 0 for pixels to fill; ``(H, W)`` for
        ``(B, H, W, C)`` images, or any shape broadcasting to ``image.shape``.
      image: the images the mask applies to.

    Returns:
      Boolean array of ``image.shape``, True where the pixel is known.

    Raises:
      ValueError: if the mask does not broadcast, or (when concrete) is not binary.
    """
    mask = jnp.asarray(mask)
    if mask.ndim == 2 and image.ndim == 4:
        mask = mask[..., None]
    try:
        shape = np.broadcast_shapes(mask.shape, image.shape)
    except ValueError:
        shape = None
    if shape != tuple(image.shape):
        raise ValueError(
            f"mask of shape {mask.shape} does not broadcast to the image shape {image.shape}; "
            "expected (H, W), (H, W, 1), (B, H, W, 1) or the image's own shape"
        )
    if not isinstance(mask, jax.core.Tracer):
        values = np.unique(np.asarray(mask))
        if not np.all(np.isin(values, [0, 1])):
            raise ValueError(f"mask must be binary (1 = known, 0 = fill), got values {values[:8].tolist()}")
    return jnp.broadcast_to(mask > 0.5, image.shape)


def paste_back(score_fn: ScoreFn, sde: SDE, known: Array, mask, noise: Array) -> ScoreFn:
    """Known pixels pasted into the score's input at every evaluation.

    At time ``t`` the network sees ``x`` with its known pixels replaced by
    ``alpha(t) known + sigma(t) noise`` (one fixed noise draw, so the pasted
    pixels move along a single forward trajectory rather than flickering). On
    the known coordinates the returned score is ``-(x - alpha(t) known) / sigma(t)^2``,
    the exact score of those pixels given their clean value: every sampler then
    carries them to ``known`` (exactly so for DDIM, DPM-Solver++ and Tweedie's
    final step, whose ``x_0`` estimate there is ``known`` itself).

    Args:
      score_fn: ``score_fn(x, t)`` of the images (any model or analytic score).
      sde: the forward process of the score.
      known: images holding the known pixels (other values are ignored), shaped
        like the sampler's state ``(B, ...)``.
      mask: 1 = known, 0 = fill; broadcastable to ``known`` (``(H, W)`` allowed
        for ``(B, H, W, C)``). Binary.
      noise: standard normal draw shaped like ``known``.

    Returns:
      A ``score_fn(x, t)``.

    Raises:
      ValueError: on a mask that does not fit or is not binary, or ``noise`` of
        another shape than ``known``.
    """
    known = jnp.asarray(known)
    is_known = check_known_mask(mask, known)
    if jnp.shape(noise) != known.shape:
        raise ValueError(f"noise must be shaped like known {known.shape}, got {jnp.shape(noise)}")

    def guided(x: Array, t: Array) -> Array:
        alpha, sigma = sde.alpha_sigma(t)
        alpha, sigma = broadcast_to_x(alpha, x), broadcast_to_x(sigma, x)
        pasted = jnp.where(is_known, alpha * known + sigma * noise, x)
        known_score = -(x - alpha * known) / sigma**2
        return jnp.where(is_known, known_score, score_fn(pasted, t))

    return guided


def sample_with_paste_back(
    score_fn: ScoreFn,
    sde: SDE,
    image: Array,
    mask,
    *,
    key: PRNGKey,
    sampler: Sampler,
    denoise: bool = True,
) -> tuple[Array, dict]:
    """Fill ``image`` where ``mask == 0`` with any sampler, known pixels pasted back.

    Jit-able as a whole (``sampler`` and ``denoise`` static). The known pixels of
    the result equal ``image`` exactly.

    Args:
      score_fn: ``score_fn(x, t)`` of the images; for Palette, the conditional
        network with its condition bound.
      sde: the forward process.
      image: ``(B, ...)`` floating point images; values in the hole are ignored.
      mask: 1 = known, 0 = fill; broadcastable to ``image`` (``(H, W)`` allowed).
      key: a ``jax.random`` key.
      sampler: any :mod:`diffjax.samplers` sampler.
      denoise: finish with Tweedie's denoising step (see :func:`diffjax.sample`).

    Returns:
      ``(images, info)`` as :func:`diffjax.sample` returns them.

    Raises:
      ValueError: on a non-floating image or a bad mask.
    """
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(f"image must be a floating-point array, got dtype {image.dtype}")
    is_known = check_known_mask(mask, image)
    noise_key, prior_key, sample_key = jax.random.split(key, 3)
    noise = jax.random.normal(noise_key, image.shape, image.dtype)
    guided = paste_back(score_fn, sde, image, is_known, noise)
    # Start the known pixels on the trajectory the paste-back follows.
    alpha_T, sigma_T = sde.alpha_sigma(jnp.full(image.shape[:1], sde.T, image.dtype))
    start_known = broadcast_to_x(alpha_T, image) * image + broadcast_to_x(sigma_T, image) * noise
    x_init = jnp.where(is_known, start_known, sde.prior_sample(prior_key, image.shape, image.dtype))
    x, info = sample(guided, sde, x_init, key=sample_key, sampler=sampler, denoise=denoise)
    return jnp.where(is_known, image, x), info


def clip_x0(score_fn: ScoreFn, sde: SDE, low: float = -1.0, high: float = 1.0) -> ScoreFn:
    """The score whose implied clean image, Tweedie's ``x_0``, is clipped to ``[low, high]``.

    ``x_0 = (x + sigma^2 score) / alpha`` is clipped and turned back into a score,
    ``(alpha clip(x_0) - x) / sigma^2``. Where ``x_0`` is in range the score is
    unchanged; where it is not (an undertrained network near the data) the
    sample cannot run off the data range, as DDPM's clipped sampling does.

    Args:
      score_fn: ``score_fn(x, t)``.
      sde: its forward process.
      low, high: the data range.

    Returns:
      A ``score_fn(x, t)``.
    """
    if not low < high:
        raise ValueError(f"clip_x0 needs low < high, got {low}, {high}")

    def clipped(x: Array, t: Array) -> Array:
        alpha, sigma = sde.alpha_sigma(t)
        alpha, sigma = broadcast_to_x(alpha, x), broadcast_to_x(sigma, x)
        x0 = jnp.clip((x + sigma**2 * score_fn(x, t)) / alpha, low, high)
        return (alpha * x0 - x) / sigma**2

    return clipped


def energy_guidance(score_fn: ScoreFn, energy_fn) -> ScoreFn:
    """The score of ``p_t(x) exp(-E(x, t))``: ``score_fn(x, t) - grad_x E(x, t)``.

    In a reverse-SDE step of length ``dt`` this shifts the mean by
    ``-g(t)^2 dt grad E`` (EGSDE's ``-w(t) grad E``, with ``w`` the step's
    variance); in the probability flow by half that. Any sampler can run the
    result.

    Args:
      score_fn: ``score_fn(x, t)``.
      energy_fn: ``energy_fn(x, t) -> (batch,)``, one energy per example, each
        depending on its own example only (the gradient of their sum is taken).

    Returns:
      A ``score_fn(x, t)``.
    """

    def guided(x: Array, t: Array) -> Array:
        grad = jax.grad(lambda y: jnp.sum(energy_fn(y, t)))(x)
        return score_fn(x, t) - grad

    return guided


def project_onto_measurement(x: Array, measurement: Array, forward_fn, pinv_fn) -> Array:
    """``x + pinv_fn(measurement - forward_fn(x))``: ``x`` moved onto ``{z : A z = y}``.

    With ``pinv_fn`` the Moore-Penrose pseudo-inverse of the linear ``forward_fn``
    (``A A^+ = I`` for a full-row-rank ``A``), the result satisfies
    ``forward_fn(result) == measurement`` up to float error, and it is the point of
    that set nearest to ``x``: only the component of ``x`` in the row space of ``A``
    (for downsampling, its low frequencies) changes.

    Args:
      x: the estimate, shaped like ``pinv_fn``'s output.
      measurement: ``y``, shaped like ``forward_fn``'s output.
      forward_fn: the linear operator ``A``.
      pinv_fn: its pseudo-inverse ``A^+``.

    Returns:
      An array shaped like ``x``.

    Raises:
      ValueError: if ``forward_fn(x)`` and ``measurement`` differ in shape.
    """
    residual_shape = jax.eval_shape(forward_fn, x).shape
    if tuple(residual_shape) != tuple(jnp.shape(measurement)):
        raise ValueError(f"the forward operator maps x {jnp.shape(x)} to {tuple(residual_shape)}, "
                         f"but the measurement has shape {jnp.shape(measurement)}")
    return x + pinv_fn(measurement - forward_fn(x))


def consistent_x0(score_fn: ScoreFn, sde: SDE, measurement: Array, forward_fn, pinv_fn) -> ScoreFn:
    """The score whose implied clean image is projected onto ``{x0 : A x0 = y}`` at every evaluation.

    Tweedie's ``x_0 = (x + sigma^2 score) / alpha`` is replaced by
    :func:`project_onto_measurement` of it and turned back into a score,
    ``(alpha x0' - x) / sigma^2``. Every sampler that steps through ``x_0``
    (DDIM, DPM-Solver++, the final Tweedie step) then moves towards images that
    agree with the measurement; ``denoise=True`` ends exactly on that set.

    Args:
      score_fn: ``score_fn(x, t)``.
      sde: its forward process.
      measurement: ``y`` (e.g. the low-resolution input).
      forward_fn: the linear operator ``A`` (e.g. the training downsampler).
      pinv_fn: its pseudo-inverse.

    Returns:
      A ``score_fn(x, t)``.
    """

    def projected(x: Array, t: Array) -> Array:
        alpha, sigma = sde.alpha_sigma(t)
        alpha, sigma = broadcast_to_x(alpha, x), broadcast_to_x(sigma, x)
        x0 = (x + sigma**2 * score_fn(x, t)) / alpha
        x0 = project_onto_measurement(x0, measurement, forward_fn, pinv_fn)
        return (alpha * x0 - x) / sigma**2

    return projected
