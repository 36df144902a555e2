"""Cross-attention conditioning of the UNet (``UNetConfig.context_dim``) and class labels as
context tokens (``nn.LabelTokens``): the attention against a loop-by-loop reference, dependence
on the context, permutation equivariance over tokens, padding masks, gradients, input checks,
one trace under jit, old model configs, and a class-conditional training run by cross-attention
through the library's own train step. Tiny networks keep the file fast."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import diffjax as dj
from diffjax.checkpoint import check_model_config, write_model_config
from diffjax.nn import LabelTokens, UNet, UNetConfig
from diffjax.nn.layers import CrossAttentionBlock
from diffjax.training import create_train_state, make_train_step, model_from_state

# Two levels, self-attention at 8x8 (so cross-attention at 8x8 on the way down and up,
# and in the middle), two heads.
CTX = UNetConfig(image_size=16, in_channels=1, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                 attn_resolutions=(8,), num_heads=2, context_dim=6)
# Labels as two context tokens, plus a caller's context after them.
LAB = dataclasses.replace(CTX, num_classes=3, label_conditioning="context", label_tokens=2)
BATCH, TOKENS = 2, 5


def rngs(seed: int) -> nnx.Rngs:
    """Rngs on the "rbg" generator: its initialisers compile in a fraction of threefry's time."""
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _noisy(params, key, scale):
    # Noise drawn once for all leaves and added on the host: a compiled random.normal per
    # leaf took most of a minute to compile (hundreds of threefry kernels).
    leaves, treedef = jax.tree.flatten(params)
    sizes = [leaf.size for leaf in leaves]
    noise = np.split(np.asarray(jax.random.normal(key, (sum(sizes),))), np.cumsum(sizes)[:-1])
    return jax.tree.unflatten(treedef, [
        jnp.asarray(np.asarray(leaf) + scale * n.reshape(leaf.shape), leaf.dtype) for leaf, n in zip(leaves, noise)])


