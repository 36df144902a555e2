"""EGSDE: zero energy is SDEdit; an exact-gradient energy shifts the mean as predicted.

Gaussian data ``N(m, U diag(d) U^T)`` with exact score. A linear energy
``E(y) = b . y`` turns the reverse SDE's drift ``f y - g^2 score`` into
``f y - g^2 (score - b)``. With the same key the guided and unguided runs share
their noise, so their difference ``delta`` follows the deterministic linear ODE
``d delta/dt = (f + g^2 P_t^-1) delta + g^2 b`` from ``delta(t0) = 0`` down to
``eps`` (``P_t`` the marginal covariance), which the test integrates in float64
on a fine grid in the eigenbasis of ``P_t``.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.samplers import DDIM, EulerMaruyama
from diffjax.sde import VPSDE
from diffjax.tasks.egsde import cosine_similarity_energy, egsde_energy, low_pass
from diffjax.tasks.sdedit import DEFAULT_SAMPLER
from gaussians import gaussian

DIM = 4
MODEL = gaussian(DIM, seed=5)
B_VEC = np.array([0.6, -0.4, 0.3, 0.8])


def _predicted_shift(sde, t0, b, n_grid=20000):
    """Float64 Euler integration of the shift ODE backwards from t0 to eps."""
    u, d = MODEL.eigvecs[0], MODEL.eigvals[0]
    ts = np.linspace(t0, sde.eps, n_grid + 1)
    tj = jnp.asarray(ts, jnp.float32)
    drift, g = sde.sde(jnp.ones((len(ts), 1)), tj)
    f, g2 = np.asarray(drift[:, 0], np.float64), np.asarray(g, np.float64) ** 2
    alpha, sigma = (np.asarray(v, np.float64) for v in sde.alpha_sigma(tj))
    b_eig = u.T @ b
    delta = np.zeros(DIM)
    for i in range(n_grid):
        h = ts[i] - ts[i + 1]
        p = alpha[i] ** 2 * d + sigma[i] ** 2
        delta = delta - h * ((f[i] + g2[i] / p) * delta + g2[i] * b_eig)
    return u @ delta


def _linear_energy(y, x_t, t):
    return y @ jnp.asarray(B_VEC, y.dtype)


@pytest.mark.parametrize("sampler", [EulerMaruyama(400), DEFAULT_SAMPLER], ids=["euler_maruyama", "default"])
def test_linear_energy_shifts_the_mean_as_predicted(sampler):
    """The reverse SDE's mean moves by g^2 dt grad E per step (the paper's scale), also with the
    default data-prediction sampler (SDE-DPM-Solver++ 2M, 50 steps), which sees the energy only
    through the score it turns into a clean-image estimate."""
    sde, t0, n = VPSDE(), 0.5, 256
    source = jnp.asarray(np.tile(MODEL.means[0] + 1.0, (n, 1)), jnp.float32)
    score = MODEL.score_fn(sde)
    key = jax.random.key(3)
    guided = np.asarray(dj.tasks.egsde(score, sde, source, key=key, energy_fn=_linear_energy, t0=t0, sampler=sampler))
    plain = np.asarray(dj.tasks.sdedit(score, sde, source, key=key, t0=t0, sampler=sampler))
    predicted = _predicted_shift(sde, t0, B_VEC)
    shift = guided - plain  # the same noise: every example moves by the same vector
    assert np.abs(predicted).max() > 0.2  # a shift worth measuring
    np.testing.assert_allclose(shift.mean(0), predicted, rtol=0.02, atol=0.01)
    np.testing.assert_allclose(shift, np.broadcast_to(shift.mean(0), shift.shape), atol=1e-3)


def test_zero_energy_is_sdedit_with_the_same_key():
    sde = VPSDE()
    images = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    score = lambda x, t: -x * (1.0 + 0.1 * jnp.tanh(x))  # noqa: E731 (a nonlinear toy score)
    energy = egsde_energy(None, lambda_s=0.0, lambda_i=0.0, down_factor=4)
    key = jax.random.key(7)
    a = dj.tasks.egsde(score, sde, images, key=key, energy_fn=energy, t0=0.5)
    b = dj.tasks.sdedit(score, sde, images, key=key, t0=0.5)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # And a nonzero energy changes the output.
    c = dj.tasks.egsde(score, sde, images, key=key, energy_fn=egsde_energy(None, lambda_s=0.0, lambda_i=2.0, down_factor=4))
    assert np.abs(np.asarray(c) - np.asarray(a)).max() > 1e-2


def test_energy_sees_the_source_on_the_start_trajectory():
    """x_t is the source perturbed with the start's noise: at t0 it is the starting state itself."""
    sde, t0 = VPSDE(), 0.5
    source = jnp.asarray(np.tile(MODEL.means[0], (3, 1)), jnp.float32)
    seen = []

    def energy_fn(y, x_t, t):
        jax.debug.callback(lambda *a: seen.append([np.asarray(v) for v in a]), y, x_t, t)
        return jnp.zeros(y.shape[:1], y.dtype)

    dj.tasks.egsde(MODEL.score_fn(sde), sde, source, key=jax.random.key(1), energy_fn=energy_fn, t0=t0, sampler=DDIM(5))
    assert len(seen) == 5
    y0, xt0, tt0 = seen[0]
    np.testing.assert_allclose(tt0, t0)
    np.testing.assert_allclose(y0, xt0, atol=1e-6)
    noises = []
    for _, x_t, t in seen:
        alpha, sigma = (np.asarray(v)[:, None] for v in sde.alpha_sigma(jnp.asarray(t)))
        noises.append((x_t - alpha * MODEL.means[0]) / sigma)
    np.testing.assert_allclose(np.stack(noises), np.broadcast_to(noises[0], (5,) + noises[0].shape), atol=1e-4)


