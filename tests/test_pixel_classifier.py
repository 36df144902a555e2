"""The MLP ensemble of Baranchuk et al.: vote, uncertainty, batch norm, ignored pixels,
and that training separates classes that are separable."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.tasks import pixel_classifier as pc


def test_majority_vote_and_ties():
    # 3 members, 2 pixels, 3 classes. Pixel 0: votes 2, 2, 0 -> 2. Pixel 1: 0, 1, 2 -> tie -> 0.
    logits = np.full((3, 2, 3), -5.0)
    for m, (a, b) in enumerate([(2, 0), (2, 1), (0, 2)]):
        logits[m, 0, a] = 5.0
        logits[m, 1, b] = 5.0
    np.testing.assert_array_equal(pc.majority_vote(jnp.asarray(logits)), [2, 0])
    # A vote, not a mean: one very confident member loses to two mild ones.
    mild = jnp.asarray([[[1.0, 0.0]], [[1.0, 0.0]], [[0.0, 100.0]]])
    np.testing.assert_array_equal(pc.majority_vote(mild), [0])


def test_ignored_pixels_leave_the_loss_unchanged():
    logits = jax.random.normal(jax.random.key(0), (6, 3))
    labels = jnp.array([0, 2, 255, 1, 255, 2])
    keep = np.asarray(labels) != 255
    want = pc.masked_cross_entropy(logits[keep], labels[keep])
    np.testing.assert_allclose(pc.masked_cross_entropy(logits, labels), want, rtol=1e-6)


def test_uncertainty_is_the_entropy_of_the_mean_softmax():
    confident = jnp.asarray(np.tile([[[20.0, 0.0, 0.0]]], (4, 1, 1)))
    split = jnp.asarray(np.array([[[50.0, 0, 0]], [[0, 50.0, 0]]]))  # members disagree fully
    assert float(pc.ensemble_entropy(confident)[0]) < 1e-6
    np.testing.assert_allclose(pc.ensemble_entropy(split), [np.log(2.0)], rtol=1e-5)
    uniform = jnp.zeros((3, 1, 4))
    np.testing.assert_allclose(pc.ensemble_entropy(uniform), [np.log(4.0)], rtol=1e-5)


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_after():
    ens = pc.init_ensemble(jax.random.key(0), 1, 3, 2)
    member = jax.tree.map(lambda a: a[0], ens)
    x = jax.random.normal(jax.random.key(1), (64, 3)) * 5 + 3
    _, new = pc.apply_member(member["params"], member["stats"], x, train=True)
    h = x @ member["params"]["w0"] + member["params"]["b0"]
    np.testing.assert_allclose(new["mean0"], 0.1 * h.mean(0), rtol=1e-4, atol=1e-5)
    _, same = pc.apply_member(member["params"], member["stats"], x, train=False)
    assert same is member["stats"]


def _blobs(n=600, f=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, f)) * 3
    labels = rng.integers(0, k, n)
    return (centres[labels] + rng.normal(size=(n, f))).astype(np.float32), labels


def test_training_separates_separable_classes_and_skips_ignored_pixels():
    x, y = _blobs()
    y_train = y.copy()
    y_train[:200] = 255  # ignored: if they were used as class ids, training would fail
    ens = pc.init_ensemble(jax.random.key(0), 4, x.shape[1], 3)
    train = jax.jit(lambda e, k: pc.train_ensemble(e, x, y_train, key=k, steps=150, batch_size=64))
    trained, losses = train(ens, jax.random.key(1))
    assert losses.shape == (150, 4) and float(losses[-10:].mean()) < 0.2 < float(losses[:5].mean())
    labels, uncertainty = pc.predict(trained, jnp.asarray(x[:200].reshape(10, 20, 6)))
    assert labels.shape == (10, 20) and uncertainty.shape == (10, 20)
    assert np.mean(np.asarray(labels).ravel() == y[:200]) > 0.95  # the held-back pixels
    # Members start and train differently.
    assert not np.allclose(trained["params"]["w0"][0], trained["params"]["w0"][1])


def test_refusals():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        pc.init_ensemble(jax.random.key(0), 2, 4, 1)
    ens = pc.init_ensemble(jax.random.key(0), 2, 4, 3)
    with pytest.raises(ValueError, match=r"features must be \(P, F\) and labels \(P,\)"):
        pc.train_ensemble(ens, np.zeros((5, 4)), np.zeros(4, int), key=jax.random.key(0), steps=1, batch_size=2)
    with pytest.raises(ValueError, match="steps must be"):
        pc.train_ensemble(ens, np.zeros((5, 4)), np.zeros(5, int), key=jax.random.key(0), steps=0, batch_size=2)


def test_streamed_training_is_the_in_memory_training_when_everything_fits(tmp_path):
    x, y = _blobs(n=300)
    y = y.copy()
    y[:40] = 255
    path = str(tmp_path / "feats.npy")
    np.save(path, x)
    on_disk = np.load(path, mmap_mode="r")
    ens = pc.init_ensemble(jax.random.key(0), 3, x.shape[1], 3)
    want, want_losses = pc.train_ensemble(ens, x, y, key=jax.random.key(1), steps=50, batch_size=32)
    # 50 steps in chunks of 20, 20, 10: Adam's state and the step count carry over.
    got, losses = pc.train_ensemble_streamed(ens, on_disk, y, key=jax.random.key(1), steps=50, batch_size=32,
                                             chunk_pixels=300, chunk_steps=20)
    assert losses.shape == (50, 3)
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(want_losses, losses, rtol=1e-5, atol=1e-6)


class _CountingRows:
    """A (P, F) array that records the largest number of rows read at once."""

    def __init__(self, a):
        self.a, self.shape, self.ndim, self.most = a, a.shape, a.ndim, 0

    def __getitem__(self, rows):
        rows = np.asarray(rows)
        assert rows.ndim == 1 and np.all(np.diff(rows) > 0)  # sorted: a memory map is read in file order
        self.most = max(self.most, rows.size)
        return self.a[rows]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the streamed trainer read the whole array")


def test_streamed_training_reads_chunks_only_and_still_separates():
    x, y = _blobs(n=2000)
    y_train = y.copy()
    y_train[:300] = 255
    feats = _CountingRows(x)
    ens = pc.init_ensemble(jax.random.key(0), 4, x.shape[1], 3)
    trained, losses = pc.train_ensemble_streamed(ens, feats, y_train, key=jax.random.key(1), steps=150,
                                                 batch_size=64, chunk_pixels=256, chunk_steps=30)
    assert feats.most == 256
    labels, _ = pc.predict(trained, jnp.asarray(x[:300]))
    assert np.mean(np.asarray(labels) == y[:300]) > 0.95  # pixels it never trained on
    with pytest.raises(ValueError, match="no labelled pixel"):
        pc.train_ensemble_streamed(ens, x[:10], np.full(10, 255), key=jax.random.key(0), steps=1, batch_size=2)
    with pytest.raises(ValueError, match="chunk_pixels must be"):
        pc.train_ensemble_streamed(ens, x, y, key=jax.random.key(0), steps=1, batch_size=64, chunk_pixels=8)
