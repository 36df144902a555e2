"""Tests of the NNX UNet (diffjax.nn): shapes, initialisation, conditioning,
dropout, tree-mode jit, gradients, dtypes, layers against closed forms, and
every input check. Tiny configurations keep the file fast."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from xla_levels import DEFAULT_XLA

from diffjax.nn import FixedFrequencies, UNet, UNetConfig, num_parameters, sinusoidal_embedding
from diffjax.nn.layers import AttentionBlock, GroupNorm, group_count

TINY = UNetConfig(image_size=16, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                  attn_resolutions=(8,), num_heads=2)
# Image conditioning, labels, dropout, sinusoidal embedding, a third level and
# pooling resamplers at once: one compiled program serves several tests.
COND = dataclasses.replace(TINY, in_channels=3, out_channels=6, cond_channels=2, num_classes=3, dropout=0.5,
                           channel_mult=(1, 2, 2), attn_resolutions=(16,), resample_with_conv=False,
                           time_embedding="sinusoidal", time_scale=1000.0)
BATCH = 2


def rngs(seed: int) -> nnx.Rngs:
    """Rngs on the "rbg" generator: on CPU its programs compile in a fraction
    of threefry's time, and initialisation compiles one program per shape."""
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def rkey(seed: int):
    return jax.random.key(seed, impl="rbg")


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x, c, cond, labels, dropout_key):
    return nnx.merge(graphdef, state)(x, c, cond=cond, labels=labels, dropout_key=dropout_key)


def run(model, x, c, cond=None, labels=None, dropout_key=None):
    """``model(x, c, ...)`` compiled: tree mode (split, then merge under jit)."""
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, x, c, cond, labels, dropout_key)