def test_paper_energy_terms():
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    # Low-pass: a constant image passes unchanged; the output is smoother than the input.
    const = jnp.full((1, 8, 8, 1), 0.3)
    np.testing.assert_allclose(low_pass(const, 4), const, atol=1e-5)
    lp = low_pass(x, 4)
    assert float(jnp.abs(jnp.diff(lp, axis=1)).mean()) < 0.5 * float(jnp.abs(jnp.diff(x, axis=1)).mean())
    # Cosine similarity: 1 for the same features, -1 for opposite, scale-free.
    np.testing.assert_allclose(cosine_similarity_energy(x, 3.0 * x), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(cosine_similarity_energy(x, -x), [-1.0, -1.0], rtol=1e-5)
    feat = lambda y, t: jnp.tanh(y)  # noqa: E731
    t = jnp.full((2,), 0.5)
    e = egsde_energy(feat, lambda_s=500.0, lambda_i=2.0, down_factor=4)(x, x, t)
    np.testing.assert_allclose(e, [500.0, 500.0], rtol=1e-5)  # E_i = 0 at y = x_t
    e_i = egsde_energy(None, lambda_s=0.0, lambda_i=2.0, down_factor=4)(x, jnp.zeros_like(x), t)
    np.testing.assert_allclose(e_i, 2.0 * jnp.sum(lp**2, axis=(1, 2, 3)), rtol=1e-5)


def test_domain_energy_reads_the_classifier_at_the_current_time():
    """E_s compares the features of y and of x_t both at the step's own t (a time-dependent classifier)."""
    y = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
    x_t = jax.random.normal(jax.random.key(2), (2, 8, 8, 1))
    t = jnp.asarray([0.2, 0.7])

    def feat(z, tt):  # channel 0 the image, channel 1 the time: the similarity depends on both
        return jnp.concatenate([z, jnp.broadcast_to(3.0 * tt[:, None, None, None], z.shape)], axis=-1)

    def expected(tt_y, tt_x):
        a, b = np.asarray(feat(y, tt_y)), np.asarray(feat(x_t, tt_x))
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        return 7.0 * cos.reshape(2, -1).mean(1)

    e = egsde_energy(feat, lambda_s=7.0, lambda_i=0.0)(y, x_t, t)
    np.testing.assert_allclose(e, expected(t, t), rtol=1e-5)
    assert np.abs(expected(t, t) - expected(jnp.zeros(2), jnp.zeros(2))).min() > 0.05  # t matters here


def test_jit_no_retrace():
    sde = VPSDE()
    traces = []

    def score(x, t):
        traces.append(1)
        return -x

    energy = egsde_energy(lambda y, t: y, lambda_s=5.0, lambda_i=2.0, down_factor=4)
    fn = jax.jit(partial(dj.tasks.egsde, score, sde, energy_fn=energy, sampler=DDIM(4)))
    x = jnp.zeros((2, 8, 8, 1))
    fn(x, key=jax.random.key(0), t0=0.5)
    n = len(traces)
    fn(x + 0.5, key=jax.random.key(1), t0=0.3)
    assert len(traces) == n


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(source=np.zeros((2, DIM), np.int32)), "floating"),
        (dict(t0=2.0), "t0 must lie"),
        (dict(energy_fn="cosine"), "energy_fn"),
    ],
)
def test_bad_inputs(kwargs, match):
    sde = VPSDE()
    args = dict(source=np.zeros((2, DIM), np.float32), energy_fn=_linear_energy)
    args.update(kwargs)
    source = args.pop("source")
    with pytest.raises(ValueError, match=match):
        dj.tasks.egsde(MODEL.score_fn(sde), sde, source, key=jax.random.key(0), **args)
    with pytest.raises(ValueError):
        egsde_energy(None, lambda_s=1.0)
    with pytest.raises(ValueError):
        low_pass(jnp.zeros((1, 8, 8, 1)), 3)