def perturb(model, key, scale: float = 0.3):
    """A copy of ``model`` with noise on every nnx.Param (one random draw): the
    zero-initialised output projections otherwise hide the cross-attention at step 0."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return nnx.merge(graphdef, _noisy(params, key, scale), rest)


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, x, c, labels, context, context_mask):
    return nnx.merge(graphdef, state)(x, c, labels=labels, context=context, context_mask=context_mask)


def run(model, x, c, labels=None, context=None, context_mask=None):
    graphdef, state = nnx.split(model)
    return _apply(graphdef, state, x, c, labels, context, context_mask)


@pytest.fixture(scope="module")
def nets():
    return {"ctx": perturb(UNet(CTX, rngs=rngs(0)), jax.random.key(1)),
            "lab": perturb(UNet(LAB, rngs=rngs(0)), jax.random.key(2))}


def inputs(seed: int = 0):
    kx, kc = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, (BATCH, 16, 16, 1))
    context = jax.random.normal(kc, (BATCH, TOKENS, CTX.context_dim))
    return x, jnp.array([0.2, 0.7]), context


def reference_cross_attention(block: CrossAttentionBlock, x, context, mask=None):
    """The block's formula written per example, head and pixel with numpy."""
    p = jax.tree.map(np.asarray, nnx.state(block, nnx.Param))
    x, context = np.asarray(x, np.float64), np.asarray(context, np.float64)
    b, h, w, ch = x.shape
    heads, hd = block.num_heads, ch // block.num_heads
    groups = block.norm.num_groups
    xg = x.reshape(b, h * w, groups, ch // groups)
    xn = (xg - xg.mean((1, 3), keepdims=True)) / np.sqrt(xg.var((1, 3), keepdims=True) + 1e-6)
    xn = xn.reshape(b, h * w, ch) * p["norm"]["scale"] + p["norm"]["bias"]
    mu = context.mean(-1, keepdims=True)
    var = context.var(-1, keepdims=True)
    cn = (context - mu) / np.sqrt(var + 1e-5) * p["context_norm"]["scale"] + p["context_norm"]["bias"]
    q = xn @ p["q"]["kernel"] + p["q"]["bias"]
    kv = cn @ p["kv"]["kernel"] + p["kv"]["bias"]
    k, v = kv[..., :ch], kv[..., ch:]
    out = np.zeros_like(q)
    for i in range(b):
        valid = np.ones(context.shape[1], bool) if mask is None else np.asarray(mask[i])
        for head in range(heads):
            sl = slice(head * hd, (head + 1) * hd)
            for pix in range(h * w):
                if not valid.any():
                    continue
                logits = k[i, valid, sl] @ q[i, pix, sl] / np.sqrt(hd)
                wts = np.exp(logits - logits.max())
                out[i, pix, sl] = (wts / wts.sum()) @ v[i, valid, sl]
    y = (out @ p["out"]["kernel"] + p["out"]["bias"]).reshape(b, h, w, ch)
    if mask is not None:  # no real token: no update at all
        y = y * np.asarray(mask).any(axis=1)[:, None, None, None]
    return x + y


def test_cross_attention_block_matches_a_per_pixel_reference():
    """Per head, every pixel's query attends over its own example's tokens (softmax over tokens);
    padded tokens take no weight; an all-padding row is left unchanged."""
    block = perturb(CrossAttentionBlock(8, 6, num_heads=2, dtype=jnp.float32, param_dtype=jnp.float32,
                                        rngs=rngs(3)), jax.random.key(4))
    x = jax.random.normal(jax.random.key(5), (2, 4, 4, 8))
    context = 3.0 * jax.random.normal(jax.random.key(6), (2, 5, 6)) + 1.0
    apply = jax.jit(lambda x, context, mask: block(x, context, mask))
    np.testing.assert_allclose(apply(x, context, None), reference_cross_attention(block, x, context), atol=2e-5)
    mask = jnp.array([[True, False, True, True, False], [False] * 5])
    got = apply(x, context, mask)
    np.testing.assert_allclose(got, reference_cross_attention(block, x, context, mask), atol=2e-5)
    np.testing.assert_allclose(got[1], x[1], atol=0)  # no real token: identity


def test_output_depends_on_the_context_and_labels(nets):
    x, c, context = inputs()
    a = run(nets["ctx"], x, c, context=context)
    b = run(nets["ctx"], x, c, context=context.at[0].multiply(-1.0))
    assert float(jnp.max(jnp.abs(a[0] - b[0]))) > 1e-3  # example 0 changed ...
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)  # ... and only example 0
    # Where it reads the context: after the self-attention at 8x8 (down_1, then the middle and
    # up), not at 16x16 where there is no attention (down_0).
    graphdef, state = nnx.split(nets["ctx"])
    acts = jax.jit(lambda ctx: nnx.merge(graphdef, state).activations(x, c, context=ctx))
    acts_a, acts_b = acts(context), acts(-context)
    np.testing.assert_allclose(acts_a["down_0"], acts_b["down_0"], atol=0)
    assert float(jnp.max(jnp.abs(acts_a["down_1"] - acts_b["down_1"]))) > 1e-3
    la = run(nets["lab"], x, c, labels=jnp.array([0, 1]))
    lb = run(nets["lab"], x, c, labels=jnp.array([2, 1]))
    assert float(jnp.max(jnp.abs(la[0] - lb[0]))) > 1e-3
    np.testing.assert_allclose(la[1], lb[1], atol=1e-6)
    # labels=None is the null label; a caller's context adds to the label tokens.
    null = jnp.full((BATCH,), LAB.num_classes)
    np.testing.assert_allclose(run(nets["lab"], x, c), run(nets["lab"], x, c, labels=null), atol=2e-5)
    both = run(nets["lab"], x, c, labels=jnp.array([0, 1]), context=context)
    assert float(jnp.max(jnp.abs(both - la))) > 1e-3


