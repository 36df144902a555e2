"""A time-dependent image classifier: the UNet's encoder, pooled to logits.

EGSDE's domain classifier (and classifier guidance in general) needs a
classifier of *noisy* images ``x_t`` that knows ``t``. This is the UNet's
downsampling half built from the same blocks (time embedding, DDPM++ residual
blocks, optional attention, strided-conv downsampling) and a middle block,
then GroupNorm-SiLU, global average pooling and a linear head.

``model(x, c)`` gives logits; ``model.features(x, c)`` the middle block's
activations ``(B, h, w, C)`` (the "middle layers" EGSDE compares between the
current sample and the perturbed source).
"""

from __future__ import annotations

import dataclasses
import itertools

import jax.numpy as jnp
from flax import nnx

from diffjax.nn.embeddings import GaussianFourierEmbedding, sinusoidal_embedding
from diffjax.nn.layers import AttentionBlock, Downsample, GroupNorm, ResBlock, conv, group_count
from diffjax.nn.unet import _ResAttn  # residual block + optional attention, as in the UNet
from diffjax.typing import Array, PRNGKey

__all__ = ["Classifier", "ClassifierConfig"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Hyper-parameters of :class:`Classifier` (the names follow ``UNetConfig``).

    Args:
      image_size: square input side (divisible by ``2 ** (len(channel_mult) - 1)``).
      in_channels: image channels.
      num_classes: number of output classes (2 for a domain classifier).
      base_channels: width of the first level.
      channel_mult: width multiplier per level; each level but the last halves H and W.
      num_res_blocks: residual blocks per level.
      attn_resolutions: resolutions with self-attention after each block.
      num_heads: attention heads.
      dropout: dropout rate inside residual blocks.
      time_embedding: ``"fourier"`` (random Fourier features, for continuous t)
        or ``"sinusoidal"``.
      time_scale: the conditioning scalar is multiplied by this before embedding.
      fourier_scale: std of the Fourier frequencies.
      resample_with_conv: strided conv (True) or average pooling to downsample.
      rescale_skip: divide residual sums by sqrt(2).
      dtype, param_dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
    """

    image_size: int
    in_channels: int
    num_classes: int = 2
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: tuple[int, ...] = ()
    num_heads: int = 1
    dropout: float = 0.0
    time_embedding: str = "fourier"
    time_scale: float = 1.0
    fourier_scale: float = 16.0
    resample_with_conv: bool = True
    rescale_skip: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        # Tuples (hashable), also when the fields come back as lists from model_config.json.
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        levels = len(self.channel_mult)
        checks = [
            (self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}"),
            (self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}"),
            (levels >= 1 and all(m >= 1 for m in self.channel_mult), f"bad channel_mult {self.channel_mult}"),
            (self.image_size >= 1 and self.image_size % (2 ** (levels - 1)) == 0,
             f"image_size {self.image_size} must be divisible by 2**(len(channel_mult) - 1) = {2 ** (levels - 1)}"),
            (self.num_res_blocks >= 1, f"num_res_blocks must be >= 1, got {self.num_res_blocks}"),
            (self.time_embedding in ("fourier", "sinusoidal"),
             f"time_embedding must be 'fourier' or 'sinusoidal', got {self.time_embedding!r}"),
            (self.dtype in _DTYPES and self.param_dtype in _DTYPES,
             f"dtype / param_dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}, {self.param_dtype!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"ClassifierConfig: {message}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial side at each level."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mult)))


class Classifier(nnx.Module):
    """Time-dependent classifier of noisy images.

    Args:
      config: a :class:`ClassifierConfig`.
      rngs: ``nnx.Rngs`` whose ``params`` stream initialises the weights.
    """

    def __init__(self, config: ClassifierConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, ClassifierConfig):
            raise ValueError(f"Classifier expects a ClassifierConfig, got {type(config).__name__}")
        self.config = cfg = config
        dt, pdt = _DTYPES[cfg.dtype], _DTYPES[cfg.param_dtype]
        kw = dict(dtype=dt, param_dtype=pdt, rngs=rngs)
        nf = cfg.base_channels
        emb_dim = 4 * nf
        self.fourier = (GaussianFourierEmbedding(nf, scale=cfg.fourier_scale, rngs=rngs)
                        if cfg.time_embedding == "fourier" else None)
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        self.emb_in = nnx.Linear(nf, emb_dim, kernel_init=init, param_dtype=pdt, rngs=rngs)
        self.emb_out = nnx.Linear(emb_dim, emb_dim, kernel_init=init, param_dtype=pdt, rngs=rngs)
        block_ids = itertools.count()

        def res(cin, cout):
            return ResBlock(cin, cout, emb_dim, dropout_rate=cfg.dropout, rescale_skip=cfg.rescale_skip,
                            block_id=next(block_ids), **kw)

        def attn(ch):
            return AttentionBlock(ch, num_heads=cfg.num_heads, rescale_skip=cfg.rescale_skip, **kw)

        self.conv_in = conv(cfg.in_channels, nf, 3, **kw)
        ch = nf
        blocks, downsamplers = [], []
        for level, mult in enumerate(cfg.channel_mult):
            with_attn = cfg.resolutions[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks):
                blocks.append(_ResAttn(res(ch, nf * mult), attn(nf * mult) if with_attn else None))
                ch = nf * mult
            if level != len(cfg.channel_mult) - 1:
                downsamplers.append(Downsample(ch, with_conv=cfg.resample_with_conv, **kw))
        self.blocks = nnx.List(blocks)
        self.downsamplers = nnx.List(downsamplers)
        self.mid = res(ch, ch)
        self.norm_out = GroupNorm(ch, num_groups=group_count(ch), epsilon=1e-6, dtype=dt, param_dtype=pdt)
        self.head = nnx.Linear(ch, cfg.num_classes, param_dtype=pdt, rngs=rngs)

    def _check(self, x: Array, c: Array) -> None:
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (batch, {want[0]}, {want[1]}, {want[2]}) (NHWC), got {tuple(x.shape)}")
        if tuple(jnp.shape(c)) != (x.shape[0],):
            raise ValueError(f"c must have shape (batch,) = ({x.shape[0]},), got {tuple(jnp.shape(c))}")

    def features(self, x: Array, c: Array, dropout_key: PRNGKey | None = None) -> Array:
        """The middle block's activations, ``(B, H / 2**(L-1), W / 2**(L-1), C)`` float32.

        Args:
          x: ``(B, H, W, in_channels)`` noisy images.
          c: ``(B,)`` conditioning scalar (the time, as the run's ``time_input``).
          dropout_key: a key turns dropout on (training); ``None`` off.
        """
        self._check(x, c)
        cfg = self.config
        dt = _DTYPES[cfg.dtype]
        c = c.astype(jnp.float32) * cfg.time_scale
        emb = self.fourier(c) if self.fourier is not None else sinusoidal_embedding(c, cfg.base_channels)
        emb_act = nnx.silu(self.emb_out(nnx.silu(self.emb_in(emb)))).astype(dt)
        h = self.conv_in(x.astype(dt))
        num_levels = len(cfg.channel_mult)
        for level in range(num_levels):
            for j in range(cfg.num_res_blocks):
                h = self.blocks[level * cfg.num_res_blocks + j](h, emb_act, dropout_key)
            if level != num_levels - 1:
                h = self.downsamplers[level](h)
        return self.mid(h, emb_act, dropout_key).astype(jnp.float32)

    def __call__(self, x: Array, c: Array, dropout_key: PRNGKey | None = None) -> Array:
        """Logits ``(B, num_classes)`` float32 of noisy images ``x`` at conditioning ``c``."""
        h = self.features(x, c, dropout_key)
        h = nnx.silu(self.norm_out(h.astype(_DTYPES[self.config.dtype])))
        return self.head(jnp.mean(h, axis=(1, 2)).astype(jnp.float32)).astype(jnp.float32)
