"""The DDPM++ / NCSN++-style UNet (Flax NNX, NHWC) and its frozen config.

Layout, for ``channel_mult=(1, 2, 2)`` and ``num_res_blocks=2``::

    conv_in
    level 0 (32x32):  2 x ResBlock [+attn]     -> downsample
    level 1 (16x16):  2 x ResBlock [+attn]     -> downsample
    level 2 (8x8):    2 x ResBlock [+attn]
    middle:           ResBlock, attn, ResBlock
    up levels 2,1,0:  3 x ResBlock(concat skip) [+attn] -> upsample (not after level 0)
    GroupNorm, SiLU, conv_out (zero-initialised: the untrained net outputs 0)

The conditioning scalar ``c`` (time, noise level or step index) is embedded
(Gaussian Fourier or sinusoidal), passed through a 2-layer MLP, summed with an
optional class embedding and added inside every residual block.

With ``context_dim > 0`` every attention site (the blocks of
``attn_resolutions`` and the middle) is followed by a cross-attention block
whose keys and values are context tokens ``(batch, tokens, context_dim)``:
class labels through :class:`~diffjax.nn.embeddings.LabelTokens`
(``label_conditioning="context"`` or ``"both"``), any token sequence a caller
brings (``context=``), or both, concatenated along the tokens (docs/unet.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.nn.embeddings import GaussianFourierEmbedding, LabelTokens, sinusoidal_embedding
from diffjax.nn.layers import (
    ATTENTION_IMPLS, KERNEL_GRADS, AttentionBlock, CrossAttentionBlock, Downsample, GroupNorm, ResBlock, Upsample,
    conv, group_count,
)
from diffjax.typing import Array, PRNGKey

__all__ = ["UNetConfig", "UNet"]

# Kept here rather than imported from the math: nn/ depends on none of it.
_PREDICTIONS = ("eps", "x0", "v", "score")
_TIME_EMBEDDINGS = ("fourier", "sinusoidal")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_LABEL_CONDITIONINGS = ("embedding", "context", "both")
# fold_in index of the condition-dropout draw; the residual blocks use 0, 1, ... (their ids).
_CONDITION_DROPOUT_STREAM = 2**20


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of :class:`UNet`; validated at construction.

    Attributes:
      image_size: height = width of the input.
      in_channels: channels of the noisy image ``x``.
      out_channels: channels of the output; ``None`` means ``in_channels``.
      base_channels: channels at the first level.
      channel_mult: per-level multipliers of ``base_channels``; level ``i``
        works at resolution ``image_size / 2**i``.
      num_res_blocks: residual blocks per level on the way down (one more up).
      attn_resolutions: resolutions (e.g. ``(16,)``) with self-attention after
        each residual block.
      num_heads: attention heads.
      dropout: dropout rate inside residual blocks (active only with a key).
      time_embedding: ``"fourier"`` (Gaussian Fourier features, NCSN++) or
        ``"sinusoidal"`` (DDPM positional encoding).
      time_scale: ``c`` is multiplied by this before embedding (use 1000 with
        ``"sinusoidal"`` and ``t`` in ``[0, 1]``).
      fourier_scale: standard deviation of the Fourier frequencies.
      cond_channels: channels of an image concatenated to ``x`` (SR3, Palette).
      aug_level_embedding: also take ``aug_level`` (a second scalar per example,
        the conditioning-augmentation level of cascaded super-resolution),
        embedded like the time and added to the time embedding.
      num_classes: ``> 0`` adds a class embedding; label ``num_classes`` is
        the null (unconditional) label, used when ``labels`` is ``None``.
      resample_with_conv: conv down/up-sampling, else average pool / nearest.
      rescale_skip: divide residual sums by sqrt(2) (DDPM++).
      prediction: what the output means (``"eps"``, ``"x0"``, ``"v"``,
        ``"score"``); read by callers, not by the network.
      dtype: compute dtype, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
      param_dtype: parameter dtype, same choices.
      conv_kernel_grad: how convolution kernel gradients are computed: ``"xla"``
        (XLA's own), ``"patches"`` (patches x output-gradient matmuls) or
        ``"auto"`` (patches only for the layer shapes where it measured faster;
        docs/unet.md). Values and gradients agree within float tolerance;
        ``"patches"`` / ``"auto"`` are custom VJPs, so they do not support
        ``jax.jvp`` through the network (``dj.log_likelihood`` needs ``"xla"``).
      attention_impl: ``"einsum"`` (default; fastest on CPU) or
        ``"dot_product"`` (``jax.nn.dot_product_attention``: a fused kernel
        where the backend has one, e.g. cuDNN on GPU). Same numbers. The
        cross-attention always uses einsums (a few tokens per example).
      context_dim: width of the context tokens; ``> 0`` adds a cross-attention
        block after every self-attention block (each level of
        ``attn_resolutions`` and the middle). ``0`` (default): no cross-attention.
      label_conditioning: how labels enter when ``num_classes > 0``:
        ``"embedding"`` (added to the time embedding, the default), ``"context"``
        (``label_tokens`` learned tokens per label, attended by the
        cross-attention; needs ``context_dim > 0``) or ``"both"``.
      label_tokens: tokens per label with ``"context"`` / ``"both"``.
      condition_dropout: in training (a ``dropout_key`` given), the probability
        that an example's labels become the null label and all its context
        tokens are masked: the unconditional examples classifier-free guidance
        needs. ``0`` (default): never.
      remat: rematerialise every residual/attention block (``nnx.remat``): the
        backward pass recomputes a block's activations instead of keeping them,
        trading about one extra forward pass for activation memory. Same loss
        and gradients.
    """

    image_size: int = 32
    in_channels: int = 3
    out_channels: int | None = None
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    dropout: float = 0.0
    time_embedding: str = "fourier"
    time_scale: float = 1.0
    fourier_scale: float = 16.0
    cond_channels: int = 0
    aug_level_embedding: bool = False
    num_classes: int = 0
    resample_with_conv: bool = True
    rescale_skip: bool = True
    prediction: str = "eps"
    dtype: str = "float32"
    param_dtype: str = "float32"
    conv_kernel_grad: str = "xla"
    attention_impl: str = "einsum"
    context_dim: int = 0
    label_conditioning: str = "embedding"
    label_tokens: int = 1
    condition_dropout: float = 0.0
    remat: bool = False

    def __post_init__(self):
        # Configs read from ConfigDicts hand over lists; store hashable tuples.
        object.__setattr__(self, "channel_mult", tuple(int(m) for m in self.channel_mult))
        object.__setattr__(self, "attn_resolutions", tuple(int(r) for r in self.attn_resolutions))
        if self.time_embedding not in _TIME_EMBEDDINGS:
            raise ValueError(f"time_embedding must be one of {_TIME_EMBEDDINGS}, got {self.time_embedding!r}")
        if self.conv_kernel_grad not in KERNEL_GRADS:
            raise ValueError(f"conv_kernel_grad must be one of {KERNEL_GRADS}, got {self.conv_kernel_grad!r}")
        if self.attention_impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {self.attention_impl!r}")
        if self.prediction not in _PREDICTIONS:
            raise ValueError(f"prediction must be one of {_PREDICTIONS}, got {self.prediction!r}")
        for field in ("dtype", "param_dtype"):
            if getattr(self, field) not in _DTYPES:
                raise ValueError(f"{field} must be one of {tuple(_DTYPES)}, got {getattr(self, field)!r}")
        for field in ("image_size", "in_channels", "base_channels", "num_res_blocks", "num_heads"):
            if int(getattr(self, field)) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)!r}")
        if self.out_channels is not None and self.out_channels < 1:
            raise ValueError(f"out_channels must be positive or None, got {self.out_channels!r}")
        if self.cond_channels < 0 or self.num_classes < 0:
            raise ValueError(f"cond_channels and num_classes must be >= 0, got "
                             f"{self.cond_channels} and {self.num_classes}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by 2**(len(channel_mult)-1)={factor} "
                f"for channel_mult={self.channel_mult}; change image_size or use fewer levels")
        bad = sorted(set(self.attn_resolutions) - set(self.resolutions))
        if bad:
            raise ValueError(f"attn_resolutions {bad} do not occur; the levels run at resolutions "
                             f"{self.resolutions} for image_size={self.image_size} and "
                             f"channel_mult={self.channel_mult}")
        for level, mult in enumerate(self.channel_mult):
            ch = self.base_channels * mult
            if self.resolutions[level] in self.attn_resolutions and ch % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide the {ch} channels of the "
                                 f"attention level at resolution {self.resolutions[level]}")
        if self.base_channels % 2:
            raise ValueError(f"base_channels must be even (it is the width of the time embedding's "
                             f"sin/cos pairs), got {self.base_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.context_dim < 0 or self.label_tokens < 1:
            raise ValueError(f"context_dim must be >= 0 (0 = no cross-attention) and label_tokens >= 1, "
                             f"got {self.context_dim} and {self.label_tokens}")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.label_conditioning not in _LABEL_CONDITIONINGS:
            raise ValueError(f"label_conditioning must be one of {_LABEL_CONDITIONINGS}, "
                             f"got {self.label_conditioning!r}")
        if self.label_conditioning != "embedding" and self.num_classes == 0:
            raise ValueError(f"label_conditioning={self.label_conditioning!r} encodes class labels, but "
                             f"num_classes=0; set num_classes (in a run config: data.use_labels=True) or "
                             f"label_conditioning='embedding'")
        if self.labels_as_context and self.context_dim == 0:
            raise ValueError(f"label_conditioning={self.label_conditioning!r} feeds labels to the "
                             f"cross-attention, which needs context_dim > 0; got context_dim=0")
        if self.context_dim > 0:
            mid = self.base_channels * self.channel_mult[-1]
            if mid % self.num_heads:
                raise ValueError(f"num_heads={self.num_heads} must divide the {mid} channels of the middle "
                                 f"attention, which is followed by cross-attention (context_dim > 0)")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Spatial size of each level, from ``image_size`` down."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mult)))

    @property
    def labels_as_context(self) -> bool:
        """Whether labels become context tokens (``num_classes > 0`` and ``"context"`` / ``"both"``)."""
        return self.num_classes > 0 and self.label_conditioning != "embedding"

    @property
    def labels_as_embedding(self) -> bool:
        """Whether labels are added to the time embedding (``num_classes > 0`` and ``"embedding"`` / ``"both"``)."""
        return self.num_classes > 0 and self.label_conditioning != "context"

    @property
    def output_channels(self) -> int:
        """``out_channels``, or ``in_channels`` when it is ``None``."""
        return self.in_channels if self.out_channels is None else self.out_channels


class _ResAttn(nnx.Module):
    """A residual block optionally followed by self-attention, then optionally cross-attention."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None, xattn: CrossAttentionBlock | None = None):
        self.res = res
        self.attn = attn
        self.xattn = xattn

    def __call__(self, x: Array, emb_act: Array, dropout_key: PRNGKey | None,
                 context: Array | None = None, context_mask: Array | None = None) -> Array:
        x = self.res(x, emb_act, dropout_key)
        x = x if self.attn is None else self.attn(x)
        return x if self.xattn is None else self.xattn(x, context, context_mask)


def _plain_call(block: nnx.Module, *args):
    return block(*args)


# One rematerialised call for every block: nnx.remat lifts jax.checkpoint over the
# module's variables, so only the block's inputs are kept for the backward pass.
_remat_call = nnx.remat(_plain_call)


class UNet(nnx.Module):
    """DDPM++/NCSN++-style UNet for denoising diffusion models.

    Args:
      config: a :class:`UNetConfig`.
      rngs: ``nnx.Rngs`` whose ``params`` stream initialises the weights.

    Call ``model(x, c, cond=None, labels=None, dropout_key=None, aug_level=None,
    context=None, context_mask=None)``; see :meth:`__call__`.
    """

    def __init__(self, config: UNetConfig, *, rngs: nnx.Rngs):
        if not isinstance(config, UNetConfig):
            raise ValueError(f"UNet expects a UNetConfig, got {type(config).__name__}")
        self.config = config
        cfg = config
        dt, pdt = _DTYPES[cfg.dtype], _DTYPES[cfg.param_dtype]
        kw = dict(dtype=dt, param_dtype=pdt, rngs=rngs)
        ckw = dict(kw, kernel_grad=cfg.conv_kernel_grad)  # for the blocks that hold convolutions
        nf = cfg.base_channels
        emb_dim = 4 * nf

        self.fourier = (GaussianFourierEmbedding(nf, scale=cfg.fourier_scale, rngs=rngs)
                        if cfg.time_embedding == "fourier" else None)
        # The embedding MLP stays in float32: it is tiny and sets every block's bias.
        init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
        self.emb_in = nnx.Linear(nf, emb_dim, kernel_init=init, param_dtype=pdt, rngs=rngs)
        self.emb_out = nnx.Linear(emb_dim, emb_dim, kernel_init=init, param_dtype=pdt, rngs=rngs)
        # Its own MLP: the augmentation level means something else than the time.
        self.aug_emb_in = (nnx.Linear(nf, emb_dim, kernel_init=init, param_dtype=pdt, rngs=rngs)
                           if cfg.aug_level_embedding else None)
        self.aug_emb_out = (nnx.Linear(emb_dim, emb_dim, kernel_init=init, param_dtype=pdt, rngs=rngs)
                            if cfg.aug_level_embedding else None)
        # One extra row: the null label of classifier-free guidance.
        self.label_emb = (nnx.Embed(cfg.num_classes + 1, emb_dim, param_dtype=pdt, rngs=rngs)
                          if cfg.labels_as_embedding else None)
        # Labels as context tokens, with the same null label.
        self.label_tokens = (LabelTokens(cfg.num_classes, cfg.context_dim, tokens=cfg.label_tokens,
                                         param_dtype=pdt, rngs=rngs)
                             if cfg.labels_as_context else None)

        block_ids = itertools.count()  # static per-block index for dropout keys

        def res(cin, cout):
            return ResBlock(cin, cout, emb_dim, dropout_rate=cfg.dropout, rescale_skip=cfg.rescale_skip,
                           block_id=next(block_ids), **ckw)

        def attn(ch):
            return AttentionBlock(ch, num_heads=cfg.num_heads, rescale_skip=cfg.rescale_skip,
                                  impl=cfg.attention_impl, **kw)

        def xattn(ch):
            # After every self-attention block; absent (no parameters) without a context.
            return CrossAttentionBlock(ch, cfg.context_dim, num_heads=cfg.num_heads, **kw) if cfg.context_dim else None

        self.conv_in = conv(cfg.in_channels + cfg.cond_channels, nf, 3, **ckw)
        # Channel count of every activation pushed on the skip stack, in order.
        skip_channels = [nf]
        ch = nf
        down, downsamplers = [], []
        for level, mult in enumerate(cfg.channel_mult):
            with_attn = cfg.resolutions[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks):
                down.append(_ResAttn(res(ch, nf * mult), attn(nf * mult) if with_attn else None,
                                     xattn(nf * mult) if with_attn else None))
                ch = nf * mult
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                downsamplers.append(Downsample(ch, with_conv=cfg.resample_with_conv, **ckw))
                skip_channels.append(ch)
        self.down = nnx.List(down)
        self.downsamplers = nnx.List(downsamplers)

        self.mid_res1 = res(ch, ch)
        self.mid_attn = attn(ch)
        self.mid_xattn = xattn(ch)
        self.mid_res2 = res(ch, ch)

        up, upsamplers = [], []
        for level in reversed(range(len(cfg.channel_mult))):
            mult = cfg.channel_mult[level]
            with_attn = cfg.resolutions[level] in cfg.attn_resolutions
            for _ in range(cfg.num_res_blocks + 1):
                up.append(_ResAttn(res(ch + skip_channels.pop(), nf * mult),
                                   attn(nf * mult) if with_attn else None, xattn(nf * mult) if with_attn else None))
                ch = nf * mult
            if level != 0:
                upsamplers.append(Upsample(ch, with_conv=cfg.resample_with_conv, **ckw))
        self.up = nnx.List(up)
        self.upsamplers = nnx.List(upsamplers)

        self.norm_out = GroupNorm(ch, num_groups=group_count(ch), epsilon=1e-6, dtype=dt, param_dtype=pdt)
        # Zero init: the untrained network predicts 0 (e.g. eps = 0), a neutral start.
        self.conv_out = conv(ch, cfg.output_channels, 3, zero_init=True, **ckw)

    def _check_aug_level(self, aug_level, batch: int) -> None:
        if self.config.aug_level_embedding:
            if aug_level is None or tuple(jnp.shape(aug_level)) != (batch,):
                got = None if aug_level is None else tuple(jnp.shape(aug_level))
                raise ValueError(f"aug_level must have shape ({batch},) since aug_level_embedding=True "
                                 f"(0 = no augmentation), got {got}")
        elif aug_level is not None:
            raise ValueError("aug_level was given but aug_level_embedding=False; set "
                             "UNetConfig.aug_level_embedding=True or pass aug_level=None")

    def _check_inputs(self, x, c, cond, labels) -> None:
        cfg = self.config
        want = (cfg.image_size, cfg.image_size, cfg.in_channels)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"x must have shape (batch, {want[0]}, {want[1]}, {want[2]}) (NHWC, from "
                             f"UNetConfig.image_size/in_channels), got {tuple(x.shape)}")
        batch = x.shape[0]
        if tuple(jnp.shape(c)) != (batch,):
            raise ValueError(f"c must have shape (batch,) = ({batch},), one conditioning scalar per "
                             f"example, got {tuple(jnp.shape(c))}; broadcast a scalar with jnp.full")
        if cfg.cond_channels > 0:
            want_c = (batch, cfg.image_size, cfg.image_size, cfg.cond_channels)
            if cond is None:
                raise ValueError(f"cond is required since cond_channels={cfg.cond_channels}: "
                                 f"pass an array of shape {want_c}")
            if tuple(cond.shape) != want_c:
                raise ValueError(f"cond must have shape {want_c}, got {tuple(cond.shape)}")
        elif cond is not None:
            raise ValueError(f"cond was given (shape {tuple(cond.shape)}) but cond_channels=0; "
                             f"set UNetConfig.cond_channels={cond.shape[-1]} or pass cond=None")
        if cfg.num_classes > 0:
            if labels is not None:
                if tuple(labels.shape) != (batch,):
                    raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
                if not jnp.issubdtype(labels.dtype, jnp.integer):
                    raise ValueError(f"labels must be integers in [0, {cfg.num_classes}], got dtype {labels.dtype}")
        elif labels is not None:
            raise ValueError("labels were given but num_classes=0; set UNetConfig.num_classes or pass labels=None")

    def _check_context(self, context, context_mask, batch: int) -> None:
        cfg = self.config
        if cfg.context_dim == 0:
            if context is not None or context_mask is not None:
                got = "context" if context is not None else "context_mask"
                raise ValueError(f"{got} was given but context_dim=0 (no cross-attention); set "
                                 f"UNetConfig.context_dim to the token width or pass context=None")
            return
        if context is None:
            if context_mask is not None:
                raise ValueError("context_mask was given without context; pass the (batch, tokens, "
                                 f"{cfg.context_dim}) tokens it masks")
            if not cfg.labels_as_context:
                raise ValueError(f"context is required since context_dim={cfg.context_dim}: pass tokens of shape "
                                 f"({batch}, tokens, {cfg.context_dim}) (a context_mask of all False reads as "
                                 f"no condition), or set label_conditioning='context' to encode labels")
            return
        shape = tuple(jnp.shape(context))
        if len(shape) != 3 or shape[0] != batch or shape[2] != cfg.context_dim or shape[1] < 1:
            raise ValueError(f"context must have shape ({batch}, tokens >= 1, {cfg.context_dim}) (batch, tokens, "
                             f"UNetConfig.context_dim), got {shape}")
        if not jnp.issubdtype(context.dtype, jnp.floating):
            raise ValueError(f"context must be floating-point tokens, got dtype {context.dtype}; embed token ids "
                             f"first (e.g. with nnx.Embed or diffjax.nn.LabelTokens)")
        if context_mask is not None:
            if tuple(jnp.shape(context_mask)) != shape[:2]:
                raise ValueError(f"context_mask must have shape {shape[:2]} (batch, tokens) like context, "
                                 f"got {tuple(jnp.shape(context_mask))}")
            if context_mask.dtype != jnp.bool_:
                raise ValueError(f"context_mask must be boolean (True = a real token, False = padding), "
                                 f"got dtype {context_mask.dtype}")

    def _drop_condition(self, labels, context, context_mask, dropout_key, batch: int):
        """Classifier-free guidance's training-time drop: null labels, all context tokens masked."""
        cfg = self.config
        drop = jax.random.bernoulli(jax.random.fold_in(dropout_key, _CONDITION_DROPOUT_STREAM),
                                    cfg.condition_dropout, (batch,))
        if cfg.num_classes > 0:
            labels = jnp.full((batch,), cfg.num_classes, jnp.int32) if labels is None else labels
            labels = jnp.where(drop, jnp.asarray(cfg.num_classes, labels.dtype), labels)
        if context is not None:
            keep = jnp.ones(context.shape[:2], bool) if context_mask is None else context_mask
            context_mask = keep & ~drop[:, None]
        return labels, context_mask

    def encode_context(self, labels: Array | None, context: Array | None, context_mask: Array | None,
                       batch: int) -> tuple[Array | None, Array | None]:
        """The tokens the cross-attention attends to: label tokens, then the caller's ``context``.

        Args:
          labels: ``(B,)`` labels or ``None`` (null labels), used when
            ``label_conditioning`` is ``"context"`` or ``"both"``.
          context, context_mask: as in :meth:`__call__`.
          batch: ``B``.

        Returns:
          ``(tokens, mask)``: ``(B, T, context_dim)`` float32 tokens and a
          ``(B, T)`` bool mask or ``None`` (every token real); ``(None, None)``
          when ``context_dim = 0``.
        """
        if self.config.context_dim == 0:
            return None, None
        parts, masks = [], []
        if self.label_tokens is not None:
            tokens = self.label_tokens(labels, batch)
            parts.append(tokens)
            masks.append(jnp.ones(tokens.shape[:2], bool))
        if context is not None:
            parts.append(context.astype(jnp.float32))
            masks.append(jnp.ones(context.shape[:2], bool) if context_mask is None else context_mask)
        tokens = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
        mask = None if context_mask is None else jnp.concatenate(masks, axis=1)
        return tokens, mask

    def embed(self, c: Array, labels: Array | None) -> Array:
        """The (time + label) embedding, ``(batch, 4 * base_channels)`` float32."""
        cfg = self.config
        c = c.astype(jnp.float32) * cfg.time_scale
        if self.fourier is not None:
            emb = self.fourier(c)
        else:
            emb = sinusoidal_embedding(c, cfg.base_channels)
        emb = self.emb_out(nnx.silu(self.emb_in(emb)))
        if self.label_emb is not None:
            if labels is None:
                labels = jnp.full(c.shape, cfg.num_classes, jnp.int32)
            emb = emb + self.label_emb(labels)
        return emb

    def __call__(self, x: Array, c: Array, cond: Array | None = None, labels: Array | None = None,
                 dropout_key: PRNGKey | None = None, aug_level: Array | None = None,
                 context: Array | None = None, context_mask: Array | None = None) -> Array:
        """Apply the network.

        Args:
          x: ``(B, H, W, in_channels)`` noisy images.
          c: ``(B,)`` conditioning scalar (time, noise level or step index).
          cond: ``(B, H, W, cond_channels)`` conditioning image, given iff
            ``cond_channels > 0``.
          labels: ``(B,)`` integer labels in ``[0, num_classes]`` (the last is
            the null label); only when ``num_classes > 0``, where ``None``
            means all-null (unconditional).
          dropout_key: a ``jax.random`` key turns dropout on; ``None`` off.
          aug_level: ``(B,)`` conditioning-augmentation level, given iff
            ``aug_level_embedding`` (a time in ``[0, 1]``; 0 = clean condition).
          context: ``(B, T, context_dim)`` floating-point tokens for the
            cross-attention (any encoder's output; no positions are added, so
            add your own if order matters). Required when ``context_dim > 0``
            unless labels are encoded as tokens (``label_conditioning``
            ``"context"`` / ``"both"``), in which case it is optional and its
            tokens follow the label tokens.
          context_mask: ``(B, T)`` bool, False for padding tokens that the
            cross-attention ignores; a row of all False means no condition.
            Only with ``context``.

        Returns:
          ``(B, H, W, out_channels)`` float32 prediction.

        Raises:
          ValueError: inputs whose presence, shape or dtype do not match the config.
        """
        return self._forward(x, c, cond, labels, dropout_key, aug_level, context, context_mask, None)

    def activation_names(self) -> tuple[str, ...]:
        """Names of the blocks :meth:`activations` returns, from input to output.

        ``down_{i}`` is encoder residual block ``i`` (with its attention), ``mid`` the
        middle, ``up_{i}`` decoder block ``i`` (``i = 0`` nearest the middle, at the
        lowest resolution).
        """
        cfg = self.config
        down = [f"down_{i}" for i in range(len(cfg.channel_mult) * cfg.num_res_blocks)]
        up = [f"up_{i}" for i in range(len(cfg.channel_mult) * (cfg.num_res_blocks + 1))]
        return (*down, "mid", *up)

    def activations(self, x: Array, c: Array, cond: Array | None = None, labels: Array | None = None,
                    aug_level: Array | None = None, context: Array | None = None,
                    context_mask: Array | None = None) -> dict[str, Array]:
        """Intermediate activations (no dropout), e.g. as per-pixel features.

        Args:
          x, c, cond, labels, aug_level, context, context_mask: as in :meth:`__call__`.

        Returns:
          ``{name: (B, h, w, channels)}`` for every name of :meth:`activation_names`,
          each the output of its block (a level's resolution, before resampling).
        """
        acts: dict[str, Array] = {}
        self._forward(x, c, cond, labels, None, aug_level, context, context_mask, acts)
        return acts

    def _forward(self, x, c, cond, labels, dropout_key, aug_level, context, context_mask,
                 acts: dict | None) -> Array:
        """The network; block outputs are stored in ``acts`` when it is a dict."""
        self._check_inputs(x, c, cond, labels)
        self._check_aug_level(aug_level, x.shape[0])
        self._check_context(context, context_mask, x.shape[0])
        if self.config.condition_dropout > 0 and dropout_key is not None:
            labels, context_mask = self._drop_condition(labels, context, context_mask, dropout_key, x.shape[0])
        ctx = self.encode_context(labels, context, context_mask, x.shape[0])
        keep = (lambda name, value: acts.__setitem__(name, value)) if acts is not None else (lambda *_: None)
        cfg = self.config
        dt = _DTYPES[cfg.dtype]
        block_call = _remat_call if cfg.remat else _plain_call
        emb = self.embed(c, labels)
        if self.aug_emb_in is not None:
            # Sinusoidal (no state) of the level scaled like a DDPM step index.
            aug = sinusoidal_embedding(aug_level.astype(jnp.float32) * 1000.0, cfg.base_channels)
            emb = emb + self.aug_emb_out(nnx.silu(self.aug_emb_in(aug)))
        # SiLU once here rather than in every block: each block projects silu(emb).
        emb_act = nnx.silu(emb).astype(dt)
        h = x if cond is None else jnp.concatenate([x, cond.astype(x.dtype)], axis=-1)
        h = self.conv_in(h.astype(dt))

        skips = [h]
        num_levels = len(cfg.channel_mult)
        for level in range(num_levels):
            for j in range(cfg.num_res_blocks):
                h = block_call(self.down[level * cfg.num_res_blocks + j], h, emb_act, dropout_key, *ctx)
                keep(f"down_{level * cfg.num_res_blocks + j}", h)
                skips.append(h)
            if level != num_levels - 1:
                h = self.downsamplers[level](h)
                skips.append(h)

        h = block_call(self.mid_res1, h, emb_act, dropout_key)
        h = block_call(self.mid_attn, h)
        if self.mid_xattn is not None:
            h = block_call(self.mid_xattn, h, *ctx)
        h = block_call(self.mid_res2, h, emb_act, dropout_key)
        keep("mid", h)

        block = 0
        for i, level in enumerate(reversed(range(num_levels))):
            for _ in range(cfg.num_res_blocks + 1):
                h = block_call(self.up[block], jnp.concatenate([h, skips.pop()], axis=-1), emb_act, dropout_key, *ctx)
                keep(f"up_{block}", h)
                block += 1
            if level != 0:
                h = self.upsamplers[i](h)

        h = self.conv_out(nnx.silu(self.norm_out(h)))
        return h.astype(jnp.float32)


def num_parameters(model: nnx.Module) -> int:
    """Number of trainable (``nnx.Param``) scalars in ``model``."""
    return sum(math.prod(p.shape) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
