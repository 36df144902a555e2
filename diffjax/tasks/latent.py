"""Latent diffusion's math (Rombach et al.): the latent scale, and sampling a latent through a decoder.

Pure JAX and jit-able: the decoder comes in as any function ``decode_fn(z) ->
images`` (the Flax autoencoder is bound by :mod:`diffjax.ldm`), the diffusion
model as any ``score_fn(z, t)`` on the scaled latent.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.samplers.base import Sampler, sample
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["scale_by_std", "latent_sample"]


def scale_by_std(latents) -> float:
    """The paper's ``scale_by_std``: ``1 / std`` of a batch of latents (all entries), so scaled latents have unit variance.

    Args:
      latents: any array of latents (the first training batch's posterior draws).

    Returns:
      The scale factor, a Python float.

    Raises:
      ValueError: latents with no spread or a non-finite one (an untrained or collapsed autoencoder).
    """
    std = float(np.std(np.asarray(latents, np.float64)))
    if not np.isfinite(std) or std < 1e-8:
        raise ValueError(f"latents have std {std}: the autoencoder is untrained or collapsed; train it (longer)")
    return 1.0 / std


def latent_sample(
    score_fn: ScoreFn,
    sde: SDE,
    decode_fn: Callable[[Array], Array],
    shape: tuple[int, ...],
    *,
    key: PRNGKey,
    sampler: Sampler,
    scale_factor,
    denoise: bool = True,
) -> Array:
    """Sample scaled latents with any sampler, then decode ``z / scale_factor`` (one jit-able program).

    Args:
      score_fn: ``score_fn(z, t)`` of the diffusion model on scaled latents.
      sde: the process it was trained under.
      decode_fn: latents ``(B, h, w, z)`` -> images.
      shape: ``(B, h, w, z)`` of the latent batch.
      key: random key (prior draw and the sampler's noise).
      sampler: any :mod:`diffjax.samplers` sampler.
      scale_factor: the latent scale the model was trained with (a scalar, may be traced).
      denoise: finish with a Tweedie step.

    Returns:
      The decoded images, clipped to ``[-1, 1]``.
    """
    prior_key, sample_key = jax.random.split(key)
    z, _ = sample(score_fn, sde, sde.prior_sample(prior_key, shape), key=sample_key, sampler=sampler, denoise=denoise)
    return jnp.clip(decode_fn(z / scale_factor), -1.0, 1.0)
