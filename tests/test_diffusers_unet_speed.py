"""DiffusersUNet2D's convolutions stay on XLA:CPU's fast (Eigen) kernel inside a sampling loop.

Inside a while loop XLA:CPU kept a kernel given with "OIHW" dimension numbers as it was and ran its
generic convolution loop, 7x the CPU time of the Eigen kernel per dj.sample step. The check reads the
compiled HLO: every convolution in a fori_loop body must take its kernel in HWIO (``01io``).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from diffjax.nn import diffusers_unet, diffusers_vae

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU kernel layout")


def _unet_convs():
    return [diffusers_unet.Conv2d(8, 8, 3, padding=1, rngs=nnx.Rngs(0)),
            diffusers_unet.Conv2d(8, 8, 3, stride=2, padding=1, rngs=nnx.Rngs(1))]


def _vae_convs():  # the first stages' layer (VQModel / AutoencoderKL), decoded in loops by users
    return [diffusers_vae.Conv2d(8, 8, 3), diffusers_vae.Conv2d(8, 8, 3, stride=2)]


@pytest.mark.parametrize("make", [_unet_convs, _vae_convs], ids=["unet", "vae"])
def test_conv_in_a_loop_uses_an_hwio_kernel(make):
    convs = nnx.List(make())
    gd, st = nnx.split(convs)

    def body(st, y):
        same, down = nnx.merge(gd, st)
        return y + jnp.tanh(same(y)) + jnp.repeat(jnp.repeat(down(y), 2, axis=1), 2, axis=2)

    loop = jax.jit(lambda st, x: jax.lax.fori_loop(0, 3, lambda i, y: body(st, y), x))
    hlo = loop.lower(st, jnp.ones((2, 8, 8, 8))).compile().as_text()
    labels = re.findall(r"convolution\([^\n]*dim_labels=(\S+?),", hlo)
    assert len(labels) == 2, hlo
    assert all(lab == "b01f_01io->b01f" for lab in labels), labels
