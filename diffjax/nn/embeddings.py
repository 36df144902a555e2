"""Embeddings of the conditioning scalar (time, noise level or step index).

Two families, both mapping ``c`` of shape ``(batch,)`` to ``(batch, dim)``:

* Gaussian Fourier features (NCSN++): ``[sin(2 pi c w), cos(2 pi c w)]`` with
  frequencies ``w ~ N(0, scale^2)`` drawn once at construction and then kept
  fixed. They live in a :class:`FixedFrequencies` variable, not an
  ``nnx.Param``, so an optimiser that updates only ``nnx.Param`` never touches
  them, while checkpoints still save them.
* Sinusoidal (DDPM / Transformer positional encoding), with no state at all.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.typing import Array

__all__ = ["FixedFrequencies", "GaussianFourierEmbedding", "sinusoidal_embedding"]


class FixedFrequencies(nnx.Variable):
    """Non-trainable, saved state: random frequencies fixed at construction."""


def sinusoidal_embedding(c: Array, dim: int, max_period: float = 10_000.0) -> Array:
    """Sinusoidal embedding of a scalar per example (DDPM's timestep embedding).

    Args:
      c: conditioning scalars, shape ``(batch,)``; typically integer-valued
        steps in ``[0, 1000)``, so scale continuous times up first.
      dim: embedding width (even).
      max_period: the longest wavelength.

    Returns:
      ``(batch, dim)`` float32 array, ``[sin(c f), cos(c f)]`` with
      geometrically spaced frequencies ``f`` from 1 down to ``1/max_period``.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    half = dim // 2
    # Same spacing as DDPM: exp(-log(max_period) * k / (half - 1)), k = 0..half-1.
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    angles = c.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class GaussianFourierEmbedding(nnx.Module):
    """Gaussian Fourier features of a scalar (Tancik et al. 2020; NCSN++).

    Args:
      dim: embedding width (even); ``dim // 2`` frequencies.
      scale: standard deviation of the frequencies. 16 suits inputs of order 1
        (``t`` in ``[0, 1]`` or ``log sigma``).
      rngs: source of the ``params`` key that draws the frequencies.
    """

    def __init__(self, dim: int, *, scale: float = 16.0, rngs: nnx.Rngs):
        if dim % 2:
            raise ValueError(f"Fourier embedding needs an even dim, got {dim}")
        self.freqs = FixedFrequencies(scale * jax.random.normal(rngs.params(), (dim // 2,), jnp.float32))

    def __call__(self, c: Array) -> Array:
        """Returns ``(batch, dim)`` float32 features of ``c`` (shape ``(batch,)``)."""
        angles = 2.0 * jnp.pi * c.astype(jnp.float32)[:, None] * self.freqs[...][None, :]
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
