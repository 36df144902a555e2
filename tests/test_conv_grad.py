"""The UNet's faster paths give the plain path's numbers: the patches kernel
gradient (UNetConfig.conv_kernel_grad) per convolution shape and for a whole
UNet's output and parameter gradients, and jax.nn.dot_product_attention
(UNetConfig.attention_impl)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.nn import UNet, UNetConfig
from diffjax.nn.layers import AttentionBlock, patches_grad_conv, patches_kernel_grad


def _xla(x, w, strides, padding="SAME"):
    return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("hw,k,cin,cout,stride", [(8, 3, 5, 7, 1), (8, 3, 4, 4, 2), (6, 1, 6, 3, 1), (7, 3, 3, 2, 2)])
def test_patches_kernel_grad_matches_xla(hw, k, cin, cout, stride):
    kx, kw, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (3, hw, hw, cin))
    w = jax.random.normal(kw, (k, k, cin, cout))
    strides = (stride, stride)
    g = jax.random.normal(kg, _xla(x, w, strides).shape)
    expected = jax.vjp(lambda w: _xla(x, w, strides), w)[1](g)[0]
    np.testing.assert_allclose(patches_kernel_grad(x, g, (k, k), strides, "SAME"), expected, rtol=1e-4, atol=1e-4)
    # The custom-VJP convolution: same forward, same input and kernel gradients.
    y, vjp = jax.vjp(lambda x, w: patches_grad_conv(x, w, strides, "SAME"), x, w)
    y_ref, vjp_ref = jax.vjp(lambda x, w: _xla(x, w, strides), x, w)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    for got, want in zip(vjp(g), vjp_ref(g)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _loss_and_grads(module, *inputs):
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    # Move the zero-initialised layers off zero, so every gradient is exercised.
    params = jax.tree.map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)

    def loss(params):
        out = nnx.merge(graphdef, params, rest)(*inputs)
        return jnp.mean((out - inputs[0]) ** 2), out

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)


def _assert_same(a, b):
    (v, out), g = a
    (v_ref, out_ref), g_ref = b
    np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v, v_ref, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5 * max(1.0, float(jnp.abs(y).max())))


def test_unet_values_and_gradients_agree_across_kernel_grads():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 2))
    t = jnp.array([0.2, 0.7])

    def run(kernel_grad):
        # Every conv kind of the UNet: 3x3, 1x1 skip, stride-2 down, up, in and out.
        cfg = UNetConfig(image_size=4, in_channels=2, base_channels=4, channel_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(), conv_kernel_grad=kernel_grad)
        return _loss_and_grads(UNet(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg"))), x, t)

    _assert_same(run("patches"), run("xla"))


def test_dot_product_attention_matches_einsum():
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))

    def run(impl):
        block = AttentionBlock(8, num_heads=2, rescale_skip=True, dtype=jnp.float32, param_dtype=jnp.float32,
                               rngs=nnx.Rngs(jax.random.key(0, impl="rbg")), impl=impl)
        return _loss_and_grads(block, x)

    _assert_same(run("dot_product"), run("einsum"))


def test_bad_kernel_grad_or_attention_is_refused():
    with pytest.raises(ValueError, match="conv_kernel_grad must be one of"):
        UNetConfig(conv_kernel_grad="cudnn")
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        UNetConfig(attention_impl="flash")


def test_auto_uses_patches_only_for_one_by_one_kernels_on_cpu():
    from diffjax.nn.layers import patches_wins

    assert patches_wins((2, 8, 8, 4), (1, 1, 4, 8), (1, 1)) == (jax.default_backend() == "cpu")
    assert not patches_wins((2, 8, 8, 4), (3, 3, 4, 8), (1, 1))
    assert not patches_wins((2, 8, 8, 4), (1, 1, 4, 8), (2, 2))
