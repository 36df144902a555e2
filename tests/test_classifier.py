"""The time-dependent classifier, its loss, the class selection and the domain-classifier pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from diffjax.data import ArrayDataset, select_classes
from diffjax.losses import make_classifier_loss_fn
from diffjax.nn import Classifier, ClassifierConfig
from diffjax.pipelines.translation import DomainClassifierPipeline
from diffjax.sde import VPSDE
from diffjax.training import create_train_state, make_train_step

CFG = ClassifierConfig(image_size=8, in_channels=1, num_classes=2, base_channels=8, channel_mult=(1, 2))


def test_shapes_features_and_bad_input():
    model = Classifier(CFG, rngs=nnx.Rngs(0))
    x, c = jnp.zeros((3, 8, 8, 1)), jnp.full((3,), 0.5)
    assert model(x, c).shape == (3, 2)
    assert model.features(x, c).shape == (3, 4, 4, 16)
    with pytest.raises(ValueError, match="x must have shape"):
        model(jnp.zeros((3, 16, 16, 1)), c)
    with pytest.raises(ValueError, match="c must have shape"):
        model(x, jnp.zeros((2,)))
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierConfig(image_size=8, in_channels=1, num_classes=1)
    with pytest.raises(ValueError, match="divisible"):
        ClassifierConfig(image_size=6, in_channels=1, channel_mult=(1, 2, 2))


def test_the_output_depends_on_time():
    """Once the zero-initialised residual convs are nonzero, the time embedding reaches the logits."""
    model = Classifier(CFG, rngs=nnx.Rngs(0))
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    a, b = model(x, jnp.full((2,), 0.1)), model(x, jnp.full((2,), 0.9))
    assert not np.allclose(a, b)


def test_loss_is_cross_entropy_at_a_random_noise_level():
    sde = VPSDE()
    loss_fn = make_classifier_loss_fn(sde)
    x0 = jnp.zeros((4, 8, 8, 1))
    target = jnp.array([0, 1, 1, 0])
    logits = jnp.array([2.0, -1.0])
    loss, aux = loss_fn(lambda x, c: jnp.broadcast_to(logits, (x.shape[0], 2)), x0, jax.random.key(0), target=target)
    log_p = jax.nn.log_softmax(logits)
    np.testing.assert_allclose(loss, -(2 * log_p[0] + 2 * log_p[1]) / 4, rtol=1e-6)
    assert float(aux["accuracy"]) == 0.5
    assert np.all((aux["t"] >= sde.eps) & (aux["t"] <= sde.T))
    with pytest.raises(ValueError, match="targets"):
        loss_fn(lambda x, c: jnp.zeros((4, 2)), x0, jax.random.key(0))


def test_training_separates_two_domains():
    """Bright vs dark 8x8 images: a few dozen steps learn the domain at low noise."""
    rng = np.random.default_rng(0)
    images = np.concatenate([rng.uniform(-1, -0.2, (64, 8, 8, 1)), rng.uniform(0.2, 1, (64, 8, 8, 1))]).astype(np.float32)
    labels = np.repeat([3, 5], 64)
    ds = select_classes(ArrayDataset("toy", "train", images, labels, 6), (5, 3))  # 5 -> 0, 3 -> 1
    assert ds.num_classes == 2 and ds.num_examples == 128
    np.testing.assert_array_equal(np.unique(ds.labels()), [0, 1])
    model = Classifier(CFG, rngs=nnx.Rngs(0))
    opt = optax.adam(3e-3)
    graphdef, state = create_train_state(model, opt)
    step = jax.jit(make_train_step(graphdef, make_classifier_loss_fn(VPSDE()), opt, 0.9))
    pipe = DomainClassifierPipeline()
    for i in range(60):
        batch = pipe.prepare_batch(ds.batch(i, 32), step=i, seed=0, rows=np.arange(32))
        state, metrics = step(state, {k: jnp.asarray(v) for k, v in batch.items()}, jax.random.key(1))
    trained = nnx.merge(graphdef, state.params, state.model_state)
    x = jnp.asarray(images[::8])
    pred = np.argmax(trained(x, jnp.full((len(x),), 0.05)), axis=1)
    truth = np.where(labels[::8] == 5, 0, 1)  # relabelled: 5 (bright) -> 0, 3 (dark) -> 1
    assert (pred == truth).mean() == 1.0


def test_select_classes_refuses():
    ds = ArrayDataset("toy", "train", np.zeros((4, 2, 2, 1), np.float32), np.array([0, 1, 2, 1]), 3)
    for bad in ((3,), (1, 1), ()):
        with pytest.raises(ValueError, match="classes"):
            select_classes(ds, bad)
