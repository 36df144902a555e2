"""diffusers' ``VQModel`` and ``AutoencoderKL`` in Flax NNX (NHWC), loadable from their checkpoints.

Parameters keep PyTorch layouts (conv ``(O, I, k, k)``, linear ``(out, in)``) and
sit at the paths of diffusers' state-dict keys (``encoder.down_blocks.0.resnets.1
.conv1.weight``), so a ``diffusion_pytorch_model.safetensors`` loads by name
(:func:`vae_from_diffusers`). Only the blocks these first stages are built of
are covered: ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``, the attention mid
block, ``norm_type="group"``. Other configs (MoVQ's spatial norm, attention
encoder blocks) are refused by name.

``encode`` / ``decode`` follow the models' own methods (inputs in [-1, 1]):
``VQModel.decode`` snaps latents to the nearest codebook vector first unless
``force_not_quantize`` (as ``VQModel.decode`` does, and so the LDM pipelines,
which never pass it); ``AutoencoderKL.encode`` returns the posterior mean and
log-variance. The pipelines' latent scale lives in :meth:`encode_latents` /
:meth:`decode_latents` (``z * scaling_factor`` and back; the super-resolution
LDM pipeline calls ``decode`` on unscaled latents).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.typing import Array, PRNGKey

__all__ = ["VQModel", "AutoencoderKL", "check_vae_config", "vae_from_diffusers", "load_vae_weights",
           "vae_from_pretrained"]

_EPS = 1e-6  # diffusers' Encoder / Decoder use eps 1e-6 in every norm
_LOGVAR_RANGE = (-30.0, 20.0)  # DiagonalGaussianDistribution clamps the log-variance


# -- primitive layers (PyTorch layouts, diffusers names) --------------------------
class Conv2d(nnx.Module):
    """``torch.nn.Conv2d`` on NHWC inputs; ``padding`` is ``((top, bottom), (left, right))``."""

    def __init__(self, cin: int, cout: int, kernel: int, *, stride: int = 1, padding=None):
        self.weight = nnx.Param(jnp.zeros((cout, cin, kernel, kernel), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        pad = kernel // 2
        self.stride, self.padding = stride, padding if padding is not None else ((pad, pad), (pad, pad))

    def __call__(self, x: Array) -> Array:
        # HWIO, not the stored OIHW: inside a loop (lax.map / scan over decodes) XLA:CPU keeps an OIHW kernel and
        # runs its generic convolution, 7x slower (see diffusers_unet.Conv2d); names and shapes stay torch's.
        w = jnp.transpose(self.weight[...].astype(x.dtype), (2, 3, 1, 0))
        y = jax.lax.conv_general_dilated(x, w, (self.stride, self.stride), self.padding,
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                         precision=jax.lax.Precision.HIGHEST)
        return y + self.bias[...].astype(x.dtype)


class Linear(nnx.Module):
    """``torch.nn.Linear``: weight ``(out, in)``."""

    def __init__(self, cin: int, cout: int):
        self.weight = nnx.Param(jnp.zeros((cout, cin), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        return jnp.matmul(x, self.weight[...].T, precision=jax.lax.Precision.HIGHEST) + self.bias[...]


class GroupNorm(nnx.Module):
    """``torch.nn.GroupNorm`` over the channel axis (two-pass biased variance, as PyTorch)."""

    def __init__(self, groups: int, channels: int):
        self.weight = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))
        self.groups = groups

    def __call__(self, x: Array) -> Array:
        shape = x.shape
        g = x.reshape(shape[0], -1, self.groups, shape[-1] // self.groups)
        mean = g.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 3), keepdims=True)
        return ((g - mean) * jax.lax.rsqrt(var + _EPS)).reshape(shape) * self.weight[...] + self.bias[...]


class ResnetBlock(nnx.Module):
    """``ResnetBlock2D`` without a time embedding (``temb_channels=None``)."""

    def __init__(self, cin: int, cout: int, groups: int):
        self.norm1 = GroupNorm(groups, cin)
        self.conv1 = Conv2d(cin, cout, 3)
        self.norm2 = GroupNorm(groups, cout)
        self.conv2 = Conv2d(cout, cout, 3)
        self.conv_shortcut = nnx.data(Conv2d(cin, cout, 1) if cin != cout else None)

    def __call__(self, x: Array) -> Array:
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class SelfAttention(nnx.Module):
    """The mid block's ``Attention``: GroupNorm, one head as wide as the block, residual."""

    def __init__(self, channels: int, groups: int):
        self.group_norm = GroupNorm(groups, channels)
        self.to_q = Linear(channels, channels)
        self.to_k = Linear(channels, channels)
        self.to_v = Linear(channels, channels)
        self.to_out = nnx.List([Linear(channels, channels)])

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        h = self.group_norm(x).reshape(b, hh * ww, c)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)
        logits = jnp.einsum("bqc,bkc->bqk", q, k, precision=jax.lax.Precision.HIGHEST) / math.sqrt(c)
        w = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        out = jnp.einsum("bqk,bkc->bqc", w, v, precision=jax.lax.Precision.HIGHEST)
        return self.to_out[0](out).reshape(b, hh, ww, c) + x


