"""``model.dtype=bfloat16`` from the config down to the network's traced program.

tests/test_unet.py checks the layers one by one; here the whole path a run takes
is checked: config -> ``builders.build_model`` -> UNet forward -> loss. A run's
``model.dtype`` must put every convolution and (non-embedding) matmul in
bfloat16 while parameters, GroupNorm moments, the attention softmax and the
loss stay float32, and the result must differ from the float32 forward by
bf16 rounding (not zero, not more). Small sizes: seconds on a CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from configs.paper_bf16 import get_config
from diffjax import builders

SHAPE = (8, 8, 1)


def _model(dtype: str):
    c = get_config("smoke")  # the bf16 paper config, CPU-sized
    c.model.dtype = dtype
    c.model.attn_resolutions = (4,)  # one attention block, so the softmax is traced too
    c.model.remat = False
    c.sharding.fsdp = False
    model, model_config = builders.build_model(c, nnx.Rngs(0), SHAPE)
    return c, model, model_config


def _inputs():
    x = jax.random.normal(jax.random.key(1), (4,) + SHAPE)
    return x, jnp.array([10.0, 300.0, 600.0, 999.0])


def _primitive_dtypes(fn, *args) -> dict[str, list[str]]:
    """``{primitive: [dtype of its first input, one entry per occurrence]}`` over the jaxpr, nested ones included."""
    seen: dict[str, list[str]] = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.invars and hasattr(eqn.invars[0].aval, "dtype"):
                seen.setdefault(eqn.primitive.name, []).append(str(eqn.invars[0].aval.dtype))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return seen


def _with_nonzero_output_layer(model) -> None:
    # conv_out starts at zero (the untrained net outputs exactly 0 in any dtype),
    # which would hide every difference between the two forwards.
    kernel = model.conv_out.kernel
    kernel[...] = 0.05 * jax.random.normal(jax.random.key(3), kernel.shape, kernel.dtype)


def test_config_dtype_reaches_the_network_and_the_loss():
    _, f32, _ = _model("float32")
    config, bf16, model_config = _model("bfloat16")
    assert model_config.dtype == "bfloat16" and model_config.param_dtype == "float32"
    assert {str(p.dtype) for p in jax.tree.leaves(nnx.state(bf16, nnx.Param))} == {"float32"}

    x, t = _inputs()
    ref = _primitive_dtypes(lambda x, t: f32(x, t), x, t)
    got = _primitive_dtypes(lambda x, t: bf16(x, t), x, t)
    # Every convolution in bf16, as many as the float32 network has.
    assert got["conv_general_dilated"] == ["bfloat16"] * len(ref["conv_general_dilated"]), got["conv_general_dilated"]
    # Matmuls: all bf16 except the time-embedding MLP's two (float32 by design, a few KFLOPs).
    assert got["dot_general"].count("float32") == 2, got["dot_general"]
    assert got["dot_general"].count("bfloat16") == len(ref["dot_general"]) - 2 > 0
    # GroupNorm moments and the softmax in float32.
    assert set(got["reduce_sum"]) == {"float32"} and set(got["rsqrt"]) == {"float32"}
    assert set(got["exp"]) == {"float32"} and set(got["reduce_max"]) == {"float32"}

    # The loss a run minimises: float32 after the bf16 forward.
    loss_fn = builders.build_loss(config)
    batch = jax.random.uniform(jax.random.key(2), (4,) + SHAPE, minval=-1.0, maxval=1.0)
    loss_of = lambda b: loss_fn(lambda x_t, c: bf16(x_t, c), b, jax.random.key(4))[0]
    assert set(_primitive_dtypes(loss_of, batch)["conv_general_dilated"]) == {"bfloat16"}
    assert jax.eval_shape(loss_of, batch).dtype == jnp.float32


def test_bfloat16_forward_differs_from_float32_by_rounding_only():
    _, f32, _ = _model("float32")
    _with_nonzero_output_layer(f32)
    _, bf16, _ = _model("bfloat16")
    nnx.update(bf16, nnx.state(f32))  # the same float32 parameters
    x, t = _inputs()
    a, b = f32(x, t), bf16(x, t)
    assert a.dtype == b.dtype == jnp.float32
    rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(a))
    # bf16 has an 8-bit mantissa (2^-8 ~ 4e-3 per rounding): a few layers give ~1e-2.
    assert 1e-3 < rel < 5e-2, rel
