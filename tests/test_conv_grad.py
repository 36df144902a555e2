"""The patches kernel gradient (UNetConfig.conv_kernel_grad) gives XLA's numbers:
per convolution shape, and for a whole UNet's output and parameter gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.nn import UNet, UNetConfig
from diffjax.nn.layers import patches_grad_conv, patches_kernel_grad


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


def test_unet_values_and_gradients_agree_across_kernel_grads():
    def loss_and_grads(kernel_grad):
        cfg = UNetConfig(image_size=8, in_channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                         attn_resolutions=(4,), conv_kernel_grad=kernel_grad)
        model = UNet(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        # Non-zero zero-initialised layers, so every kernel gradient is exercised.
        params = jax.tree.map(lambda p: p + 0.05 * jnp.cos(jnp.arange(p.size).reshape(p.shape)), params)
        x = jax.random.normal(jax.random.key(1), (4, 8, 8, 2))
        t = jnp.linspace(0.1, 0.9, 4)

        def loss(params):
            out = nnx.merge(graphdef, params, rest)(x, t)
            return jnp.mean((out - x) ** 2), out

        (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        return value, out, grads

    v_ref, out_ref, g_ref = loss_and_grads("xla")
    for kind in ("patches", "auto"):
        v, out, g = loss_and_grads(kind)
        np.testing.assert_allclose(out, out_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(v, v_ref, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * max(1.0, float(jnp.abs(b).max())))


def test_bad_kernel_grad_is_refused():
    with pytest.raises(ValueError, match="conv_kernel_grad must be one of"):
        UNetConfig(conv_kernel_grad="cudnn")
