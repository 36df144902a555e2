"""A small convolutional VAE and the latent score network of LSGM (Flax NNX).

:class:`VAE` maps ``(B, S, S, C)`` images to a diagonal Gaussian ``q(z_0 | x)``
over ``(B, S / 2^L, S / 2^L, latent_channels)`` latents (``L = len(channels)``
stride-2 levels) and latents back to the location and log-scale of a
per-pixel discretised logistic. :class:`LatentPrior` is a :class:`diffjax.nn.UNet`
on the latent plus the per-channel logits of LSGM's mixed score. The math
(likelihoods, mixing, the objective) lives in :mod:`diffjax.tasks.lsgm`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from diffjax.nn.layers import GroupNorm, conv, group_count
from diffjax.nn.unet import UNet, UNetConfig
from diffjax.typing import Array

__all__ = ["VAEConfig", "VAE", "LatentPrior"]

_DTYPES = {"float32": jnp.float32}


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of :class:`VAE`; validated at construction.

    Attributes:
      image_size: input height = width (divisible by ``2 ** len(channels)``).
      in_channels: image channels.
      latent_channels: channels of the latent map.
      channels: widths of the levels; each level ends with a stride-2 conv.
      num_res_blocks: residual blocks per level.
      min_log_std: floor of the encoder's log standard deviation.
      min_log_scale: floor of the decoder's logistic log-scale.
    """

    image_size: int = 32
    in_channels: int = 1
    latent_channels: int = 4
    channels: tuple[int, ...] = (32, 64)
    num_res_blocks: int = 1
    min_log_std: float = -7.0
    min_log_scale: float = -7.0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        for field in ("image_size", "in_channels", "latent_channels"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"channels must be a non-empty tuple of positive ints, got {self.channels}")
        if self.num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        factor = 2 ** len(self.channels)
        if self.image_size % factor:
            raise ValueError(f"image_size={self.image_size} must be divisible by 2**len(channels)={factor}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(h, w, latent_channels)`` of one latent."""
        s = self.image_size // 2 ** len(self.channels)
        return (s, s, self.latent_channels)


class _Block(nnx.Module):
    """Pre-activation residual block: x + conv(silu(GN(conv(silu(GN(x))))))."""

    def __init__(self, ch: int, rngs: nnx.Rngs):
        kw = dict(dtype=jnp.float32, param_dtype=jnp.float32)
        self.norm1 = GroupNorm(ch, num_groups=group_count(ch), **kw)
        self.conv1 = conv(ch, ch, 3, rngs=rngs, **kw)
        self.norm2 = GroupNorm(ch, num_groups=group_count(ch), **kw)
        self.conv2 = conv(ch, ch, 3, zero_init=True, rngs=rngs, **kw)

    def __call__(self, x: Array) -> Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        return x + self.conv2(nnx.silu(self.norm2(h)))


class VAE(nnx.Module):
    """Convolutional encoder ``q(z_0 | x)`` and decoder ``p(x | z)`` (discretised logistic).

    Args:
      config: a :class:`VAEConfig`.
      rngs: initialisation keys.
    """

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs):
        self.config = config
        kw = dict(dtype=jnp.float32, param_dtype=jnp.float32, rngs=rngs)
        chs = config.channels
        self.enc_in = conv(config.in_channels, chs[0], 3, **kw)
        enc = []
        for i, ch in enumerate(chs):
            enc += [_Block(ch, rngs) for _ in range(config.num_res_blocks)]
            enc.append(conv(ch, chs[min(i + 1, len(chs) - 1)], 3, strides=2, **kw))
        self.enc = nnx.List(enc)
        self.enc_norm = GroupNorm(chs[-1], num_groups=group_count(chs[-1]), dtype=jnp.float32,
                                  param_dtype=jnp.float32)
        self.enc_out = conv(chs[-1], 2 * config.latent_channels, 3, **kw)
        self.dec_in = conv(config.latent_channels, chs[-1], 3, **kw)
        dec = []
        for i, ch in reversed(list(enumerate(chs))):
            dec += [_Block(ch, rngs) for _ in range(config.num_res_blocks)]
            dec.append(conv(ch, chs[max(i - 1, 0)], 3, **kw))  # after nearest-neighbour x2
        self.dec = nnx.List(dec)
        self.dec_norm = GroupNorm(chs[0], num_groups=group_count(chs[0]), dtype=jnp.float32, param_dtype=jnp.float32)
        self.dec_out = conv(chs[0], 2 * config.in_channels, 3, **kw)

    def encode(self, x: Array) -> tuple[Array, Array]:
        """``x`` ``(B, S, S, C)`` in ``[-1, 1]`` -> ``(mean, std)`` of ``q(z_0 | x)``, each ``(B, *latent_shape)``."""
        c = self.config
        if x.shape[1:] != (c.image_size, c.image_size, c.in_channels):
            raise ValueError(f"VAE.encode expects (B, {c.image_size}, {c.image_size}, {c.in_channels}), got {x.shape}")
        h = self.enc_in(x)
        per_level = c.num_res_blocks + 1
        for i, layer in enumerate(self.enc):
            h = layer(h) if (i % per_level) < c.num_res_blocks else layer(nnx.silu(h))
        mean, log_std = jnp.split(self.enc_out(nnx.silu(self.enc_norm(h))), 2, axis=-1)
        log_std = c.min_log_std + nnx.softplus(log_std - c.min_log_std)
        return mean, jnp.exp(log_std)

    def decode(self, z: Array) -> tuple[Array, Array]:
        """Latents ``(B, *latent_shape)`` -> ``(mean, log_scale)`` of the per-pixel logistic, each ``(B, S, S, C)``."""
        c = self.config
        if z.shape[1:] != c.latent_shape:
            raise ValueError(f"VAE.decode expects latents (B, {', '.join(map(str, c.latent_shape))}), got {z.shape}")
        h = self.dec_in(z)
        per_level = c.num_res_blocks + 1
        for i, layer in enumerate(self.dec):
            if (i % per_level) < c.num_res_blocks:
                h = layer(h)
            else:
                b, hh, ww, ch = h.shape
                h = jnp.broadcast_to(h[:, :, None, :, None, :], (b, hh, 2, ww, 2, ch)).reshape(b, 2 * hh, 2 * ww, ch)
                h = layer(nnx.silu(h))
        mean, log_scale = jnp.split(self.dec_out(nnx.silu(self.dec_norm(h))), 2, axis=-1)
        log_scale = c.min_log_scale + nnx.softplus(log_scale - c.min_log_scale)
        return jnp.tanh(mean), log_scale


class LatentPrior(nnx.Module):
    """LSGM's latent score network: a UNet's eps output plus per-channel mixing logits.

    The mixing itself (``sigma (1 - a) z_t + a eps_net``, ``a = sigmoid(logit)``)
    is :func:`diffjax.tasks.lsgm.mixed_eps`; this module only holds the parameters.

    Args:
      config: the UNet's config (``image_size``/``in_channels`` = the latent's).
      mixing_logit_init: initial logit of every channel (LSGM starts near the
        Normal prior: ``-3`` gives ``a ~ 0.047``).
      rngs: initialisation keys.
    """

    def __init__(self, config: UNetConfig, *, mixing_logit_init: float = -3.0, rngs: nnx.Rngs):
        self.net = UNet(config, rngs=rngs)
        self.mixing_logit = nnx.Param(jnp.full((config.in_channels,), mixing_logit_init, jnp.float32))

    def __call__(self, z_t: Array, c: Array) -> Array:
        """The network's raw eps output for latents ``z_t`` at conditioning scalars ``c`` ``(B,)``."""
        return self.net(z_t, c)
