"""Embeddings of the conditioning scalar (time, noise level or step index).

Two families, both mapping ``c`` of shape ``(batch,)`` to ``(batch, dim)``:

* Gaussian Fourier features (NCSN++): ``[sin(2 pi c w), cos(2 pi c w)]`` with
  frequencies ``w ~ N(0, scale^2)`` drawn once at construction and then kept
  fixed. They live in a :class:`FixedFrequencies` variable, not an
  ``nnx.Param``, so an optimiser that updates only ``nnx.Param`` never touches
  them, while checkpoints still save them.
* Sinusoidal (DDPM / Transformer positional encoding), with no state at all.

and, for cross-attention, :class:`LabelTokens`: class labels as a short
sequence of learned context tokens ``(batch, tokens, dim)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.typing import Array

__all__ = ["FixedFrequencies", "GaussianFourierEmbedding", "LabelTokens", "sinusoidal_embedding"]


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


class LabelTokens(nnx.Module):
    """Class labels as context tokens for cross-attention: a learned table, one row of tokens per label.

    Label ``num_classes`` is the null label (classifier-free guidance's
    "no condition"), so the table has ``num_classes + 1`` rows of ``tokens``
    vectors of width ``dim``. Used inside :class:`diffjax.nn.UNet` when
    ``UNetConfig.label_conditioning`` is ``"context"`` or ``"both"``; usable on
    its own as a context source for any cross-attention network.

    Args:
      num_classes: number of real classes (>= 1).
      dim: token width (the network's ``context_dim``).
      tokens: tokens per label (>= 1).
      param_dtype: dtype of the table.
      rngs: source of the ``params`` key of the initial table.

    Raises:
      ValueError: on a non-positive ``num_classes``, ``dim`` or ``tokens``.
    """

    def __init__(self, num_classes: int, dim: int, *, tokens: int = 1, param_dtype=jnp.float32, rngs: nnx.Rngs):
        for name, value in (("num_classes", num_classes), ("dim", dim), ("tokens", tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LabelTokens: {name} must be a positive integer, got {value!r}")
        self.num_classes, self.dim, self.tokens = num_classes, dim, tokens
        # Unit-variance tokens: the cross-attention layer-normalises them anyway.
        self.table = nnx.Param(jax.random.normal(rngs.params(), (num_classes + 1, tokens, dim), param_dtype))

    def __call__(self, labels: Array | None, batch: int | None = None) -> Array:
        """The tokens of ``labels``.

        Args:
          labels: ``(B,)`` integers in ``[0, num_classes]`` (``num_classes`` = null),
            or ``None`` for ``batch`` null labels.
          batch: the batch size when ``labels`` is ``None``.

        Returns:
          ``(B, tokens, dim)`` float32 tokens.

        Raises:
          ValueError: labels that are not a 1-D integer array, or ``None``
            without ``batch``.
        """
        if labels is None:
            if batch is None:
                raise ValueError("LabelTokens: labels=None (all null) needs the batch size, batch=B")
            labels = jnp.full((batch,), self.num_classes, jnp.int32)
        if jnp.ndim(labels) != 1 or not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
            raise ValueError(f"LabelTokens: labels must be a (batch,) integer array in [0, {self.num_classes}], "
                             f"got shape {jnp.shape(labels)} dtype {jnp.asarray(labels).dtype}")
        return jnp.take(self.table[...], labels, axis=0).astype(jnp.float32)
