"""The first stage of latent diffusion: a KL-regularised convolutional autoencoder (Flax NNX, NHWC).

Layout, for ``channel_mult=(1, 2, 2)`` (downsampling factor ``f = 4``)::

    encoder: conv_in -> [num_res_blocks x Block, stride-2 conv] x 2 -> num_res_blocks x Block
             -> Block (middle) -> GroupNorm, SiLU, conv -> (mean, log-variance), z_channels each
    decoder: conv_in -> Block (middle) -> [num_res_blocks + 1 x Block, upsample] x 2
             -> num_res_blocks + 1 x Block -> GroupNorm, SiLU, conv -> image

Every layer is a convolution or a per-image normalisation, so the network
encodes and decodes images of any height and width divisible by ``f``; the
size it was trained at is recorded in its config but never enforced. The
optional patch discriminator (Isola et al.'s PatchGAN, as the paper's first
stage) rides along as a sub-module so that one optimizer trains both.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.nn.layers import Downsample, GroupNorm, Upsample, conv, group_count
from diffjax.typing import Array, PRNGKey

__all__ = ["AutoencoderConfig", "Autoencoder", "PatchDiscriminator", "LOGVAR_RANGE"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

#: The posterior log-variance is clipped to this range (as the paper's first stage).
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of :class:`Autoencoder`; validated at construction.

    Attributes:
      image_size: the size it was trained at (recorded only: the network is
        fully convolutional and takes any size divisible by :attr:`factor`).
      in_channels: image channels (1 or 3).
      base_channels: channels at the first level.
      channel_mult: per-level multipliers; ``len(channel_mult) - 1`` stride-2
        steps give the downsampling factor ``f = 2 ** (len(channel_mult) - 1)``.
      num_res_blocks: residual blocks per encoder level (one more per decoder level).
      z_channels: channels of the latent.
      disc_channels: width of the patch discriminator's first layer; 0 = none.
      disc_layers: stride-2 layers of the patch discriminator.
      dtype, param_dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    """

    image_size: int = 64
    in_channels: int = 3
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    z_channels: int = 4
    disc_channels: int = 0
    disc_layers: int = 3
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        for field in ("image_size", "in_channels", "base_channels", "num_res_blocks", "z_channels", "disc_layers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AutoencoderConfig.{field} must be a positive integer, got {value!r}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult}")
        if self.disc_channels < 0:
            raise ValueError(f"disc_channels must be >= 0 (0 = no discriminator), got {self.disc_channels}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"{field} must be one of {tuple(_DTYPES)}, got {getattr(self, field)!r}")

    @property
    def factor(self) -> int:
        """The downsampling factor ``f`` per side."""
        return 2 ** (len(self.channel_mult) - 1)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """``(H / f, W / f, z_channels)`` for an image of ``height x width``.

        Raises:
          ValueError: a side not divisible by ``f``.
        """
        f = self.factor
        if height % f or width % f or height < f or width < f:
            raise ValueError(f"the autoencoder (f={f}) takes images whose sides are positive multiples of {f}, "
                             f"got {height}x{width}")
        return height // f, width // f, self.z_channels


class _Block(nnx.Module):
    """Residual block without an embedding: GN-SiLU-conv, GN-SiLU-conv, plus the (1x1-mapped) input."""

    def __init__(self, in_ch: int, out_ch: int, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = GroupNorm(in_ch, num_groups=group_count(in_ch), dtype=dtype, param_dtype=param_dtype)
        self.conv1 = conv(in_ch, out_ch, 3, **kw)
        self.norm2 = GroupNorm(out_ch, num_groups=group_count(out_ch), dtype=dtype, param_dtype=param_dtype)
        self.conv2 = conv(out_ch, out_ch, 3, **kw)
        self.skip = conv(in_ch, out_ch, 1, **kw) if in_ch != out_ch else None

    def __call__(self, x: Array) -> Array:
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = self.conv2(nnx.silu(self.norm2(h)))
        return ((x if self.skip is None else self.skip(x)) + h) * (1.0 / math.sqrt(2.0))


class PatchDiscriminator(nnx.Module):
    """PatchGAN discriminator: stride-2 4x4 convolutions with leaky ReLU, one logit per patch.

    Args:
      in_channels: image channels.
      channels: width of the first layer (doubled per layer, at most 8x).
      num_layers: stride-2 layers.
      rngs: ``nnx.Rngs`` for initialisation.
    """

    def __init__(self, in_channels: int, channels: int, num_layers: int, *, dtype=jnp.float32,
                 param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        widths = [in_channels] + [channels * min(2 ** i, 8) for i in range(num_layers)]
        self.convs = nnx.List([nnx.Conv(widths[i], widths[i + 1], (4, 4), strides=2, padding="SAME", **kw)
                               for i in range(num_layers)])
        self.out = nnx.Conv(widths[-1], 1, (3, 3), padding="SAME", **kw)

    def __call__(self, x: Array) -> Array:
        """``(B, H, W, C)`` images -> ``(B, H / 2**L, W / 2**L, 1)`` real-vs-fake logits."""
        for layer in self.convs:
            x = nnx.leaky_relu(layer(x), 0.2)
        return self.out(x)


class Autoencoder(nnx.Module):
    """KL-regularised convolutional autoencoder (the first stage of latent diffusion).

    Args:
      config: an :class:`AutoencoderConfig`.
      rngs: ``nnx.Rngs`` whose ``params`` stream initialises the weights.

    ``encode(x) -> (mean, logvar)``, ``decode(z) -> image``; calling the module
    runs both (see :meth:`__call__`).
    """

    def __init__(self, config: AutoencoderConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, AutoencoderConfig):
            raise ValueError(f"Autoencoder expects an AutoencoderConfig, got {type(config).__name__}")
        self.config = cfg = config
        dt, pdt = _DTYPES[cfg.dtype], _DTYPES[cfg.param_dtype]
        kw = dict(dtype=dt, param_dtype=pdt, rngs=rngs)
        widths = [cfg.base_channels * m for m in cfg.channel_mult]
        levels = len(widths)

        self.enc_in = conv(cfg.in_channels, widths[0], 3, **kw)
        enc, ch = [], widths[0]
        for level, width in enumerate(widths):
            for _ in range(cfg.num_res_blocks):
                enc.append(_Block(ch, width, **kw))
                ch = width
            if level < levels - 1:
                enc.append(Downsample(ch, with_conv=True, **kw))
        self.enc_blocks = nnx.List(enc)
        self.enc_mid = _Block(ch, ch, **kw)
        self.enc_norm = GroupNorm(ch, num_groups=group_count(ch), dtype=dt, param_dtype=pdt)
        self.enc_out = conv(ch, 2 * cfg.z_channels, 3, **kw)

        self.dec_in = conv(cfg.z_channels, ch, 3, **kw)
        self.dec_mid = _Block(ch, ch, **kw)
        dec = []
        for level in reversed(range(levels)):
            for _ in range(cfg.num_res_blocks + 1):
                dec.append(_Block(ch, widths[level], **kw))
                ch = widths[level]
            if level > 0:
                dec.append(Upsample(ch, with_conv=True, **kw))
        self.dec_blocks = nnx.List(dec)
        self.dec_norm = GroupNorm(ch, num_groups=group_count(ch), dtype=dt, param_dtype=pdt)
        self.dec_out = conv(ch, cfg.in_channels, 3, **kw)
        self.discriminator = (PatchDiscriminator(cfg.in_channels, cfg.disc_channels, cfg.disc_layers, **kw)
                              if cfg.disc_channels else None)

    def _check(self, x: Array, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[-1] != channels:
            raise ValueError(f"Autoencoder.{what} expects (B, H, W, {channels}) inputs, got shape {x.shape}")

    def encode(self, x: Array) -> tuple[Array, Array]:
        """Images ``(B, H, W, C)`` in ``[-1, 1]`` -> posterior ``(mean, logvar)``, each ``(B, H/f, W/f, z)``.

        Raises:
          ValueError: a wrong rank or channel count, or sides not divisible by ``f``.
        """
        self._check(x, self.config.in_channels, "encode")
        self.config.latent_shape(x.shape[1], x.shape[2])
        h = self.enc_in(x)
        for block in self.enc_blocks:
            h = block(h)
        h = self.enc_out(nnx.silu(self.enc_norm(self.enc_mid(h)))).astype(jnp.float32)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: Array) -> Array:
        """Latents ``(B, h, w, z)`` -> images ``(B, f h, f w, C)`` (unclipped, ``[-1, 1]`` after training).

        Raises:
          ValueError: a wrong rank or channel count.
        """
        self._check(z, self.config.z_channels, "decode")
        h = self.dec_mid(self.dec_in(z))
        for block in self.dec_blocks:
            h = block(h)
        return self.dec_out(nnx.silu(self.dec_norm(h))).astype(jnp.float32)

    def discriminate(self, x: Array, *, frozen: bool = False) -> Array:
        """Patch logits of the discriminator for images ``x``.

        Args:
          x: ``(B, H, W, C)`` images.
          frozen: stop the gradient to the discriminator's parameters (the
            generator's adversarial term must not train the discriminator).

        Raises:
          ValueError: an autoencoder built without a discriminator (``disc_channels=0``).
        """
        if self.discriminator is None:
            raise ValueError("this autoencoder has no discriminator: build it with disc_channels > 0")
        if not frozen:
            return self.discriminator(x)
        graphdef, state = nnx.split(self.discriminator)
        return nnx.merge(graphdef, jax.lax.stop_gradient(state))(x)

    def __call__(self, x: Array, c: Array | None = None, *, noise_key: PRNGKey | None = None,
                 sample_posterior: bool = True, discriminate: bool = False, frozen: bool = False,
                 **unused) -> dict | Array:
        """Encode, draw a latent, decode (the training forward pass).

        Args:
          x: ``(B, H, W, C)`` images in ``[-1, 1]``.
          c: ignored (the training step passes a time input to every network).
          noise_key: key for the posterior draw ``z = mean + exp(logvar / 2) * noise``;
            ``None`` (or ``sample_posterior=False``) decodes the mean.
          sample_posterior: draw from the posterior rather than take its mean.
          discriminate: instead, return the discriminator's patch logits for ``x``
            (:meth:`discriminate`, with ``frozen``): the training loss reaches the
            discriminator through the same call.
          frozen: see :meth:`discriminate`.
          **unused: other network inputs of the training step (dropout keys, labels), ignored.

        Returns:
          ``{"recon": (B, H, W, C), "mean": ..., "logvar": ..., "z": ...}`` (or
          the logits, with ``discriminate``).
        """
        del c, unused
        if discriminate:
            return self.discriminate(x, frozen=frozen)
        mean, logvar = self.encode(x)
        z = mean
        if sample_posterior and noise_key is not None:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(noise_key, mean.shape, mean.dtype)
        return {"recon": self.decode(z), "mean": mean, "logvar": logvar, "z": z}