def perturb(model: UNet, key, scale: float = 0.2) -> UNet:
    """A copy of ``model`` with Gaussian noise added to every nnx.Param.

    The zero-initialised output convs make the fresh network constant (zero);
    perturbing lets conditioning and dropout reach the output.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, treedef = jax.tree.flatten(params)
    noisy = [leaf + scale * jax.random.normal(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
             for i, leaf in enumerate(leaves)]
    return nnx.merge(graphdef, jax.tree.unflatten(treedef, noisy), rest)


def inputs(cfg: UNetConfig, seed: int = 0):
    x = jax.random.normal(jax.random.key(seed), (BATCH, cfg.image_size, cfg.image_size, cfg.in_channels))
    c = jnp.array([0.2, 0.7])
    return x, c


def cond_image(value: float = 1.0):
    return jnp.full((BATCH, COND.image_size, COND.image_size, COND.cond_channels), value)


@pytest.fixture(scope="module")
def fresh():
    return {"tiny": UNet(TINY, rngs=rngs(0)), "cond": UNet(COND, rngs=rngs(0))}


@pytest.fixture(scope="module")
def tiny(fresh):
    return perturb(fresh["tiny"], rkey(1))


@pytest.fixture(scope="module")
def cond_net(fresh):
    return perturb(fresh["cond"], rkey(1))


# ----------------------------------------------------------------- shapes, init

@pytest.mark.parametrize("name", ["tiny", "cond"])
def test_output_shape_and_zero_init(fresh, name):
    model = fresh[name]
    cfg = model.config
    x, c = inputs(cfg)
    kwargs = {"cond": cond_image(), "labels": jnp.array([0, 2])} if name == "cond" else {}
    out = run(model, x, c, **kwargs)
    assert out.shape == (BATCH, cfg.image_size, cfg.image_size, cfg.output_channels)
    assert out.dtype == jnp.float32
    # The final conv is zero-initialised, so a fresh network outputs exactly 0.
    np.testing.assert_array_equal(np.asarray(out), 0.0)
    # After perturbing the parameters the output is non-trivial.
    out = run(perturb(model, rkey(3)), x, c, **kwargs)
    assert np.all(np.isfinite(out)) and float(jnp.std(out)) > 1e-3


def test_config_accepts_lists_and_defaults_out_channels():
    cfg = UNetConfig(image_size=8, in_channels=2, channel_mult=[1, 2], attn_resolutions=[4])
    assert cfg.channel_mult == (1, 2) and cfg.attn_resolutions == (4,)
    assert cfg.output_channels == 2 and cfg.resolutions == (8, 4)
    hash(cfg)  # frozen and hashable: usable as a static jit argument


# ----------------------------------------------------------------- conditioning

def test_time_conditioning_changes_output(tiny):
    x, c = inputs(TINY)
    assert float(jnp.max(jnp.abs(run(tiny, x, c) - run(tiny, x, c[::-1])))) > 1e-3


def test_label_conditioning_and_null_label(cond_net):
    x, c = inputs(COND)
    out0 = run(cond_net, x, c, cond=cond_image(), labels=jnp.array([0, 0]))
    out1 = run(cond_net, x, c, cond=cond_image(), labels=jnp.array([1, 1]))
    assert float(jnp.max(jnp.abs(out0 - out1))) > 1e-3
    # labels=None means the null label, index num_classes.
    null = run(cond_net, x, c, cond=cond_image(), labels=jnp.array([3, 3]))
    np.testing.assert_allclose(run(cond_net, x, c, cond=cond_image()), null, atol=1e-6)


def test_cond_channels_change_output(cond_net):
    x, c = inputs(COND)
    labels = jnp.array([0, 0])
    plus = run(cond_net, x, c, cond=cond_image(1.0), labels=labels)
    minus = run(cond_net, x, c, cond=cond_image(-1.0), labels=labels)
    assert float(jnp.max(jnp.abs(plus - minus))) > 1e-3


# ----------------------------------------------------------------- dropout

def test_dropout_only_with_key_and_deterministic_given_key(cond_net):
    x, c = inputs(COND)
    kw = {"cond": cond_image(), "labels": jnp.array([0, 0])}
    plain = run(cond_net, x, c, **kw)
    np.testing.assert_array_equal(plain, run(cond_net, x, c, **kw))  # no key: dropout off
    k1, k2 = jax.random.key(7), jax.random.key(8)
    d1 = run(cond_net, x, c, dropout_key=k1, **kw)
    np.testing.assert_array_equal(d1, run(cond_net, x, c, dropout_key=k1, **kw))
    assert float(jnp.max(jnp.abs(d1 - plain))) > 1e-3
    assert float(jnp.max(jnp.abs(d1 - run(cond_net, x, c, dropout_key=k2, **kw)))) > 1e-3


# ----------------------------------------------------------------- tree mode

def test_param_split_merge_and_grad_inside_jit(tiny):
    """Split off nnx.Param (what the optimiser sees), merge inside plain
    jax.jit, differentiate: the output matches the whole-state round trip and
    the gradient is finite and non-zero."""
    x, c = inputs(TINY)
    graphdef, params, rest = nnx.split(tiny, nnx.Param, ...)
    # The default suite compiles at XLA's lowest optimisation level (conftest.py), where these
    # two programs round differently; at the default level (3) they agree to the last bit.

    @functools.partial(jax.jit, compiler_options=DEFAULT_XLA)
    def loss_and_grad(params, rest):
        def loss(params):
            out = nnx.merge(graphdef, params, rest)(x, c)
            return jnp.mean((out - x) ** 2), out
        return jax.value_and_grad(loss, has_aux=True)(params)

    (value, out), grads = loss_and_grad(params, rest)
    whole_graphdef, state = nnx.split(tiny)
    forward = jax.jit(lambda state: nnx.merge(whole_graphdef, state)(x, c), compiler_options=DEFAULT_XLA)
    np.testing.assert_allclose(out, forward(state), rtol=1e-5, atol=1e-6)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0.0
    # The Fourier frequencies are saved state but not trainable parameters.
    is_var = lambda v: isinstance(v, nnx.Variable)  # noqa: E731
    assert not any(isinstance(v, FixedFrequencies) for v in jax.tree.leaves(params, is_leaf=is_var))
    assert any(isinstance(v, FixedFrequencies) for v in jax.tree.leaves(rest, is_leaf=is_var))
    assert num_parameters(tiny) == sum(p.size for p in jax.tree.leaves(params))
    # Merging outside jit gives back the same values.
    merged = nnx.state(nnx.merge(graphdef, params, rest))
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), merged, nnx.state(tiny)))


def test_bfloat16_compute_close_to_float32(tiny):
    x, c = inputs(TINY)
    bf16 = UNet(dataclasses.replace(TINY, dtype="bfloat16"), rngs=rngs(0))
    nnx.update(bf16, nnx.state(tiny))  # same float32 parameters, bfloat16 compute
    out = run(bf16, x, c)
    ref = run(tiny, x, c)
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref)) < 0.1


def _primitive_dtypes(fn, *args) -> dict[str, set]:
    """``{primitive name: {dtypes of its inputs}}`` over a function's jaxpr, nested ones included."""
    seen: dict[str, set] = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            dtypes = {str(v.aval.dtype) for v in eqn.invars if hasattr(v.aval, "dtype")}
            seen.setdefault(eqn.primitive.name, set()).update(dtypes)
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return seen


