"""The ``UNet2DModel`` of diffusers, in NNX, parameter for parameter (NHWC activations).

Every parameter is stored under diffusers' own name and in PyTorch's layout
(convolutions ``(O, I, kh, kw)``, linear layers ``(out, in)``), so a module path
``down_blocks/0/resnets/1/conv1/weight`` *is* the state-dict key
``down_blocks.0.resnets.1.conv1.weight`` and loading or exporting a checkpoint
is a rename-free copy. Activations are NHWC like the rest of diffjax; attention
flattens ``(H, W)`` row-major, which is the order of PyTorch's ``(C, H*W)`` view.

The network takes ``x`` (``(B, H, W, C)``) and the diffusers timestep (the
discrete index ``0..N-1`` for DDPM / DDIM schedulers, the noise level ``sigma``
for the score-SDE VE scheduler) and returns what the checkpoint predicts.

Supported configuration (anything else is refused with a ``ValueError``):
down blocks ``DownBlock2D`` / ``AttnDownBlock2D`` (and ``SkipDownBlock2D`` /
``AttnSkipDownBlock2D``), up blocks ``UpBlock2D`` / ``AttnUpBlock2D`` (and the
skip variants), any channel list, layers per block, group count, head size,
``downsample_padding``, ``resnet_time_scale_shift`` ``default`` or
``scale_shift``, ``downsample_type`` / ``upsample_type`` ``conv`` or ``resnet``,
positional or Fourier time embeddings, class embeddings (``num_class_embeds``,
``class_embed_type`` ``timestep`` / ``identity``), ``center_input_sample``,
``mid_block_scale_factor``, ``add_attention``, ``attn_norm_num_groups``.

Two config keys that are not diffusers' (diffusers would ignore them, so a
config using them is not a ``UNet2DModel``; they let ADM models that
``UNet2DModel`` cannot express load, see docs/pretrained_adm_vae.md):
``diffjax_attention_heads`` (a fixed head count in every attention layer, its
head width following the layer's channels, as ADM's ``num_heads``; overrides
``attention_head_dim``) and ``diffjax_time_proj_dim`` (the width of the
sinusoidal timestep features, ADM's ``num_channels``, when it is not
``block_out_channels[0]``; set ``time_embedding_dim`` to 4 times it).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.typing import Array

__all__ = ["DiffusersUNet2D", "DiffusersUNetConfig", "check_unet_config", "DOWN_BLOCKS", "UP_BLOCKS"]

DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D", "SkipDownBlock2D", "AttnSkipDownBlock2D",
               "ResnetDownsampleBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D", "SkipUpBlock2D", "AttnSkipUpBlock2D", "ResnetUpsampleBlock2D")

# UNet2DModel's constructor defaults (diffusers 0.2x-0.4x), filled in for keys a config.json omits.
DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896), "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "num_train_timesteps": None,
}
# diffjax's own keys (ADM models UNet2DModel cannot express); absent from a config = diffusers' behaviour.
EXTENSIONS = ("diffjax_attention_heads", "diffjax_time_proj_dim")
# Keys diffusers writes that do not change the network.
_IGNORED = {"_class_name", "_diffusers_version", "_name_or_path", "dropout", "sample_size", "num_train_timesteps"}


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"UNet2DModel config: {name}={value!r} is not supported; expected one of {list(allowed)}")


def check_unet_config(config: dict) -> dict:
    """A ``UNet2DModel`` ``config.json`` dict -> the full, checked dict with defaults filled in.

    Raises:
      ValueError: another model class, unknown keys, or options this port does not implement.
    """
    if not isinstance(config, dict):
        raise ValueError(f"UNet2DModel config must be a dict (config.json), got {type(config).__name__}")
    name = config.get("_class_name", "UNet2DModel")
    if name != "UNet2DModel":
        raise ValueError(f"only diffusers UNet2DModel checkpoints are supported, this config is a {name!r}")
    unknown = sorted(set(config) - set(DEFAULTS) - _IGNORED - set(EXTENSIONS))
    if unknown:
        raise ValueError(f"UNet2DModel config has keys this port does not know: {unknown}")
    c = {**DEFAULTS, **config}
    for key in ("down_block_types", "up_block_types", "block_out_channels"):
        c[key] = tuple(c[key])
    for key in EXTENSIONS:
        if c.get(key) is not None and (isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] < 1):
            raise ValueError(f"UNet2DModel config: {key} must be a positive integer or absent, got {c[key]!r}")
    if c.get("diffjax_time_proj_dim") is not None and c["time_embedding_type"] != "positional":
        raise ValueError("UNet2DModel config: diffjax_time_proj_dim applies to positional time embeddings only")
    for t in c["down_block_types"]:
        _choice("down_block_types entry", t, DOWN_BLOCKS)
    for t in c["up_block_types"]:
        _choice("up_block_types entry", t, UP_BLOCKS)
    n = len(c["block_out_channels"])
    if not (len(c["down_block_types"]) == len(c["up_block_types"]) == n):
        raise ValueError(f"UNet2DModel config: {n} block_out_channels need as many down and up blocks, got "
                         f"{len(c['down_block_types'])} and {len(c['up_block_types'])}")
    _choice("time_embedding_type", c["time_embedding_type"], ("positional", "fourier"))
    _choice("act_fn", c["act_fn"], ("silu", "swish"))
    _choice("mid_block_type", c["mid_block_type"], ("UNetMidBlock2D", None))
    _choice("resnet_time_scale_shift", c["resnet_time_scale_shift"], ("default", "scale_shift"))
    _choice("downsample_type", c["downsample_type"], ("conv", "resnet"))
    _choice("upsample_type", c["upsample_type"], ("conv", "resnet"))
    _choice("class_embed_type", c["class_embed_type"], (None, "timestep", "identity"))
    if c["norm_num_groups"] is None:
        raise ValueError("UNet2DModel config: norm_num_groups=None is not supported")
    for ch in c["block_out_channels"]:
        if ch % c["norm_num_groups"]:
            raise ValueError(f"UNet2DModel config: block_out_channels {c['block_out_channels']} must be multiples of "
                             f"norm_num_groups={c['norm_num_groups']}")
    return c


@dataclasses.dataclass(frozen=True)
class DiffusersUNetConfig:
    """A ``UNet2DModel`` as the network of an ordinary run (``model.architecture="diffusers_unet2d"``).

    Stored as the run's ``model_config.json`` by ``python -m diffjax.convert``.

    Attributes:
      diffusers_config: the UNet's ``config.json``, as a JSON string (hashable, stored as written).
      image_size: height = width the network was trained at (tiles of larger images).
      in_channels: channels of the noisy image ``x``.
      out_channels: channels of the prediction the run reads: the first ``out_channels`` of the
        network's outputs (a learned-variance checkpoint outputs twice as many).
      cond_channels: channels of a condition image concatenated to ``x`` (``in_channels`` of the
        UNet2DModel minus those of ``x``).
      num_classes: ``num_class_embeds`` of a class-conditional checkpoint, else 0.
    """

    diffusers_config: str
    image_size: int
    in_channels: int
    out_channels: int
    cond_channels: int = 0
    num_classes: int = 0

    def __post_init__(self):
        c = check_unet_config(json.loads(self.diffusers_config))
        if self.in_channels + self.cond_channels != c["in_channels"]:
            raise ValueError(f"in_channels {self.in_channels} + cond_channels {self.cond_channels} must equal the "
                             f"UNet2DModel's in_channels {c['in_channels']}")
        if not 1 <= self.out_channels <= c["out_channels"]:
            raise ValueError(f"out_channels must lie in [1, {c['out_channels']}], got {self.out_channels}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    @property
    def context_dim(self) -> int:
        """No cross-attention (read by the run's checks)."""
        return 0

    @property
    def unet(self) -> dict:
        """The checked ``config.json`` dict with defaults filled in."""
        return check_unet_config(json.loads(self.diffusers_config))


# -- primitive layers (PyTorch layouts, diffusers names) --------------------------
def _param(rngs: nnx.Rngs, shape, fan_in: int) -> nnx.Param:
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    return nnx.Param(jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound))