class MidBlock(nnx.Module):
    """``UNetMidBlock2D`` without a time embedding: resnet, (attention), resnet."""

    def __init__(self, channels: int, groups: int, attention: bool):
        self.resnets = nnx.List([ResnetBlock(channels, channels, groups) for _ in range(2)])
        self.attentions = nnx.data(nnx.List([SelfAttention(channels, groups)]) if attention else None)

    def __call__(self, x: Array) -> Array:
        x = self.resnets[0](x)
        if self.attentions is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class _Resample(nnx.Module):
    """``Downsample2D(padding=0)`` (zero pad right/bottom, stride-2 conv) or ``Upsample2D`` (nearest, conv)."""

    def __init__(self, channels: int, up: bool):
        self.conv = Conv2d(channels, channels, 3, stride=1 if up else 2, padding=None if up else ((0, 1), (0, 1)))
        self.up = up

    def __call__(self, x: Array) -> Array:
        if self.up:
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class CoderBlock(nnx.Module):
    """``DownEncoderBlock2D`` (``downsamplers``) or ``UpDecoderBlock2D`` (``upsamplers``)."""

    def __init__(self, cin: int, cout: int, layers: int, groups: int, *, up: bool, resample: bool):
        self.resnets = nnx.List([ResnetBlock(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        sampler = nnx.List([_Resample(cout, up)]) if resample else None
        self.upsamplers = nnx.data(sampler if up else None)
        self.downsamplers = nnx.data(None if up else sampler)

    def __call__(self, x: Array) -> Array:
        for resnet in self.resnets:
            x = resnet(x)
        for sampler in (self.upsamplers or self.downsamplers or []):
            x = sampler(x)
        return x


class Encoder(nnx.Module):
    """diffusers' ``Encoder`` (``double_z`` doubles the output channels: mean and log-variance)."""

    def __init__(self, c: dict, double_z: bool):
        chans, g = c["block_out_channels"], c["norm_num_groups"]
        self.conv_in = Conv2d(c["in_channels"], chans[0], 3)
        self.down_blocks = nnx.List([
            CoderBlock(chans[max(i - 1, 0)], chans[i], c["layers_per_block"], g, up=False,
                       resample=i < len(chans) - 1) for i in range(len(chans))])
        self.mid_block = MidBlock(chans[-1], g, c["mid_block_add_attention"])
        self.conv_norm_out = GroupNorm(g, chans[-1])
        self.conv_out = Conv2d(chans[-1], c["latent_channels"] * (2 if double_z else 1), 3)

    def __call__(self, x: Array) -> Array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        x = self.mid_block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


class Decoder(nnx.Module):
    """diffusers' ``Decoder`` with ``norm_type="group"``."""

    def __init__(self, c: dict):
        chans, g = list(reversed(c["block_out_channels"])), c["norm_num_groups"]
        self.conv_in = Conv2d(c["latent_channels"], chans[0], 3)
        self.mid_block = MidBlock(chans[0], g, c["mid_block_add_attention"])
        self.up_blocks = nnx.List([
            CoderBlock(chans[max(i - 1, 0)], chans[i], c["layers_per_block"] + 1, g, up=True,
                       resample=i < len(chans) - 1) for i in range(len(chans))])
        self.conv_norm_out = GroupNorm(g, chans[-1])
        self.conv_out = Conv2d(chans[-1], c["out_channels"], 3)

    def __call__(self, z: Array) -> Array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(jax.nn.silu(self.conv_norm_out(x)))


# -- config -------------------------------------------------------------------------
_COMMON = {"in_channels": 3, "out_channels": 3, "down_block_types": ("DownEncoderBlock2D",),
           "up_block_types": ("UpDecoderBlock2D",), "block_out_channels": (64,), "layers_per_block": 1,
           "act_fn": "silu", "norm_num_groups": 32, "sample_size": 32, "scaling_factor": 0.18215,
           "mid_block_add_attention": True, "force_upcast": False}
_DEFAULTS = {
    "VQModel": {**_COMMON, "latent_channels": 3, "num_vq_embeddings": 256, "vq_embed_dim": None,
                "norm_type": "group", "lookup_from_codebook": False},
    "AutoencoderKL": {**_COMMON, "latent_channels": 4, "shift_factor": None, "latents_mean": None,
                      "latents_std": None, "use_quant_conv": True, "use_post_quant_conv": True},
}


def check_vae_config(config: dict) -> dict:
    """A diffusers ``VQModel`` / ``AutoencoderKL`` ``config.json`` dict, checked and with defaults filled.

    Args:
      config: the dict; ``_class_name`` says which model (keys starting with
        ``_`` are metadata and kept).

    Returns:
      The completed config (a new dict).

    Raises:
      ValueError: an unknown class, an unknown key, or a setting this module
        does not implement (named).
    """
    name = config.get("_class_name")
    if name not in _DEFAULTS:
        raise ValueError(f"_class_name must be one of {sorted(_DEFAULTS)}, got {name!r}")
    unknown = sorted(k for k in config if not k.startswith("_") and k not in _DEFAULTS[name])
    if unknown:
        raise ValueError(f"{name} config has keys this loader does not know: {unknown}")
    c = {**_DEFAULTS[name], **config}
    n = len(c["block_out_channels"])
    down, up = list(c["down_block_types"]), list(c["up_block_types"])
    if down != ["DownEncoderBlock2D"] * n or up != ["UpDecoderBlock2D"] * n:
        raise ValueError(f"{name}: only DownEncoderBlock2D / UpDecoderBlock2D blocks, one per block_out_channels "
                         f"entry ({n}), are implemented; got {c['down_block_types']} / {c['up_block_types']}")
    if c["act_fn"] != "silu":
        raise ValueError(f"{name}: act_fn must be 'silu', got {c['act_fn']!r}")
    if c.get("norm_type", "group") != "group":
        raise ValueError(f"{name}: norm_type {c['norm_type']!r} (MoVQ's spatial norm) is not implemented")
    if c.get("lookup_from_codebook"):
        raise ValueError(f"{name}: lookup_from_codebook (latents given as codebook indices) is not implemented")
    if c.get("latents_mean") is not None or c.get("latents_std") is not None:
        raise ValueError(f"{name}: per-channel latents_mean / latents_std scaling is not implemented")
    if any(ch % c["norm_num_groups"] for ch in c["block_out_channels"]):
        raise ValueError(f"{name}: block_out_channels {c['block_out_channels']} must be multiples of "
                         f"norm_num_groups={c['norm_num_groups']}")
    c["block_out_channels"] = [int(ch) for ch in c["block_out_channels"]]
    return c


class _FirstStage(nnx.Module):
    """What both models share: the pipelines' latent scale."""

    config: dict

    @property
    def factor(self) -> int:
        """Downsampling factor ``2 ** (len(block_out_channels) - 1)``."""
        return 2 ** (len(self.config["block_out_channels"]) - 1)

    def _shift(self) -> float:
        return self.config.get("shift_factor") or 0.0

    def encode_latents(self, images: Array, key: PRNGKey | None = None) -> Array:
        """Images in [-1, 1] -> latents as the pipelines feed the denoiser: ``(z - shift) * scaling_factor``.

        ``z`` is the quantiser's input for ``VQModel``; for ``AutoencoderKL`` a
        posterior sample when ``key`` is given, else its mean.
        """
        return (self._encode_z(images, key) - self._shift()) * self.config["scaling_factor"]

    def decode_latents(self, latents: Array) -> Array:
        """Inverse of :meth:`encode_latents`: ``decode(latents / scaling_factor + shift)``."""
        return self.decode(latents / self.config["scaling_factor"] + self._shift())


class Embedding(nnx.Module):
    """``torch.nn.Embedding``: weight ``(num, dim)``."""

    def __init__(self, num: int, dim: int):
        self.weight = nnx.Param(jnp.zeros((num, dim), jnp.float32))


class VectorQuantizer(nnx.Module):
    """``VectorQuantizer``'s parameters: the codebook ``embedding.weight``."""

    def __init__(self, num: int, dim: int):
        self.embedding = Embedding(num, dim)


class VQModel(_FirstStage):
    """diffusers' ``VQModel`` (NHWC): ``encode`` -> pre-quantisation latents, ``decode`` quantises them.

    Args:
      config: a ``VQModel`` ``config.json`` dict (see :func:`check_vae_config`).
    """

    def __init__(self, config: dict):
        c = check_vae_config({"_class_name": "VQModel", **config})
        self.config = c
        dim = c["vq_embed_dim"] or c["latent_channels"]
        self.encoder = Encoder(c, double_z=False)
        self.quant_conv = Conv2d(c["latent_channels"], dim, 1)
        self.quantize = VectorQuantizer(c["num_vq_embeddings"], dim)
        self.post_quant_conv = Conv2d(dim, c["latent_channels"], 1)
        self.decoder = Decoder(c)

    def encode(self, images: Array) -> Array:
        """``(B, H, W, C)`` images in [-1, 1] -> ``(B, H/f, W/f, vq_embed_dim)`` latents (not quantised)."""
        return self.quant_conv(self.encoder(images))

    def _encode_z(self, images: Array, key: PRNGKey | None = None) -> Array:
        del key  # a VQ encoder is deterministic
        return self.encode(images)

    def quantize_indices(self, latents: Array) -> Array:
        """Index of the nearest codebook vector (Euclidean) of every latent pixel, ``(B, h, w)``."""
        book = self.quantize.embedding.weight[...]
        flat = latents.reshape(-1, latents.shape[-1])
        # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; the |z|^2 term does not change the argmin
        d = jnp.sum(book**2, axis=1)[None] - 2.0 * jnp.matmul(flat, book.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.argmin(d, axis=1).reshape(latents.shape[:-1])

    def quantize_latents(self, latents: Array) -> Array:
        """Each latent pixel replaced by its nearest codebook vector."""
        return self.quantize.embedding.weight[...][self.quantize_indices(latents)]

    def decode(self, latents: Array, force_not_quantize: bool = False) -> Array:
        """Latents -> images in about [-1, 1]; quantised first unless ``force_not_quantize``."""
        if not force_not_quantize:
            latents = self.quantize_latents(latents)
        return self.decoder(self.post_quant_conv(latents))


class AutoencoderKL(_FirstStage):
    """diffusers' ``AutoencoderKL`` (NHWC): ``encode`` -> posterior (mean, log-variance), ``decode``.

    Args:
      config: an ``AutoencoderKL`` ``config.json`` dict (see :func:`check_vae_config`).
    """

    def __init__(self, config: dict):
        c = check_vae_config({"_class_name": "AutoencoderKL", **config})
        self.config = c
        z = c["latent_channels"]
        self.encoder = Encoder(c, double_z=True)
        self.quant_conv = nnx.data(Conv2d(2 * z, 2 * z, 1) if c["use_quant_conv"] else None)
        self.post_quant_conv = nnx.data(Conv2d(z, z, 1) if c["use_post_quant_conv"] else None)
        self.decoder = Decoder(c)

    def encode(self, images: Array) -> tuple[Array, Array]:
        """``(B, H, W, C)`` images in [-1, 1] -> posterior ``(mean, logvar)``, each ``(B, H/f, W/f, z)``.

        The log-variance is clipped to [-30, 20], as diffusers' posterior does.
        """
        h = self.encoder(images)
        if self.quant_conv is not None:
            h = self.quant_conv(h)
        mean, logvar = jnp.split(h, 2, axis=-1)
        return mean, jnp.clip(logvar, *_LOGVAR_RANGE)

    def _encode_z(self, images: Array, key: PRNGKey | None = None) -> Array:
        mean, logvar = self.encode(images)
        if key is None:
            return mean
        return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)

    def decode(self, latents: Array) -> Array:
        """Latents ``(B, h, w, z)`` -> images in about [-1, 1]."""
        if self.post_quant_conv is not None:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


# -- loading ------------------------------------------------------------------------
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _modern_key(key: str) -> str:
    """Older diffusers checkpoints name the mid-block attention ``query/key/value/proj_attn``."""
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION and "attentions" in parts:
        return ".".join(parts[:-2] + [_LEGACY_ATTENTION[parts[-2]], parts[-1]])
    return key


def load_vae_weights(model: VQModel | AutoencoderKL, state: dict[str, np.ndarray]):
    """Copy a diffusers state dict into ``model`` in place (and return it).

    Legacy attention names are renamed and 1x1-convolution attention weights
    squeezed to linear ones (as diffusers does when loading old checkpoints).

    Raises:
      ValueError: listing missing keys, unexpected keys and shape mismatches.
    """
    params = {".".join(str(p) for p in path): var
              for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    given = {}
    for key, value in state.items():
        key, value = _modern_key(key), np.asarray(value)
        target = params.get(key)
        if target is not None and value.ndim == 4 and target[...].ndim == 2 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        given[key] = value
    missing, unexpected = sorted(set(params) - set(given)), sorted(set(given) - set(params))
    mismatched = sorted(f"{k}: checkpoint {given[k].shape}, model {tuple(params[k][...].shape)}"
                        for k in set(given) & set(params) if tuple(given[k].shape) != tuple(params[k][...].shape))
    if missing or unexpected or mismatched:
        lines = [f"{title} ({len(items)}): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else "")
                 for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                      ("shape mismatches", mismatched)) if items]
        raise ValueError(f"the checkpoint does not fit the {type(model).__name__} its config describes:\n  "
                         + "\n  ".join(lines))
    for key, var in params.items():
        var[...] = jnp.asarray(given[key], jnp.float32)
    return model


def vae_from_diffusers(config: dict, state: dict[str, np.ndarray]) -> VQModel | AutoencoderKL:
    """Build the NNX ``VQModel`` / ``AutoencoderKL`` of a diffusers config dict and load a state dict.

    Args:
      config: the model's ``config.json`` as a dict (``_class_name`` ``VQModel``
        or ``AutoencoderKL``).
      state: ``{diffusers_key: array}`` in PyTorch layouts (e.g. read from
        ``diffusion_pytorch_model.safetensors``).

    Returns:
      The model; ``model.decode(z)`` equals diffusers' ``decode(z).sample`` in NHWC.

    Raises:
      ValueError: an unsupported config, or a state dict that does not fit it.
    """
    cls = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}.get(config.get("_class_name"))
    if cls is None:
        raise ValueError(f"_class_name must be 'VQModel' or 'AutoencoderKL', got {config.get('_class_name')!r}")
    return load_vae_weights(cls({k: v for k, v in config.items() if k != "_class_name"}), state)


def vae_from_pretrained(folder: str) -> VQModel | AutoencoderKL:
    """:func:`vae_from_diffusers` on a model folder (``config.json``, ``diffusion_pytorch_model.safetensors``).

    Args:
      folder: e.g. a pipeline's ``vqvae/`` or ``vae/`` folder.

    Raises:
      ValueError: no config or weights there (``.bin`` pickles are not read: convert them to safetensors),
        or see :func:`vae_from_diffusers`.
    """
    import json
    import os

    config_path = os.path.join(folder, "config.json")
    weights = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if not os.path.isfile(config_path):
        raise ValueError(f"no config.json in {folder}")
    if not os.path.isfile(weights):
        raise ValueError(f"no diffusion_pytorch_model.safetensors in {folder} (PyTorch .bin weights are pickles: "
                         "read them with diffjax.interop.torch_pickle.read_torch_checkpoint, or convert them "
                         "to safetensors)")
    from safetensors.numpy import load_file

    with open(config_path) as f:
        config = json.load(f)
    return vae_from_diffusers(config, load_file(weights))