def test_bfloat16_keeps_group_norm_moments_and_softmax_in_float32():
    """The bf16 path's numerically fragile parts run in float32: checked directly.

    The end-to-end bf16 test's 10% tolerance cannot see it; here the traced program
    of each layer must take its reductions and exponentials in float32, and GroupNorm's
    E[x^2] - E[x]^2 on bf16 activations with a large mean (where bf16 moments cancel
    catastrophically) must match a float64 two-pass reference.
    """
    bf16 = jnp.bfloat16
    norm = GroupNorm(8, num_groups=2, dtype=bf16, param_dtype=jnp.float32)
    x = jnp.asarray(np.random.default_rng(0).normal(8.0, 1.0, (2, 8, 8, 8)), bf16)
    prims = _primitive_dtypes(norm, x)
    assert prims["reduce_sum"] == {"float32"} and prims["rsqrt"] == {"float32"}, prims
    got = np.asarray(norm(x), np.float64)
    xg = np.asarray(x, np.float64).reshape(2, 64, 2, 4)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    want = ((xg - mean) / np.sqrt(((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True) + 1e-6)).reshape(got.shape)
    np.testing.assert_allclose(got, want, atol=0.05)  # bf16 output rounding only

    block = AttentionBlock(8, num_heads=2, rescale_skip=False, dtype=bf16, param_dtype=jnp.float32, rngs=rngs(0))
    prims = _primitive_dtypes(block, x)
    assert prims["exp"] == {"float32"} and prims["reduce_max"] == {"float32"}, prims
    assert "bfloat16" in prims["dot_general"]  # the matmuls themselves do run in bf16


# ----------------------------------------------------------------- layers vs closed forms

def test_sinusoidal_embedding_closed_form():
    emb = sinusoidal_embedding(jnp.array([0.0, 3.0]), 8, max_period=1000.0)
    freqs = 1000.0 ** (-np.arange(4) / 3.0)
    expected = np.concatenate([np.sin(3.0 * freqs), np.cos(3.0 * freqs)])
    np.testing.assert_allclose(emb[0], np.r_[np.zeros(4), np.ones(4)], atol=1e-7)
    np.testing.assert_allclose(emb[1], expected, rtol=1e-5, atol=1e-6)


def test_group_norm_matches_two_pass_reference():
    assert group_count(12) == 6 and group_count(48) == 24 and group_count(64) == 32 and group_count(3) == 1
    rng = np.random.default_rng(0)
    x = rng.normal(1.5, 2.0, (2, 4, 4, 12)).astype(np.float32)
    norm = GroupNorm(12, num_groups=4, dtype=jnp.float32, param_dtype=jnp.float32)
    norm.scale[...] = jnp.arange(1.0, 13.0)
    norm.bias[...] = -jnp.arange(12.0)
    xg = x.reshape(2, 16, 4, 3).astype(np.float64)
    mean = xg.mean(axis=(1, 3), keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    expected = ((xg - mean) / np.sqrt(var + 1e-6)).reshape(x.shape) * np.arange(1, 13) - np.arange(12)
    np.testing.assert_allclose(norm(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-4)


def test_attention_matches_numpy_reference():
    block = AttentionBlock(8, num_heads=2, rescale_skip=False, dtype=jnp.float32,
                           param_dtype=jnp.float32, rngs=rngs(0))
    block.out.kernel[...] = jax.random.normal(jax.random.key(2), (8, 8)) * 0.3
    x = np.asarray(jax.random.normal(jax.random.key(1), (2, 3, 3, 8)), np.float64)
    h = np.asarray(block.norm(jnp.asarray(x, jnp.float32)), np.float64).reshape(2, 9, 8)
    qkv = h @ np.asarray(block.qkv.kernel[...], np.float64) + np.asarray(block.qkv.bias[...], np.float64)
    q, k, v = np.split(qkv, 3, axis=-1)
    heads = []
    for hd in range(2):
        sl = slice(4 * hd, 4 * hd + 4)
        logits = q[..., sl] @ np.swapaxes(k[..., sl], 1, 2) / 2.0  # sqrt(head_dim = 4)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        heads.append((w / w.sum(-1, keepdims=True)) @ v[..., sl])
    attended = np.concatenate(heads, axis=-1) @ np.asarray(block.out.kernel[...], np.float64)
    expected = x + attended.reshape(x.shape)
    np.testing.assert_allclose(block(jnp.asarray(x, jnp.float32)), expected, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------- input checks

@pytest.mark.parametrize("changes, match", [
    ({"image_size": 18, "channel_mult": (1, 2, 2)}, "divisible by 2"),
    ({"attn_resolutions": (4,)}, "do not occur"),
    ({"time_embedding": "learned"}, "time_embedding"),
    ({"prediction": "noise"}, "prediction"),
    ({"dtype": "float64"}, "dtype"),
    ({"param_dtype": "int8"}, "param_dtype"),
    ({"num_heads": 3}, "num_heads"),
    ({"dropout": 1.0}, "dropout"),
    ({"channel_mult": ()}, "channel_mult"),
    ({"base_channels": 7}, "base_channels must be even"),
    ({"image_size": 0}, "image_size"),
])
def test_config_errors(changes, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **changes)


def test_call_errors(fresh):
    model, plain = fresh["cond"], fresh["tiny"]
    x, c = inputs(COND)
    cond = cond_image()
    labels = jnp.array([0, 1])
    cases = [
        (dict(x=x[..., :8, :], c=c, cond=cond), r"x must have shape \(batch, 16, 16, 3\)"),
        (dict(x=x[0], c=c, cond=cond), "x must have shape"),
        (dict(x=x, c=c[:1], cond=cond), r"c must have shape \(batch,\)"),
        (dict(x=x, c=c[:, None], cond=cond), "c must have shape"),
        (dict(x=x, c=c), "cond is required"),
        (dict(x=x, c=c, cond=cond[..., :1]), "cond must have shape"),
        (dict(x=x, c=c, cond=cond, labels=labels[:1]), "labels must have shape"),
        (dict(x=x, c=c, cond=cond, labels=labels.astype(jnp.float32)), "labels must be integers"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            model(**kwargs)
    x1, _ = inputs(TINY)
    with pytest.raises(ValueError, match="cond_channels=0"):
        plain(x1, c, cond=cond)
    with pytest.raises(ValueError, match="num_classes=0"):
        plain(x1, c, labels=labels)
    with pytest.raises(ValueError, match="UNetConfig"):
        UNet({"image_size": 16}, rngs=rngs(0))
