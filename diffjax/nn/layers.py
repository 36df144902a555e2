"""Building blocks of the UNet: residual, attention and resampling layers (NHWC).

Every block takes an explicit ``dropout_key`` (or ``None``) instead of holding
an RNG stream, so a call is a pure function of its inputs and the module
carries no mutable state besides its parameters: ``nnx.split`` / ``nnx.merge``
round-trip it inside plain ``jax.jit``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from diffjax.typing import Array, PRNGKey

__all__ = [
    "group_count",
    "GroupNorm",
    "conv",
    "dropout",
    "ResBlock",
    "AttentionBlock",
    "CrossAttentionBlock",
    "Downsample",
    "Upsample",
]

# DDPM's "default_init": variance scaling over fan_avg with a uniform law.
_default_init = nnx.initializers.variance_scaling(1.0, "fan_avg", "uniform")
_zeros = nnx.initializers.zeros


def group_count(channels: int, max_groups: int = 32) -> int:
    """GroupNorm's group count for ``channels``: a divisor, at most ``max_groups``.

    The largest divisor of ``channels`` that is at most
    ``min(max_groups, channels // 2)``. Groups keep at least two channels:
    with one channel per group the norm removes any per-channel shift, and the
    residual blocks add the time embedding as exactly such a shift, so small
    networks would lose their conditioning.
    """
    limit = max(1, min(max_groups, channels // 2))
    for groups in range(limit, 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def patches_kernel_grad(x: Array, g: Array, kernel_shape: tuple[int, int], strides, padding) -> Array:
    """Kernel gradient of an NHWC/HWIO convolution as one patches x output-gradient matmul.

    ``dW[kh, kw, c, o] = sum_{b, i, j} patch(x)[b, i, j, (c, kh, kw)] * g[b, i, j, o]``:
    ``lax.conv_general_dilated_patches`` gathers the patches, ``dot_general``
    contracts batch and space. The same numbers as XLA's kernel-gradient
    convolution up to summation order.

    Args:
      x: the convolution's input, ``(B, H, W, C)``.
      g: the gradient of its output, ``(B, H', W', O)``.
      kernel_shape: ``(kh, kw)``.
      strides: window strides, a pair.
      padding: ``"SAME"`` / ``"VALID"`` or explicit ``((lo, hi), (lo, hi))``.

    Returns:
      ``(kh, kw, C, O)`` in the dtype of ``x`` (accumulated in float32).
    """
    kh, kw = kernel_shape
    patches = jax.lax.conv_general_dilated_patches(
        x, (kh, kw), tuple(strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    dw = jax.lax.dot_general(patches, g.astype(patches.dtype), (((0, 1, 2), (0, 1, 2)), ((), ())),
                             preferred_element_type=jnp.float32)
    c, o = x.shape[-1], g.shape[-1]
    # The patch features are ordered (c, kh, kw), channel-major.
    return dw.reshape(c, kh, kw, o).transpose(1, 2, 0, 3).astype(x.dtype)


def _xla_conv(x, w, strides, padding):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def patches_grad_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                      dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                      precision=None, preferred_element_type=None, out_sharding=None):
    """``lax.conv_general_dilated`` whose kernel gradient is :func:`patches_kernel_grad`.

    A drop-in ``conv_general_dilated`` for ``nnx.Conv`` (NHWC input, HWIO kernel,
    no dilation, one group). The forward pass and the input gradient are XLA's;
    only the kernel gradient changes (see docs/unet.md for where it wins).

    Raises:
      ValueError: on dilation, grouping or layouts it does not implement.
    """
    if any(d not in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
        raise ValueError(f"patches_grad_conv supports no dilation, got {lhs_dilation}, {rhs_dilation}")
    if feature_group_count != 1 or batch_group_count != 1:
        raise ValueError("patches_grad_conv supports feature_group_count = batch_group_count = 1")
    if out_sharding is not None or preferred_element_type is not None:
        raise ValueError("patches_grad_conv supports neither out_sharding nor preferred_element_type")
    if lhs.ndim != 4:
        raise ValueError(f"patches_grad_conv takes NHWC images, got an input of shape {lhs.shape}")
    if dimension_numbers is not None:
        dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        if dn != jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC")):
            raise ValueError(f"patches_grad_conv needs NHWC / HWIO layouts, got {dimension_numbers}")
    if isinstance(padding, str):
        padding = padding.upper()
    else:
        padding = tuple(tuple(int(v) for v in p) for p in padding)
    return _patches_grad_conv(lhs, rhs, tuple(int(s) for s in window_strides), padding)


def _patches_grad_conv(x, w, strides, padding):
    return _patches_grad_conv_custom(strides, padding)(x, w)


def patches_wins(input_shape, kernel_shape, strides) -> bool:
    """Whether the patches kernel gradient measured faster than XLA's for this shape (CPU).

    The rule summarises ``benchmarks/conv_grad.py`` on the shared 2-core CPU
    (docs/unet.md); on other backends XLA's own gradient is kept.
    """
    if jax.default_backend() != "cpu":
        return False
    return _PATCHES_RULE(tuple(input_shape), tuple(kernel_shape), tuple(strides))


def _patches_rule(input_shape, kernel_shape, strides) -> bool:
    # 1x1 kernels: the patches are the input itself, so the kernel gradient is one
    # plain (B*H*W, C)^T x (B*H*W, O) matmul, which measured several times faster
    # than XLA's kernel-gradient convolution. For 3x3 kernels the 9x larger patch
    # tensor costs more than it saves (benchmarks/conv_grad.py, docs/unet.md).
    return tuple(kernel_shape[:2]) == (1, 1) and tuple(strides) == (1, 1)


_PATCHES_RULE = _patches_rule


def auto_grad_conv(lhs, rhs, window_strides, padding, *args, **kwargs):
    """``patches_grad_conv`` where :func:`patches_wins`, else ``lax.conv_general_dilated``."""
    if lhs.ndim == 4 and patches_wins(lhs.shape, rhs.shape, window_strides):
        return patches_grad_conv(lhs, rhs, window_strides, padding, *args, **kwargs)
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, *args, **kwargs)


_CUSTOM_CACHE: dict = {}


def _patches_grad_conv_custom(strides, padding):
    """The custom-VJP convolution for one (strides, padding), built once."""
    key = (strides, padding)
    if key not in _CUSTOM_CACHE:
        @jax.custom_vjp
        def f(x, w):
            return _xla_conv(x, w, strides, padding)

        def fwd(x, w):
            return _xla_conv(x, w, strides, padding), (x, w)

        def bwd(res, g):
            x, w = res
            _, x_vjp = jax.vjp(lambda x: _xla_conv(x, w, strides, padding), x)
            dw = patches_kernel_grad(x, g, w.shape[:2], strides, padding)
            return x_vjp(g)[0], dw.astype(w.dtype)

        f.defvjp(fwd, bwd)
        _CUSTOM_CACHE[key] = f
    return _CUSTOM_CACHE[key]


KERNEL_GRADS = ("xla", "patches", "auto")
ATTENTION_IMPLS = ("einsum", "dot_product")


def conv(in_ch: int, out_ch: int, kernel: int, *, strides: int = 1, zero_init: bool = False,
         dtype, param_dtype, rngs: nnx.Rngs, kernel_grad: str = "xla") -> nnx.Conv:
    """A 'SAME'-padded square convolution with DDPM's initialisation (or zeros).

    ``kernel_grad`` picks how its kernel gradient is computed: ``"xla"`` (XLA's
    transposed convolution), ``"patches"`` (:func:`patches_kernel_grad`) or
    ``"auto"`` (patches only for the shapes where it measured faster, see
    :func:`patches_wins`). The forward pass is the same in all three.
    """
    if kernel_grad not in KERNEL_GRADS:
        raise ValueError(f"kernel_grad must be one of {KERNEL_GRADS}, got {kernel_grad!r}")
    fn = {"xla": jax.lax.conv_general_dilated, "patches": patches_grad_conv, "auto": auto_grad_conv}[kernel_grad]
    return nnx.Conv(
        in_ch, out_ch, (kernel, kernel), strides=strides, padding="SAME",
        kernel_init=_zeros if zero_init else _default_init,
        dtype=dtype, param_dtype=param_dtype, rngs=rngs, conv_general_dilated=fn,
    )


def dropout(x: Array, rate: float, key: PRNGKey | None) -> Array:
    """Inverted dropout, active only when ``key`` is given and ``rate > 0``."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class GroupNorm(nnx.Module):
    """Group normalisation over (H, W, channels-in-group) of NHWC inputs.

    Written out rather than taken from ``nnx.GroupNorm``: reducing over
    (H, W) first to per-channel moments, then over the channels of a group,
    keeps every reduction a contiguous one, which XLA's CPU backend runs an
    order of magnitude faster than the generic 5-D reduction. Moments are
    taken in float32 whatever the compute dtype.

    Args:
      channels: channel count C.
      num_groups: groups; must divide C (see :func:`group_count`).
      epsilon: added to the variance.
    """

    def __init__(self, channels: int, *, num_groups: int, epsilon: float = 1e-6, dtype, param_dtype):
        if channels % num_groups:
            raise ValueError(f"num_groups={num_groups} must divide channels={channels}")
        self.scale = nnx.Param(jnp.ones((channels,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype))
        self.num_groups = num_groups
        self.epsilon = epsilon
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, C). Returns the normalised x in the compute dtype."""
        b, _, _, c = x.shape
        xf = x.astype(jnp.float32)
        # E[x] and E[x^2] per channel, then per group ("fast variance": the
        # inputs are activations of order 1, so cancellation is harmless).
        mean = jnp.mean(xf, axis=(1, 2)).reshape(b, self.num_groups, -1).mean(-1)
        mean_sq = jnp.mean(jnp.square(xf), axis=(1, 2)).reshape(b, self.num_groups, -1).mean(-1)
        inv_std = jax.lax.rsqrt(jnp.maximum(mean_sq - jnp.square(mean), 0.0) + self.epsilon)
        per_group = c // self.num_groups
        mean = jnp.repeat(mean, per_group, axis=1)
        inv_std = jnp.repeat(inv_std, per_group, axis=1)
        # Fold normalisation and affine into one multiply-add per element.
        mul = self.scale[...].astype(jnp.float32) * inv_std
        add = self.bias[...].astype(jnp.float32) - mean * mul
        return (xf * mul[:, None, None, :] + add[:, None, None, :]).astype(self.dtype)


def _norm(channels: int, dtype, param_dtype) -> GroupNorm:
    return GroupNorm(channels, num_groups=group_count(channels), epsilon=1e-6,
                     dtype=dtype, param_dtype=param_dtype)


class ResBlock(nnx.Module):
    """DDPM++ residual block: GN-SiLU-conv, + embedding, GN-SiLU-dropout-conv.

    Args:
      in_ch, out_ch: channel counts; a 1x1 conv maps the skip path when they differ.
      emb_dim: width of the (time + label) embedding.
      dropout_rate: dropout before the second conv.
      rescale_skip: divide the sum by sqrt(2), keeping the activation scale
        constant through the many residual additions (DDPM++).
      block_id: a static index, folded into the dropout key so every block
        draws independent masks from the one key the network receives.
      kernel_grad: how the convolutions' kernel gradients are computed (see :func:`conv`).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, *, dropout_rate: float,
                 rescale_skip: bool, block_id: int, dtype, param_dtype, rngs: nnx.Rngs, kernel_grad: str = "xla"):
        ckw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs, kernel_grad=kernel_grad)
        self.norm1 = _norm(in_ch, dtype, param_dtype)
        self.conv1 = conv(in_ch, out_ch, 3, **ckw)
        self.emb_proj = nnx.Linear(emb_dim, out_ch, kernel_init=_default_init,
                                   dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm2 = _norm(out_ch, dtype, param_dtype)
        # Zero init: every block starts as (a scaled) identity, as in DDPM++.
        self.conv2 = conv(out_ch, out_ch, 3, zero_init=True, **ckw)
        self.skip = (conv(in_ch, out_ch, 1, **ckw)
                     if in_ch != out_ch else None)
        self.dropout_rate = dropout_rate
        self.rescale_skip = rescale_skip
        self.block_id = block_id

    def __call__(self, x: Array, emb_act: Array, dropout_key: PRNGKey | None) -> Array:
        """Args: x (B, H, W, in_ch); emb_act (B, emb_dim), already through SiLU.
        Returns (B, H, W, out_ch)."""
        h = self.conv1(nnx.silu(self.norm1(x)))
        h = h + self.emb_proj(emb_act)[:, None, None, :]
        h = nnx.silu(self.norm2(h))
        if dropout_key is not None:
            dropout_key = jax.random.fold_in(dropout_key, self.block_id)
        h = self.conv2(dropout(h, self.dropout_rate, dropout_key))
        skip = x if self.skip is None else self.skip(x)
        out = skip + h
        return out * (1.0 / math.sqrt(2.0)) if self.rescale_skip else out


class AttentionBlock(nnx.Module):
    """Multi-head self-attention over all pixels, residual, zero-initialised output.

    Args:
      channels: channel count (divisible by ``num_heads``).
      num_heads: number of heads.
      rescale_skip: divide the residual sum by sqrt(2).
      impl: ``"einsum"`` (two batched matmuls and a float32 softmax, fastest on
        XLA's CPU backend) or ``"dot_product"`` (``jax.nn.dot_product_attention``,
        which XLA may lower to a fused kernel such as cuDNN flash attention on GPU).
        Same numbers within float tolerance (tests/test_conv_grad.py).
    """

    def __init__(self, channels: int, *, num_heads: int, rescale_skip: bool,
                 dtype, param_dtype, rngs: nnx.Rngs, impl: str = "einsum"):
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads={num_heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.impl = impl
        self.norm = _norm(channels, dtype, param_dtype)
        # One fused projection for q, k, v: one matmul instead of three.
        self.qkv = nnx.Linear(channels, 3 * channels, kernel_init=_default_init,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.out = nnx.Linear(channels, channels, kernel_init=_zeros,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads = num_heads
        self.rescale_skip = rescale_skip

    def __call__(self, x: Array) -> Array:
        """Args: x (B, H, W, C). Returns (B, H, W, C)."""
        b, hgt, wid, ch = x.shape
        heads, length = self.num_heads, hgt * wid
        head_dim = ch // heads
        # Rank-2 input to the projections: their kernel gradients become plain
        # 2-D matmuls instead of contractions over three axes.
        qkv = self.qkv(self.norm(x).reshape(b * length, ch)).reshape(b, length, 3, heads, head_dim)
        if self.impl == "dot_product":
            h = jax.nn.dot_product_attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]).reshape(b * length, ch)
            out = x + self.out(h).reshape(b, hgt, wid, ch)
            return out * (1.0 / math.sqrt(2.0)) if self.rescale_skip else out
        # Heads folded into the batch: rank-3 batched matmuls are what XLA's
        # CPU backend runs fastest (rank-4 einsums cost ~2x forward and
        # backward). One transpose puts q, k, v (and the heads) in front.
        qkv = jnp.transpose(qkv, (2, 0, 3, 1, 4)).reshape(3, b * heads, length, head_dim)
        # Scale q before the product: cheaper than scaling the (L x L) logits.
        q = qkv[0] * jnp.asarray(head_dim ** -0.5, qkv.dtype)
        logits = jnp.einsum("bqd,bkd->bqk", q, qkv[1], preferred_element_type=jnp.float32)
        # Softmax in float32 for bf16 stability, then back to the compute dtype.
        weights = jax.nn.softmax(logits, axis=-1).astype(qkv.dtype)
        h = jnp.einsum("bqk,bkd->bqd", weights, qkv[2])
        h = jnp.transpose(h.reshape(b, heads, length, head_dim), (0, 2, 1, 3)).reshape(b * length, ch)
        out = x + self.out(h).reshape(b, hgt, wid, ch)
        return out * (1.0 / math.sqrt(2.0)) if self.rescale_skip else out


class CrossAttentionBlock(nnx.Module):
    """Multi-head cross-attention from pixels (queries) to context tokens (keys, values).

    ``x + out(attention(q = W_q GN(x), k, v = W_kv LN(context)))``: every pixel
    attends over the ``T`` tokens of its own example. No position is added to
    the tokens, so permuting them (with their mask) leaves the output unchanged.
    The output projection starts at zero, so a fresh block is the identity and
    the residual is *not* rescaled (unlike :class:`AttentionBlock`): a network
    with cross-attention starts as the same network without it.

    Args:
      channels: channel count C of the image features (divisible by ``num_heads``).
      context_dim: width D of the context tokens.
      num_heads: number of heads.
    """

    def __init__(self, channels: int, context_dim: int, *, num_heads: int, dtype, param_dtype, rngs: nnx.Rngs):
        if channels % num_heads:
            raise ValueError(f"cross-attention channels {channels} not divisible by num_heads={num_heads}")
        if context_dim < 1:
            raise ValueError(f"context_dim must be a positive integer, got {context_dim}")
        self.norm = _norm(channels, dtype, param_dtype)
        # Tokens from any encoder come at any scale: LayerNorm puts them on a common one.
        self.context_norm = nnx.LayerNorm(context_dim, epsilon=1e-5, dtype=jnp.float32,
                                          param_dtype=param_dtype, rngs=rngs)
        self.q = nnx.Linear(channels, channels, kernel_init=_default_init,
                            dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.kv = nnx.Linear(context_dim, 2 * channels, kernel_init=_default_init,
                             dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.out = nnx.Linear(channels, channels, kernel_init=_zeros,
                              dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.num_heads = num_heads
        self.dtype = dtype

    def __call__(self, x: Array, context: Array, mask: Array | None = None) -> Array:
        """Args: x (B, H, W, C); context (B, T, D); mask (B, T) bool, True = a real token, or None.

        Returns (B, H, W, C). A row whose tokens are all masked gets no update
        (the block is the identity there), which is how an "empty" context reads.
        """
        b, hgt, wid, ch = x.shape
        tokens, dim = context.shape[1], context.shape[2]
        heads, length = self.num_heads, hgt * wid
        head_dim = ch // heads
        q = self.q(self.norm(x).reshape(b * length, ch)).reshape(b, length, heads, head_dim)
        ctx = self.context_norm(context.astype(jnp.float32).reshape(b * tokens, dim)).astype(self.dtype)
        kv = self.kv(ctx).reshape(b, tokens, 2, heads, head_dim)
        # Heads folded into the batch, as in AttentionBlock (rank-3 batched matmuls).
        q = jnp.transpose(q, (0, 2, 1, 3)).reshape(b * heads, length, head_dim)
        kv = jnp.transpose(kv, (2, 0, 3, 1, 4)).reshape(2, b * heads, tokens, head_dim)
        q = q * jnp.asarray(head_dim ** -0.5, q.dtype)
        logits = jnp.einsum("bqd,bkd->bqk", q, kv[0], preferred_element_type=jnp.float32)
        if mask is not None:
            valid = jnp.repeat(mask.astype(bool), heads, axis=0)[:, None, :]  # (B * heads, 1, T)
            logits = jnp.where(valid, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1)
        h = jnp.einsum("bqk,bkd->bqd", weights.astype(kv.dtype), kv[1])
        h = jnp.transpose(h.reshape(b, heads, length, head_dim), (0, 2, 1, 3)).reshape(b * length, ch)
        update = self.out(h).reshape(b, hgt, wid, ch)
        if mask is not None:
            # No real token: softmax spread evenly over the padding; drop the whole
            # update (the projection's bias too), so an empty context is the identity.
            update = update * jnp.any(mask, axis=1).astype(update.dtype)[:, None, None, None]
        return x + update.astype(x.dtype)


class Downsample(nnx.Module):
    """Halve H and W: stride-2 3x3 conv, or 2x2 average pooling."""

    def __init__(self, channels: int, *, with_conv: bool, dtype, param_dtype, rngs: nnx.Rngs, kernel_grad: str = "xla"):
        self.conv = (conv(channels, channels, 3, strides=2, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                          kernel_grad=kernel_grad)
                     if with_conv else None)

    def __call__(self, x: Array) -> Array:
        if self.conv is not None:
            return self.conv(x)
        b, h, w, c = x.shape
        return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


class Upsample(nnx.Module):
    """Double H and W: nearest neighbour, then (optionally) a 3x3 conv."""

    def __init__(self, channels: int, *, with_conv: bool, dtype, param_dtype, rngs: nnx.Rngs, kernel_grad: str = "xla"):
        self.conv = (conv(channels, channels, 3, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                          kernel_grad=kernel_grad)
                     if with_conv else None)

    def __call__(self, x: Array) -> Array:
        b, h, w, c = x.shape
        # Broadcast + reshape: a pure layout op XLA fuses into the next conv's input.
        x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
        return x if self.conv is None else self.conv(x)