def test_a_fresh_cross_attention_is_the_identity():
    """Zero-initialised output projections, residual not rescaled: a fresh network with
    cross-attention computes what the same parameters compute without it."""
    model = perturb(UNet(CTX, rngs=rngs(0)), jax.random.key(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    key_of = jax.tree_util.keystr
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.zeros_like(p) if "xattn" in key_of(path) and "'out'" in key_of(path) else p, params)
    zeroed = nnx.merge(graphdef, params, rest)
    # The context-free network with every parameter it shares with the one above.
    shared = {key_of(path): p for path, p in jax.tree_util.tree_leaves_with_path(params)}
    plain_graph, plain_params, plain_rest = nnx.split(
        UNet(dataclasses.replace(CTX, context_dim=0), rngs=rngs(0)), nnx.Param, ...)
    plain_params = jax.tree_util.tree_map_with_path(lambda path, p: shared[key_of(path)], plain_params)
    plain = nnx.merge(plain_graph, plain_params, plain_rest)
    x, c, context = inputs()
    np.testing.assert_allclose(run(zeroed, x, c, context=context), run(plain, x, c), atol=1e-5)


def test_permuting_the_tokens_leaves_the_output_unchanged(nets):
    x, c, context = inputs()
    mask = jnp.array([[True, True, False, True, True], [True, False, True, True, True]])
    perm = jnp.array([3, 0, 4, 2, 1])
    for name, labels in (("ctx", None), ("lab", jnp.array([0, 2]))):
        a = run(nets[name], x, c, labels=labels, context=context, context_mask=mask)
        b = run(nets[name], x, c, labels=labels, context=context[:, perm], context_mask=mask[:, perm])
        np.testing.assert_allclose(a, b, atol=2e-5)
        assert float(jnp.max(jnp.abs(a - run(nets[name], x, c, labels=labels, context=context)))) > 1e-4


def test_padded_tokens_are_ignored(nets):
    """Real tokens plus masked padding give the output of the real tokens alone,
    whatever the padding holds; a fully masked row reads as no context."""
    x, c, context = inputs()
    real = context[:, :3]
    pad = jnp.concatenate([real, 50.0 * jnp.ones((BATCH, 2, CTX.context_dim))], axis=1)
    mask = jnp.array([[True, True, True, False, False]] * BATCH)
    want = run(nets["ctx"], x, c, context=real)
    np.testing.assert_allclose(run(nets["ctx"], x, c, context=pad, context_mask=mask), want, atol=2e-5)
    none = jnp.zeros((BATCH, TOKENS), bool)
    e1 = run(nets["ctx"], x, c, context=context, context_mask=none)
    e2 = run(nets["ctx"], x, c, context=-context, context_mask=none)
    np.testing.assert_allclose(e1, e2, atol=0)


def test_the_gradient_reaches_the_context_but_not_its_padding(nets):
    x, c, context = inputs()
    mask = jnp.array([[True, True, True, False, True]] * BATCH)
    graphdef, state = nnx.split(nets["ctx"])

    def f(ctx):
        return jnp.sum(jnp.square(nnx.merge(graphdef, state)(x, c, context=ctx, context_mask=mask)))

    g = jax.jit(jax.grad(f))(context)
    assert bool(jnp.all(jnp.isfinite(g)))
    assert float(jnp.min(jnp.sum(jnp.abs(g[:, [0, 1, 2, 4]]), axis=-1))) > 1e-6  # every real token
    np.testing.assert_array_equal(g[:, 3], 0.0)


def test_one_trace_for_new_context_values(nets):
    traces = []

    @jax.jit
    def f(state, x, c, context, mask):
        traces.append(1)
        return nnx.merge(graphdef, state)(x, c, context=context, context_mask=mask)

    graphdef, state = nnx.split(nets["ctx"])
    x, c, context = inputs()
    mask = jnp.ones((BATCH, TOKENS), bool)
    f(state, x, c, context, mask)
    f(state, x + 1.0, c * 0.5, context * 2.0, mask.at[0, 1].set(False))
    assert len(traces) == 1


@pytest.mark.parametrize("change, kwargs, match", [
    ({"context_dim": 0}, {"context": True}, "context_dim=0"),
    ({"context_dim": 0}, {"mask": True}, "context_dim=0"),
    ({}, {}, "context is required"),
    ({}, {"mask": True}, "context_mask was given without context"),
    ({}, {"context": (BATCH, TOKENS, 7)}, r"context must have shape \(2, tokens >= 1, 6\)"),
    ({}, {"context": (BATCH + 1, TOKENS, 6)}, "context must have shape"),
    ({}, {"context": (BATCH, TOKENS * 6)}, "context must have shape"),
    ({}, {"context": (BATCH, 0, 6)}, "context must have shape"),
    ({}, {"context": "int"}, "floating-point"),
    ({}, {"context": True, "mask": (BATCH, TOKENS + 1)}, "context_mask must have shape"),
    ({}, {"context": True, "mask": "float"}, "must be boolean"),
])
def test_bad_context_inputs_raise(change, kwargs, match):
    model = UNet(dataclasses.replace(CTX, **change), rngs=rngs(0))
    x, c, context = inputs()
    ctx = kwargs.get("context")
    if ctx is True:
        ctx = context
    elif ctx == "int":
        ctx = jnp.ones((BATCH, TOKENS, 6), jnp.int32)
    elif isinstance(ctx, tuple):
        ctx = jnp.ones(ctx)
    mask = kwargs.get("mask")
    if mask is True:
        mask = jnp.ones((BATCH, TOKENS), bool)
    elif mask == "float":
        mask = jnp.ones((BATCH, TOKENS))
    elif isinstance(mask, tuple):
        mask = jnp.ones(mask, bool)
    with pytest.raises(ValueError, match=match):
        model(x, c, context=ctx, context_mask=mask)


@pytest.mark.parametrize("fields, match", [
    ({"context_dim": -1}, "context_dim must be >= 0"),
    ({"label_tokens": 0}, "label_tokens >= 1"),
    ({"label_conditioning": "tokens", "num_classes": 3}, "label_conditioning must be one of"),
    ({"label_conditioning": "context", "num_classes": 3, "context_dim": 0}, "needs context_dim > 0"),
    ({"label_conditioning": "both", "num_classes": 0}, "num_classes=0"),
    ({"num_heads": 3, "attn_resolutions": ()}, "middle attention"),
])
def test_bad_cross_attention_configs_raise(fields, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(CTX, **fields)


def test_condition_dropout_nulls_labels_and_masks_the_context_in_training_only(nets):
    """With a dropout key, each example is either untouched or exactly the unconditional
    input (null label, every token masked); without a key nothing is dropped."""
    model = nnx.merge(*nnx.split(nets["lab"]))
    model.config = dataclasses.replace(LAB, condition_dropout=0.5)
    graphdef, state = nnx.split(model)
    n = 8
    x = jax.random.normal(jax.random.key(3), (n, 16, 16, 1))
    c = jnp.linspace(0.1, 0.9, n)
    labels = jnp.arange(n) % 3
    context = jax.random.normal(jax.random.key(4), (n, 3, LAB.context_dim))

    @jax.jit
    def apply(labels, mask, key):
        return nnx.merge(graphdef, state)(x, c, labels=labels, context=context, context_mask=mask, dropout_key=key)

    everything = jnp.ones((n, 3), bool)
    cond = apply(labels, everything, None)
    uncond = apply(jnp.full((n,), LAB.num_classes), jnp.zeros((n, 3), bool), None)
    dropped = apply(labels, everything, jax.random.key(5))
    err = lambda a, b: np.asarray(jnp.max(jnp.abs(a - b), axis=(1, 2, 3)))
    assert np.all(err(cond, uncond) > 1e-3)
    is_cond, is_uncond = err(dropped, cond) < 1e-5, err(dropped, uncond) < 1e-5
    assert np.all(is_cond ^ is_uncond) and is_cond.any() and is_uncond.any(), (is_cond, is_uncond)
    with pytest.raises(ValueError, match="condition_dropout"):
        dataclasses.replace(LAB, condition_dropout=1.0)


def test_label_tokens():
    enc = LabelTokens(3, 4, tokens=2, rngs=rngs(0))
    tokens = enc(jnp.array([0, 3, 0]))
    assert tokens.shape == (3, 2, 4) and tokens.dtype == jnp.float32
    np.testing.assert_array_equal(tokens[0], tokens[2])
    np.testing.assert_array_equal(enc(None, batch=2), enc(jnp.array([3, 3])))  # None = null label
    assert float(jnp.max(jnp.abs(tokens[0] - tokens[1]))) > 0.1
    for bad in (jnp.array([0.5]), jnp.zeros((2, 1), jnp.int32)):
        with pytest.raises(ValueError, match="integer array"):
            enc(bad)
    with pytest.raises(ValueError, match="batch"):
        enc(None)
    with pytest.raises(ValueError, match="tokens must be a positive integer"):
        LabelTokens(3, 4, tokens=0, rngs=rngs(0))


def test_old_model_configs_and_parameter_trees_are_unchanged(tmp_path):
    """A model without context has no cross-attention parameters (its checkpoint tree is the
    one older versions wrote) and a stored model config without the new fields still matches."""
    plain = dataclasses.replace(CTX, context_dim=0, num_classes=3)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(
        nnx.state(UNet(plain, rngs=rngs(0))))]
    assert not [p for p in paths if "xattn" in p or "label_tokens" in p]
    assert any("label_emb" in p for p in paths)
    old = {k: v for k, v in dataclasses.asdict(plain).items()
           if k not in ("context_dim", "label_conditioning", "label_tokens")}
    write_model_config(str(tmp_path), old)
    defaults = {f.name: f.default for f in dataclasses.fields(UNetConfig)}
    check_model_config(str(tmp_path), dataclasses.asdict(plain), defaults)
    with pytest.raises(ValueError, match="context_dim"):
        check_model_config(str(tmp_path), dataclasses.asdict(dataclasses.replace(plain, context_dim=4)), defaults)


def _two_class_images(labels):
    """Class 0: top half +0.8, bottom -0.8; class 1 the other way round (8x8, one channel)."""
    top = np.where(labels == 0, 0.8, -0.8)[:, None, None, None]
    rows = np.arange(8)[None, :, None, None] < 4
    return jnp.asarray(np.where(rows, top, -top) * np.ones((1, 8, 8, 1)), jnp.float32)


@pytest.mark.slow  # a 60-step training; the block's math is covered by the reference and mask tests above
def test_class_conditional_training_by_cross_attention_learns_the_labels():
    """The library's train step with labels as context tokens only (no label embedding): after
    a short run the loss with the true labels is below the loss with swapped labels, and
    sampling with a label gives that class's image."""
    cfg = UNetConfig(image_size=8, in_channels=1, base_channels=8, channel_mult=(1,), num_res_blocks=1,
                     attn_resolutions=(), num_heads=1, num_classes=2, context_dim=8,
                     label_conditioning="context", prediction="x0")
    model = UNet(cfg, rngs=rngs(0))
    assert model.label_emb is None  # the labels can only get in through the cross-attention
    sde = dj.VPSDE()
    # Regression onto x0: at high noise the label alone says what x0 is.
    loss_fn = dj.losses.make_loss_fn(sde, prediction="x0", kind="discrete")
    optimizer = optax.adam(3e-3)
    graphdef, state = create_train_state(model, optimizer)
    step = jax.jit(make_train_step(graphdef, loss_fn, optimizer, 0.0, use_labels=True))
    labels = np.arange(16) % 2
    batch = {"image": _two_class_images(labels), "label": jnp.asarray(labels, jnp.int32)}
    for _ in range(60):
        state, _ = step(state, batch, jax.random.key(0))

    net = model_from_state(graphdef, state.params, state.model_state)

    @jax.jit
    def loss_with(lab, key):
        return loss_fn(lambda x_t, c: net(x_t, c, labels=lab), batch["image"], key)[0]

    keys = [jax.random.key(k) for k in range(4)]
    right = np.mean([float(loss_with(batch["label"], k)) for k in keys])
    wrong = np.mean([float(loss_with(1 - batch["label"], k)) for k in keys])
    assert right < 0.5 * wrong, (right, wrong)

    score = dj.parametrization.model_score_fn(lambda x, c: net(x, c, labels=jnp.array([0, 1])), sde,
                                              prediction="x0")
    x0, _ = jax.jit(lambda k: dj.sample(score, sde, sde.prior_sample(k, (2, 8, 8, 1)), key=k,
                                        sampler=dj.samplers.DDIM(10)))(jax.random.key(7))
    top_minus_bottom = np.asarray(x0[:, :4].mean((1, 2, 3)) - x0[:, 4:].mean((1, 2, 3)))
    assert top_minus_bottom[0] > 0.5 and top_minus_bottom[1] < -0.5, top_minus_bottom


@pytest.mark.parametrize("arg", ["xattn", "xattn,smoke", "labels,smoke"])
def test_fashion_mnist_class_conditional_configs_build_the_label_path(arg):
    from configs.ddpm_fashion_mnist import get_config
    from configs.default import get_base_config
    from diffjax import builders

    config = get_config(arg)
    builders.validate_config(config, get_base_config())
    model_config = builders.build_model_config(config, (32, 32, 1), num_classes=10)
    assert model_config.num_classes == 10
    assert model_config.labels_as_context == arg.startswith("xattn")
    assert model_config.labels_as_embedding == arg.startswith("labels")