class Conv2d(nnx.Module):
    """``torch.nn.Conv2d``: weight ``(O, I, k, k)``, symmetric ``padding``, ``stride``."""

    def __init__(self, cin: int, cout: int, kernel: int, *, rngs: nnx.Rngs, stride: int = 1, padding: int = 0):
        self.weight = _param(rngs, (cout, cin, kernel, kernel), cin * kernel * kernel)
        self.bias = _param(rngs, (cout,), cin * kernel * kernel)
        self.stride, self.padding = stride, padding

    def __call__(self, x: Array) -> Array:
        p = self.padding
        # The kernel is handed to XLA in HWIO: with "OIHW" dimension numbers XLA:CPU canonicalises a lone
        # forward pass, but inside a while loop (every dj.sample scan) it kept the OIHW kernel and ran a
        # generic convolution loop instead of its Eigen kernel, 7x the CPU time per step (1.8 vs 12.6 CPU s
        # for 3 steps of ddpm-cifar10-32 at batch 4). The transpose of the weights costs far less than that.
        w = jnp.transpose(self.weight[...].astype(x.dtype), (2, 3, 1, 0))
        y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), [(p, p), (p, p)],
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + self.bias[...].astype(x.dtype)


class Linear(nnx.Module):
    """``torch.nn.Linear``: weight ``(out, in)``."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs):
        self.weight = _param(rngs, (cout, cin), cin)
        self.bias = _param(rngs, (cout,), cin)

    def __call__(self, x: Array) -> Array:
        return x @ self.weight[...].T.astype(x.dtype) + self.bias[...].astype(x.dtype)


class GroupNorm(nnx.Module):
    """``torch.nn.GroupNorm`` over the last (channel) axis; two-pass biased variance as PyTorch."""

    def __init__(self, groups: int, channels: int, eps: float):
        self.weight = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.groups, self.eps = groups, eps

    def __call__(self, x: Array) -> Array:
        shape = x.shape
        g = x.reshape(shape[0], -1, self.groups, shape[-1] // self.groups)
        mean = g.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 3), keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + self.eps)
        return g.reshape(shape) * self.weight[...] + self.bias[...]


class Embedding(nnx.Module):
    """``torch.nn.Embedding``: weight ``(num, dim)``."""

    def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(jax.random.normal(rngs.params(), (num, dim), jnp.float32))

    def __call__(self, ids: Array) -> Array:
        return self.weight[...][ids]


def timestep_embedding(t: Array, dim: int, *, flip_sin_to_cos: bool, shift: float, max_period: float = 10000.0):
    """diffusers' ``get_timestep_embedding``: ``[sin, cos]`` (``[cos, sin]`` when flipped) of ``t * freqs``."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - shift))
    args = t.astype(jnp.float32)[:, None] * freqs[None]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class GaussianFourierProjection(nnx.Module):
    """diffusers' Fourier features of ``log(sigma)`` (NCSN++): ``[sin, cos](2 pi log(sigma) W)``."""

    def __init__(self, size: int, scale: float, *, rngs: nnx.Rngs):
        self.weight = nnx.Param(scale * jax.random.normal(rngs.params(), (size,), jnp.float32))

    def __call__(self, t: Array) -> Array:
        proj = jnp.log(t.astype(jnp.float32))[:, None] * self.weight[...][None] * (2.0 * np.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class TimestepEmbedding(nnx.Module):
    def __init__(self, cin: int, dim: int, *, rngs: nnx.Rngs):
        self.linear_1 = Linear(cin, dim, rngs=rngs)
        self.linear_2 = Linear(dim, dim, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.linear_2(jax.nn.silu(self.linear_1(x)))


# -- resampling (FIR and plain) ----------------------------------------------------
_FIR = np.array([1.0, 3.0, 3.0, 1.0])


def _fir_kernel(gain: float) -> np.ndarray:
    k = np.outer(_FIR, _FIR)
    return k / k.sum() * gain


def _upfirdn(x: Array, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> Array:
    """diffusers' ``upfirdn2d_native`` for NHWC: zero-insert by ``up``, pad, correlate with the flipped kernel, subsample."""
    b, h, w, c = x.shape
    if up > 1:
        z = jnp.zeros((b, h, up, w, up, c), x.dtype).at[:, :, 0, :, 0, :].set(x)
        x = z.reshape(b, h * up, w * up, c)
    x = jnp.pad(x, ((0, 0), (pad[0], pad[1]), (pad[0], pad[1]), (0, 0)))
    k = jnp.asarray(np.flip(kernel, (0, 1)).copy(), x.dtype)
    kh, kw = k.shape
    w_ = jnp.broadcast_to(k[:, :, None, None], (kh, kw, 1, c))
    y = jax.lax.conv_general_dilated(x, w_, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=c)
    return y[:, ::down, ::down, :]


def fir_upsample(x: Array, factor: int = 2) -> Array:
    """``FirUpsample2D`` without a convolution (kernel (1,3,3,1), gain 1)."""
    k = _fir_kernel(factor**2)
    p = k.shape[0] - factor
    return _upfirdn(x, k, factor, 1, ((p + 1) // 2 + factor - 1, p // 2))


def fir_downsample(x: Array, factor: int = 2) -> Array:
    """``FirDownsample2D`` without a convolution (kernel (1,3,3,1), gain 1)."""
    k = _fir_kernel(1.0)
    p = k.shape[0] - factor
    return _upfirdn(x, k, 1, factor, ((p + 1) // 2, p // 2))


def upsample_nearest(x: Array) -> Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def avg_pool2(x: Array) -> Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class Downsample2D(nnx.Module):
    """Strided 3x3 convolution; ``padding=0`` pads only bottom/right by one, as diffusers does."""

    def __init__(self, channels: int, padding: int, *, rngs: nnx.Rngs):
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding, rngs=rngs)
        self.pad = padding

    def __call__(self, x: Array) -> Array:
        if self.pad == 0:
            x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return self.conv(x)


class Upsample2D(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        self.conv = Conv2d(channels, channels, 3, padding=1, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.conv(upsample_nearest(x))


# -- blocks --------------------------------------------------------------------------
class ResnetBlock2D(nnx.Module):
    """diffusers' ``ResnetBlock2D`` (``time_embedding_norm`` default / scale_shift; plain, up or down)."""

    def __init__(self, cin: int, cout: int, temb: int, *, groups: int, eps: float, scale_shift: bool,
                 output_scale_factor: float = 1.0, resample: str | None = None, fir: bool = False,
                 groups_out: int | None = None, use_in_shortcut: bool | None = None, rngs: nnx.Rngs):
        self.norm1 = GroupNorm(groups, cin, eps)
        self.conv1 = Conv2d(cin, cout, 3, padding=1, rngs=rngs)
        self.time_emb_proj = Linear(temb, 2 * cout if scale_shift else cout, rngs=rngs)
        self.norm2 = GroupNorm(groups if groups_out is None else groups_out, cout, eps)
        self.conv2 = Conv2d(cout, cout, 3, padding=1, rngs=rngs)
        if (cin != cout) if use_in_shortcut is None else use_in_shortcut:
            self.conv_shortcut = Conv2d(cin, cout, 1, rngs=rngs)
        else:
            self.conv_shortcut = nnx.data(None)
        self.scale_shift, self.output_scale_factor, self.resample, self.fir = scale_shift, output_scale_factor, resample, fir

    def _resample(self, x):
        if self.resample == "up":
            return fir_upsample(x) if self.fir else upsample_nearest(x)
        if self.resample == "down":
            return fir_downsample(x) if self.fir else avg_pool2(x)
        return x

    def __call__(self, x: Array, temb: Array) -> Array:
        h = jax.nn.silu(self.norm1(x))
        x, h = self._resample(x), self._resample(h)
        h = self.conv1(h)
        t = self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        if self.scale_shift:
            scale, shift = jnp.split(t, 2, axis=-1)
            h = self.norm2(h) * (1.0 + scale) + shift
        else:
            h = self.norm2(h + t)
        h = self.conv2(jax.nn.silu(h))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class Attention(nnx.Module):
    """diffusers' ``Attention`` as used by the UNet2D blocks: optional GroupNorm, multi-head, residual."""

    def __init__(self, channels: int, head_dim: int, *, groups: int | None, eps: float,
                 rescale_output_factor: float = 1.0, rngs: nnx.Rngs):
        if channels % head_dim:
            raise ValueError(f"attention over {channels} channels needs attention_head_dim dividing it, got {head_dim}")
        self.group_norm = nnx.data(GroupNorm(groups, channels, eps) if groups is not None else None)
        self.to_q = Linear(channels, channels, rngs=rngs)
        self.to_k = Linear(channels, channels, rngs=rngs)
        self.to_v = Linear(channels, channels, rngs=rngs)
        self.to_out = nnx.List([Linear(channels, channels, rngs=rngs)])
        self.heads, self.head_dim, self.rescale = channels // head_dim, head_dim, rescale_output_factor

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        h = self.group_norm(x) if self.group_norm is not None else x
        h = h.reshape(b, hh * ww, c)

        def heads(y):
            return y.reshape(b, hh * ww, self.heads, self.head_dim)

        q, k, v = heads(self.to_q(h)), heads(self.to_k(h)), heads(self.to_v(h))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
        w = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, hh * ww, c)
        out = self.to_out[0](out).reshape(b, hh, ww, c)
        return (out + x) / self.rescale


class DownBlock(nnx.Module):
    """``DownBlock2D`` / ``AttnDownBlock2D`` / ``SkipDownBlock2D`` / ``AttnSkipDownBlock2D``."""

    def __init__(self, kind: str, cin: int, cout: int, temb: int, layers: int, add_downsample: bool, c: dict,
                 head_dim: int, *, rngs: nnx.Rngs):
        g, eps, ss = c["norm_num_groups"], c["norm_eps"], c["resnet_time_scale_shift"] == "scale_shift"
        skip = kind.startswith("Skip") or kind.startswith("AttnSkip")
        self.skip = skip
        rgroups = min(cout // 4, 32) if skip else g  # the skip blocks pick their own group count
        self.resnets = nnx.List([
            ResnetBlock2D(cin if i == 0 else cout, cout, temb, groups=min(cin // 4, 32) if skip and i == 0 else rgroups,
                          groups_out=rgroups if skip else None, eps=eps, scale_shift=ss,
                          output_scale_factor=math.sqrt(2.0) if skip else 1.0, rngs=rngs)
            for i in range(layers)])
        if kind.startswith("Attn"):
            self.attentions = nnx.List([
                Attention(cout, head_dim, groups=32 if skip else g, eps=eps,
                          rescale_output_factor=math.sqrt(2.0) if skip else 1.0, rngs=rngs)
                for _ in range(layers)])
        else:
            self.attentions = nnx.data(None)
        self.downsamplers = nnx.data(None)
        self.resnet_down = nnx.data(None)
        if skip:
            if add_downsample:
                self.resnet_down = ResnetBlock2D(cout, cout, temb, groups=min(cout // 4, 32), eps=eps, scale_shift=ss,
                                                 output_scale_factor=math.sqrt(2.0), resample="down", fir=True, use_in_shortcut=True,
                                                 rngs=rngs)
                self.skip_conv = Conv2d(3, cout, 1, rngs=rngs)
            else:
                self.skip_conv = nnx.data(None)
        elif add_downsample:
            # DownBlock2D ignores downsample_type; ResnetDownsampleBlock2D (ADM) always resamples by a resnet.
            if (c["downsample_type"] == "resnet" and kind == "AttnDownBlock2D") or kind == "ResnetDownsampleBlock2D":
                self.downsamplers = nnx.List([ResnetBlock2D(cout, cout, temb, groups=g, eps=eps, scale_shift=ss,
                                                            resample="down", rngs=rngs)])
            else:
                self.downsamplers = nnx.List([Downsample2D(cout, c["downsample_padding"], rngs=rngs)])

    def __call__(self, h: Array, temb: Array, skip_sample: Array | None = None, keep=None):
        outs = []
        for i, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.attentions is not None:
                h = self.attentions[i](h)
            outs.append(h)
            if keep is not None:
                keep(h)
        if self.skip:
            if self.resnet_down is not None:
                h = self.resnet_down(h, temb)
                skip_sample = fir_downsample(skip_sample)
                h = self.skip_conv(skip_sample) + h
                outs.append(h)
            return h, outs, skip_sample
        if self.downsamplers is not None:
            d = self.downsamplers[0]
            h = d(h, temb) if isinstance(d, ResnetBlock2D) else d(h)
            outs.append(h)
        return h, outs, skip_sample


class UpBlock(nnx.Module):
    """``UpBlock2D`` / ``AttnUpBlock2D`` / ``SkipUpBlock2D`` / ``AttnSkipUpBlock2D``."""

    def __init__(self, kind: str, cin: int, cout: int, prev: int, temb: int, layers: int, add_upsample: bool,
                 c: dict, head_dim: int, *, rngs: nnx.Rngs):
        g, eps, ss = c["norm_num_groups"], c["norm_eps"], c["resnet_time_scale_shift"] == "scale_shift"
        skip = kind.startswith("Skip") or kind.startswith("AttnSkip")
        self.skip, self.attn_kind = skip, kind.startswith("Attn")
        resnets = []
        for i in range(layers):
            res_skip = cin if i == layers - 1 else cout
            rin = prev if i == 0 else cout
            ch = rin + res_skip
            # AttnSkipUpBlock2D computes min(rin + res_skip // 4, 32) (operator precedence), SkipUpBlock2D
            # min((rin + res_skip) // 4, 32); both are reproduced.
            skip_groups = min(rin + res_skip // 4, 32) if kind == "AttnSkipUpBlock2D" else min(ch // 4, 32)
            resnets.append(ResnetBlock2D(ch, cout, temb, groups=skip_groups if skip else g,
                                         groups_out=min(cout // 4, 32) if skip else None, eps=eps, scale_shift=ss,
                                         output_scale_factor=math.sqrt(2.0) if skip else 1.0, rngs=rngs))
        self.resnets = nnx.List(resnets)
        self.attentions = nnx.data(None)
        self.upsamplers = nnx.data(None)
        if skip:
            if self.attn_kind:
                self.attentions = nnx.List([Attention(cout, head_dim, groups=32, eps=eps,
                                                      rescale_output_factor=math.sqrt(2.0), rngs=rngs)])
            if add_upsample:
                self.resnet_up = ResnetBlock2D(cout, cout, temb, groups=min(cout // 4, 32),
                                               groups_out=min(cout // 4, 32), eps=eps, scale_shift=ss,
                                               output_scale_factor=math.sqrt(2.0), resample="up", fir=True,
                                               use_in_shortcut=True, rngs=rngs)
            else:
                self.resnet_up = nnx.data(None)
            if add_upsample:
                self.skip_norm = GroupNorm(min(cout // 4, 32), cout, eps)
                self.skip_conv = Conv2d(cout, 3, 3, padding=1, rngs=rngs)
        else:
            if self.attn_kind:
                self.attentions = nnx.List([Attention(cout, head_dim, groups=g, eps=eps, rngs=rngs)
                                            for _ in range(layers)])
            if add_upsample:
                # UpBlock2D ignores upsample_type; ResnetUpsampleBlock2D (ADM) always resamples by a resnet.
                if (c["upsample_type"] == "resnet" and kind == "AttnUpBlock2D") or kind == "ResnetUpsampleBlock2D":
                    self.upsamplers = nnx.List([ResnetBlock2D(cout, cout, temb, groups=g, eps=eps, scale_shift=ss,
                                                              resample="up", rngs=rngs)])
                else:
                    self.upsamplers = nnx.List([Upsample2D(cout, rngs=rngs)])

    def __call__(self, h: Array, res: list, temb: Array, skip_sample: Array | None = None, keep=None):
        res = list(res)
        for i, resnet in enumerate(self.resnets):
            h = resnet(jnp.concatenate([h, res.pop()], axis=-1), temb)
            if self.attentions is not None and not self.skip:
                h = self.attentions[i](h)
            if keep is not None:
                keep(h)
        if self.skip:
            if self.attentions is not None:
                h = self.attentions[0](h)
            if skip_sample is not None:
                skip_sample = fir_upsample(skip_sample)
            else:
                skip_sample = 0.0
            if self.resnet_up is not None:
                s = self.skip_conv(jax.nn.silu(self.skip_norm(h)))
                skip_sample = skip_sample + s
                h = self.resnet_up(h, temb)
            return h, skip_sample
        if self.upsamplers is not None:
            u = self.upsamplers[0]
            h = u(h, temb) if isinstance(u, ResnetBlock2D) else u(h)
        return h, None


class MidBlock(nnx.Module):
    """``UNetMidBlock2D``: resnet, then (attention, resnet) once."""

    def __init__(self, ch: int, temb: int, c: dict, head_dim: int, *, rngs: nnx.Rngs):
        g, eps, ss = c["norm_num_groups"], c["norm_eps"], c["resnet_time_scale_shift"] == "scale_shift"
        scale = float(c["mid_block_scale_factor"])
        attn_groups = c["attn_norm_num_groups"]
        if attn_groups is None:
            attn_groups = g if not ss else None
        self.resnets = nnx.List([ResnetBlock2D(ch, ch, temb, groups=g, eps=eps, scale_shift=ss,
                                               output_scale_factor=scale, rngs=rngs) for _ in range(2)])
        if c["add_attention"]:
            self.attentions = nnx.List([Attention(ch, head_dim, groups=attn_groups, eps=eps,
                                                  rescale_output_factor=scale, rngs=rngs)])
        else:
            self.attentions = nnx.data(None)

    def __call__(self, h: Array, temb: Array) -> Array:
        h = self.resnets[0](h, temb)
        if self.attentions is not None:
            h = self.attentions[0](h)
        return self.resnets[1](h, temb)


class DiffusersUNet2D(nnx.Module):
    """diffusers' ``UNet2DModel`` (NHWC): ``model(x, timesteps, labels=None) -> prediction``.

    Args:
      config: a ``UNet2DModel`` ``config.json`` dict (checked by :func:`check_unet_config`), or a
        :class:`DiffusersUNetConfig` (the network of a run: it also slices the prediction
        channels and takes a condition image as ``cond``).
      rngs: initialises the parameters (overwritten when a checkpoint is loaded).
    """

    def __init__(self, config: dict | DiffusersUNetConfig, *, rngs: nnx.Rngs):
        self.config = config if isinstance(config, DiffusersUNetConfig) else None
        c = check_unet_config(config.unet if self.config is not None else config)
        self.config_dict = dict(c)
        boc, temb = c["block_out_channels"], c["time_embedding_dim"] or c["block_out_channels"][0] * 4
        self.conv_in = Conv2d(c["in_channels"], boc[0], 3, padding=1, rngs=rngs)
        if c["time_embedding_type"] == "fourier":
            self.time_proj = GaussianFourierProjection(boc[0], 16.0, rngs=rngs)
            tin = 2 * boc[0]
        else:
            self.time_proj = nnx.data(None)
            tin = c.get("diffjax_time_proj_dim") or boc[0]
        self.time_embedding = TimestepEmbedding(tin, temb, rngs=rngs)
        if c["class_embed_type"] is None and c["num_class_embeds"] is not None:
            self.class_embedding = Embedding(int(c["num_class_embeds"]), temb, rngs=rngs)
        elif c["class_embed_type"] == "timestep":
            self.class_embedding = TimestepEmbedding(tin, temb, rngs=rngs)
        else:
            self.class_embedding = nnx.data(None)

        def head(ch):
            heads = c.get("diffjax_attention_heads")
            if heads is not None:  # ADM's num_heads: the head count is fixed, the width follows the layer
                if ch % heads:
                    raise ValueError(f"diffjax_attention_heads={heads} does not divide an attention layer of {ch} channels")
                return ch // heads
            return c["attention_head_dim"] if c["attention_head_dim"] is not None else ch

        down, out = [], boc[0]
        for i, kind in enumerate(c["down_block_types"]):
            cin, out = out, boc[i]
            down.append(DownBlock(kind, cin, out, temb, c["layers_per_block"], i < len(boc) - 1, c, head(out),
                                  rngs=rngs))
        self.down_blocks = nnx.List(down)
        self.mid_block = nnx.data(MidBlock(boc[-1], temb, c, head(boc[-1]), rngs=rngs) if c["mid_block_type"] else None)
        rev, up = list(reversed(boc)), []
        out = rev[0]
        for i, kind in enumerate(c["up_block_types"]):
            prev, out = out, rev[i]
            cin = rev[min(i + 1, len(boc) - 1)]
            up.append(UpBlock(kind, cin, out, prev, temb, c["layers_per_block"] + 1, i < len(boc) - 1, c, head(out),
                              rngs=rngs))
        self.up_blocks = nnx.List(up)
        self.conv_norm_out = GroupNorm(c["norm_num_groups"], boc[0], c["norm_eps"])
        self.conv_out = Conv2d(boc[0], c["out_channels"], 3, padding=1, rngs=rngs)

    def _time_features(self, t: Array) -> Array:
        c = self.config_dict
        if self.time_proj is not None:
            return self.time_proj(t)
        return timestep_embedding(t, c.get("diffjax_time_proj_dim") or c["block_out_channels"][0], flip_sin_to_cos=c["flip_sin_to_cos"],
                                  shift=c["freq_shift"])

    def __call__(self, x: Array, timesteps: Array, cond: Array | None = None, labels: Array | None = None,
                 dropout_key=None, aug_level: Array | None = None, context: Array | None = None,
                 context_mask: Array | None = None) -> Array:
        """The prediction; the keywords of :class:`diffjax.nn.UNet` a run passes are accepted.

        Args:
          x: ``(B, H, W, C)`` noisy images.
          timesteps: scalar or ``(B,)``: the diffusers timestep.
          cond: ``(B, H, W, C_cond)`` concatenated to ``x`` (a UNet2DModel whose ``in_channels``
            exceed the image's, e.g. LDM super-resolution), or ``None``.
          labels: ``(B,)`` ints (class-conditional checkpoints only).
          dropout_key: ignored (inference only: a converted network does not train).
          aug_level, context, context_mask: must be ``None`` (a UNet2DModel has no such inputs).

        Returns:
          ``(B, H, W, C_out)``: every output channel for a bare config dict; the first
          ``DiffusersUNetConfig.out_channels`` for a run's network.
        """
        return self._forward(x, timesteps, cond, labels, aug_level, context, context_mask, None)

    def activation_names(self) -> tuple[str, ...]:
        """Names of the blocks :meth:`activations` returns, as :meth:`diffjax.nn.UNet.activation_names` names them.

        ``down_{i}`` is encoder resnet ``i`` (with its attention), ``mid`` the middle
        block, ``up_{i}`` decoder resnet ``i`` (``i = 0`` nearest the middle).
        """
        c = self.config_dict
        levels, layers = len(c["block_out_channels"]), c["layers_per_block"]
        mid = ("mid",) if self.mid_block is not None else ()
        return (*(f"down_{i}" for i in range(levels * layers)), *mid,
                *(f"up_{i}" for i in range(levels * (layers + 1))))

    def activations(self, x: Array, c: Array, cond: Array | None = None, labels: Array | None = None,
                    aug_level: Array | None = None, context: Array | None = None,
                    context_mask: Array | None = None) -> dict[str, Array]:
        """``{name: (B, h, w, channels)}`` for every name of :meth:`activation_names` (per-pixel features).

        Each is its block's output at its level's resolution, before resampling, as
        :meth:`diffjax.nn.UNet.activations` gives them (the segmentation features read either).
        """
        acts: dict[str, Array] = {}
        self._forward(x, c, cond, labels, aug_level, context, context_mask, acts)
        return acts

    def _check_run_inputs(self, x, cond, aug_level, context, context_mask):
        for name, value in (("aug_level", aug_level), ("context", context), ("context_mask", context_mask)):
            if value is not None:
                raise ValueError(f"{name} was given, but a diffusers UNet2DModel takes no {name}; pass None")
        want = self.config_dict["in_channels"]
        got = x.shape[-1] + (0 if cond is None else cond.shape[-1])
        if got != want:
            raise ValueError(f"the UNet2DModel takes {want} input channels; x has {x.shape[-1]}"
                             + (f" and cond {cond.shape[-1]}" if cond is not None else "")
                             + ("" if cond is not None or self.config is None or not self.config.cond_channels
                                else f": pass cond with {self.config.cond_channels} channels"))

    def _forward(self, x, timesteps, cond, labels, aug_level, context, context_mask, acts):
        """The network; block outputs are stored in ``acts`` when it is a dict."""
        self._check_run_inputs(x, cond, aug_level, context, context_mask)
        if cond is not None:
            x = jnp.concatenate([x, cond.astype(x.dtype)], axis=-1)
        keeper = None
        if acts is not None:
            def keeper(prefix):
                def keep(h):
                    acts[f"{prefix}_{sum(k.startswith(prefix + '_') for k in acts)}"] = h
                return keep
        c = self.config_dict
        t = jnp.broadcast_to(jnp.asarray(timesteps), x.shape[:1])
        if c["center_input_sample"]:
            x = 2.0 * x - 1.0
        emb = self.time_embedding(self._time_features(t).astype(x.dtype))
        if self.class_embedding is not None:
            if labels is None:
                raise ValueError("this UNet2DModel is class-conditional: pass labels=")
            if c["class_embed_type"] == "timestep":
                emb = emb + self.class_embedding(self._time_features(jnp.asarray(labels)).astype(x.dtype))
            else:
                emb = emb + self.class_embedding(jnp.asarray(labels))
        elif c["class_embed_type"] == "identity":
            if labels is None:
                raise ValueError("this UNet2DModel adds a class embedding (identity): pass labels=")
            emb = emb + jnp.asarray(labels, x.dtype)
        elif labels is not None:
            raise ValueError("this UNet2DModel has no class embedding; labels= must be None")
        skip = x
        h = self.conv_in(x)
        res = [h]
        for block in self.down_blocks:
            h, outs, skip = block(h, emb, skip, keep=keeper and keeper("down"))
            res.extend(outs)
        if self.mid_block is not None:
            h = self.mid_block(h, emb)
            if acts is not None:
                acts["mid"] = h
        skip = None
        for block in self.up_blocks:
            n = len(block.resnets)
            h, skip = block(h, res[-n:], emb, skip, keep=keeper and keeper("up"))
            res = res[:-n]
        h = self.conv_out(jax.nn.silu(self.conv_norm_out(h)))
        if skip is not None:
            h = h + skip
        if c["time_embedding_type"] == "fourier":
            h = h / t.astype(h.dtype)[:, None, None, None]
        return h if self.config is None else h[..., :self.config.out_channels]
