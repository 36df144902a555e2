"""The two uses of plug-and-play priors, against checkable answers: a classifier constraint
on an exact Gaussian prior reaches the (numerically solved, convex) posterior mode, and a
smooth Gaussian prior over label maps repairs a pixel classifier's isolated errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import diffjax as dj
from diffjax.tasks.pnp import classifier_constraint, label_map_constraint, refine_segmentation
from gaussians import gaussian

SDE = dj.VPSDE()
PRIOR = gaussian(dim=4, seed=0)
_RNG = np.random.default_rng(2)
W = 1.5 * _RNG.normal(size=(4, 3))  # a linear 3-class classifier
B = _RNG.normal(size=3)
TARGET = int(np.argmin(PRIOR.means[0] @ W + B))  # the class the prior mean is least like
LAMBDA = 2.0


def exact_eps(x, t):
    _, sigma = SDE.alpha_sigma(t)
    return -sigma[:, None] * PRIOR.score(x, t, SDE)


def log_probs(x):
    return jax.nn.log_softmax(x @ jnp.asarray(W, x.dtype) + jnp.asarray(B, x.dtype), axis=-1)


def test_classifier_constraint_settles_at_the_closed_form_fixed_point():
    """A convex problem: the averaged "score" update at a level t has its fixed point where
    ``alpha_t C_t^{-1} (x - m) = LAMBDA grad log p(TARGET | x)`` (solved here by BFGS)."""
    t_end = 0.3
    cov, m = PRIOR.covariances[0], PRIOR.means[0]
    alpha, sigma = (float(v[0]) for v in SDE.alpha_sigma(jnp.array([t_end])))
    a = alpha * np.linalg.inv(alpha**2 * cov + sigma**2 * np.eye(4))

    def objective(x):
        z = x @ W + B
        log_p = z[TARGET] - np.log(np.sum(np.exp(z - z.max()))) - z.max()
        return 0.5 * (x - m) @ a @ (x - m) - LAMBDA * log_p

    fixed = minimize(objective, m, method="BFGS", options={"gtol": 1e-10}).x
    # The paper's anneal from t = 1, then a tail at t_end whose decaying step lets the
    # noisy iterates settle (their mean is biased by the noise under a non-quadratic
    # constraint, less so as the step shrinks).
    times = np.concatenate([np.linspace(1.0, t_end, 300), np.full(1000, t_end)]).astype(np.float32)
    rates = np.concatenate([np.full(300, 0.05), np.geomspace(0.05, 0.002, 1000)]).astype(np.float32)
    batch = 2048
    run = jax.jit(functools.partial(dj.tasks.plug_and_play, exact_eps, SDE,
                                    classifier_constraint(log_probs, TARGET, LAMBDA),
                                    steps=1300, learning_rate=rates, t_schedule=times))
    x = np.asarray(run(jnp.zeros((batch, 4)), key=jax.random.key(0)), np.float64)
    err = np.linalg.norm(x.mean(0) - fixed)
    assert err < 0.03, (err, x.mean(0), fixed)
    assert np.linalg.norm(fixed - m) > 10 * err  # the classifier moved the answer
    p_target = np.exp(np.asarray(log_probs(jnp.asarray(x, jnp.float32))))[:, TARGET]
    p_prior_mean = np.exp(np.asarray(log_probs(jnp.asarray(m[None], jnp.float32))))[0, TARGET]
    assert np.median(p_target) > 0.5 > p_prior_mean


def test_classifier_constraint_values():
    x = jnp.asarray(_RNG.normal(size=(3, 4)), jnp.float32)
    c = classifier_constraint(log_probs, jnp.array([0, 1, 2]), weight=0.5)
    want = -0.5 * sum(float(log_probs(x)[i, i]) for i in range(3))
    assert float(c(x)) == pytest.approx(want, rel=1e-5)


def _smooth_prior(side, channels, length=2.0):
    """A zero-mean Gaussian over (side, side, channels) maps, each channel smooth in space."""
    yy, xx = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float64)
    d2 = ((pts[:, None] - pts[None]) ** 2).sum(-1)
    lam, u = np.linalg.eigh(np.exp(-d2 / (2 * length**2)) + 1e-3 * np.eye(side * side))
    u, lam = jnp.asarray(u, jnp.float32), jnp.asarray(lam, jnp.float32)

    def eps(x, t):  # sigma C_t^{-1} x_t, C_t = alpha^2 S + sigma^2 I, per channel (matmuls only)
        alpha, sigma = SDE.alpha_sigma(t)
        flat = x.reshape(x.shape[0], side * side, channels)
        coef = jnp.einsum("pq,bpc->bqc", u, flat)
        coef = coef / (alpha[:, None, None] ** 2 * lam[None, :, None] + sigma[:, None, None] ** 2)
        return (sigma[:, None, None] * jnp.einsum("pq,bqc->bpc", u, coef)).reshape(x.shape)

    return eps


def test_refinement_repairs_isolated_errors_of_a_pixel_classifier():
    side, k = 12, 2
    truth = np.zeros((side, side), np.int32)
    truth[:, side // 2:] = 1
    rng = np.random.default_rng(0)
    flipped = rng.random((4, side, side)) < 0.1
    believed = np.where(flipped, 1 - truth, truth)
    probs = np.where(jax.nn.one_hot(believed, k) > 0, 0.8, 0.2)
    log_p = jnp.asarray(np.log(probs), jnp.float32)
    before = np.mean(believed == truth)
    refined = np.asarray(jax.jit(lambda lp, key: refine_segmentation(_smooth_prior(side, k), SDE, lp, key=key))(
        log_p, jax.random.key(0)))
    after = np.mean(refined == truth)
    assert before < 0.92 and after > 0.97, (before, after)
    # Without the prior the refinement keeps the classifier's labels exactly.
    same = refine_segmentation(lambda x, t: jnp.zeros_like(x), SDE, log_p, key=jax.random.key(0), steps=1,
                               learning_rate=1e-6)
    np.testing.assert_array_equal(np.asarray(same), believed)


def test_label_map_constraint_is_the_expected_log_likelihood():
    log_p = jnp.log(jnp.asarray([[[[0.7, 0.3], [0.1, 0.9]]]]))
    x = jnp.asarray([[[[1.0, -1.0], [0.0, 0.0]]]])
    q = jax.nn.softmax(x / 0.5, axis=-1)
    assert float(label_map_constraint(log_p, 2.0, 0.5)(x)) == pytest.approx(float(-2.0 * jnp.sum(q * log_p)), 1e-6)


@pytest.mark.slow
def test_make_it_a_bag_benchmark_smoke(tmp_path):
    """benchmarks/pnp_bag.py end to end on a tiny unconditional run of every class; a class-filtered run is refused."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    import pnp_bag

    config = os.path.join(root, "configs", "translation_fashion_mnist.py") + ":score_smoke"
    small = {"data.image_size": 16, "training.num_steps": 4, "training.ckpt_every": 4, "training.sample_every": 0,
             "eval.enabled": False, "training.progress_bar": False, "sampling.steps": 3, "sampling.batch_size": 4}
    every_class, boots = str(tmp_path / "all"), str(tmp_path / "boots")
    dj.train(config, every_class, dict(small, **{"data.classes": ()}))
    out = str(tmp_path / "bag.png")
    summary = pnp_bag.main(["--workdir", every_class, "--smoke", "--out", out])
    assert [r["method"] for r in summary["rows"]] == ["unconditional", "classifier only", "plug-and-play"]
    for row in summary["rows"]:
        assert 0 <= row["guide_share"] <= 1 and 0 <= row["judge_share"] <= 1 and np.isfinite(row["fd_alexnet"])
    assert os.path.getsize(out) > 500
    dj.train(config, boots, small)  # ankle boots only: not a model of every class
    with pytest.raises(ValueError, match="unconditional Fashion-MNIST run of every class"):
        pnp_bag.main(["--workdir", boots, "--smoke", "--out", out])
