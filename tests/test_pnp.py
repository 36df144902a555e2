"""Plug-and-play priors against exact answers: a Gaussian prior with its exact eps and a
quadratic constraint have a closed-form posterior mode (and closed-form fixed points of
each prior gradient); all linear algebra for the answers runs in numpy on the host."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.tasks.pnp import pnp_time_schedule
from gaussians import gaussian

SDE = dj.VPSDE()
PRIOR = gaussian(dim=4, seed=0)
_RNG = np.random.default_rng(1)
H = _RNG.normal(size=(2, 4))
Y = 3.0 * _RNG.normal(size=2)
TAU = 0.5


def exact_eps(x, t):
    _, sigma = SDE.alpha_sigma(t)
    return -sigma[:, None] * PRIOR.score(x, t, SDE)


def constraint(x):
    """-log N(y; H x, tau^2 I) summed over the batch rows."""
    return 0.5 * jnp.sum((x @ jnp.asarray(H.T, x.dtype) - jnp.asarray(Y, x.dtype)) ** 2) / TAU**2


def _closed_forms(t, kind="score", weight=1.0):
    """(posterior mode, fixed point of the averaged update at time t)."""
    cov, m = PRIOR.covariances[0], PRIOR.means[0]
    q, b = H.T @ H / TAU**2, H.T @ Y / TAU**2
    prec = np.linalg.inv(cov)
    mode = np.linalg.solve(prec + q, prec @ m + b)
    alpha, sigma = (float(v[0]) for v in SDE.alpha_sigma(jnp.array([t])))
    c_inv = np.linalg.inv(alpha**2 * cov + sigma**2 * np.eye(4))
    a = weight * (alpha * c_inv if kind == "score" else 2 * sigma**2 * alpha**2 * c_inv @ c_inv)
    return mode, np.linalg.solve(a + q, a @ m + b)


def _run(batch, **kwargs):
    fn = jax.jit(functools.partial(dj.tasks.plug_and_play, exact_eps, SDE, constraint, **kwargs))
    return np.asarray(fn(jnp.zeros((batch, 4)), key=jax.random.key(0)), np.float64)


def test_annealed_score_gradient_reaches_the_posterior_mode():
    t_min, batch = 0.05, 4096
    x = _run(batch, steps=300, learning_rate=0.05, t_schedule="linear", t_min=t_min)
    mode, fixed = _closed_forms(t_min)
    assert np.linalg.norm(fixed - mode) < 0.01  # the last level's fixed point is the mode
    standard_error = np.linalg.norm(x.std(0) / np.sqrt(batch))
    err = np.linalg.norm(x.mean(0) - mode)
    assert err < 4 * standard_error + 0.01, (err, standard_error)
    # The answer is neither the prior mean nor the constraint's own solution.
    assert np.linalg.norm(mode - PRIOR.means[0]) > 10 * err
    assert np.linalg.norm(mode - np.linalg.lstsq(H, Y, rcond=None)[0]) > 10 * err


def test_full_gradient_settles_at_its_closed_form_fixed_point():
    t, batch, steps = 0.3, 2048, 400
    x = _run(batch, steps=steps, learning_rate=0.01, t_schedule=np.full(steps, t, np.float32),
             prior_gradient="full", prior_weight=5.0)
    mode, fixed = _closed_forms(t, "full", 5.0)
    err = np.linalg.norm(x.mean(0) - fixed)
    assert err < 4 * np.linalg.norm(x.std(0) / np.sqrt(batch)) + 0.005
    assert np.linalg.norm(fixed - mode) > 5 * err  # a different answer from "score"'s


def test_noise_is_redrawn_at_every_step():
    """Model eps = 0, no constraint: x_K = sum_k lr eps_k / sigma_k exactly, whose variance
    is sum_k (lr / sigma_k)^2 only if every step draws new noise."""
    steps, lr, batch = 20, 0.01, 20000
    x = jax.jit(lambda k: dj.tasks.plug_and_play(
        lambda x, t: jnp.zeros_like(x), SDE, lambda x: 0.0 * jnp.sum(x), jnp.zeros((batch, 1)),
        key=k, steps=steps, learning_rate=lr, t_schedule="cosine"))(jax.random.key(3))
    _, sigma = SDE.alpha_sigma(jnp.asarray(pnp_time_schedule("cosine", steps, SDE.T, 0.05 * SDE.T)))
    expected = np.sum((lr / np.asarray(sigma, np.float64)) ** 2)
    assert abs(float(np.var(x)) / expected - 1) < 0.05


def test_one_trace_for_new_inputs_and_keys():
    traces = []

    def counting_eps(x, t):
        traces.append(1)
        return exact_eps(x, t)

    fn = jax.jit(functools.partial(dj.tasks.plug_and_play, counting_eps, SDE, constraint,
                                   steps=5, learning_rate=0.1, t_schedule="cosine"))
    fn(jnp.zeros((3, 4)), key=jax.random.key(0)).block_until_ready()
    n = len(traces)
    out = fn(jnp.ones((3, 4)), key=jax.random.key(1))
    assert len(traces) == n and out.shape == (3, 4) and np.all(np.isfinite(out))
    # vmap over keys works too.
    many = jax.vmap(lambda k: fn(jnp.zeros((3, 4)), key=k))(jax.random.split(jax.random.key(0), 2))
    assert many.shape == (2, 3, 4)


def test_schedules():
    lin = pnp_time_schedule("linear", 5, 1.0, 0.2)
    np.testing.assert_allclose(lin, [1.0, 0.8, 0.6, 0.4, 0.2], rtol=1e-6)
    cos = pnp_time_schedule("cosine", 5, 1.0, 0.2)
    assert cos[0] == pytest.approx(1.0) and cos[-1] == pytest.approx(0.2) and np.all(np.diff(cos) < 0)
    assert cos[1] > lin[1]  # slow start
    assert pnp_time_schedule("linear", 1, 0.7, 0.1).tolist() == [pytest.approx(0.7)]


@pytest.mark.parametrize("kwargs,match", [
    (dict(steps=0), r"steps must be an integer >= 1"),
    (dict(t_schedule="exp"), r"t_schedule must be one of"),
    (dict(t_schedule=np.full(4, 0.5)), r"shape \(steps,\) = \(3,\)"),
    (dict(t_schedule=np.array([0.2, 0.5, 0.9])), r"high to low"),
    (dict(t_schedule=np.array([1.5, 0.5, 0.1])), r"must lie in \(0, T=1.0\]"),
    (dict(t_schedule=np.array([0.5, 0.4, 0.3]), t_min=0.1), r"only apply to a named"),
    (dict(t_min=0.5, t_max=0.2), r"0 < t_min <= t_max"),
    (dict(t_max=2.0), r"exceeds the process's T"),
    (dict(learning_rate=-0.1), r"learning_rate must be positive"),
    (dict(learning_rate=np.ones(5)), r"learning_rate must be a scalar or shape"),
    (dict(prior_gradient="jacobian"), r"prior_gradient must be one of"),
])
def test_bad_arguments(kwargs, match):
    args = dict(key=jax.random.key(0), steps=3, learning_rate=0.1, t_schedule="linear") | kwargs
    with pytest.raises(ValueError, match=match):
        dj.tasks.plug_and_play(exact_eps, SDE, constraint, jnp.zeros((2, 4)), **args)


def test_bad_functions_and_inputs():
    kw = dict(key=jax.random.key(0), steps=2, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"eps_fn\(x, t\) must return x's shape \(2, 4\)"):
        dj.tasks.plug_and_play(lambda x, t: x[:, :2], SDE, constraint, jnp.zeros((2, 4)), **kw)
    with pytest.raises(ValueError, match=r"constraint_fn\(x\) must return a scalar"):
        dj.tasks.plug_and_play(exact_eps, SDE, lambda x: jnp.sum(x, 1), jnp.zeros((2, 4)), **kw)
    with pytest.raises(ValueError, match=r"x_init must be a float array"):
        dj.tasks.plug_and_play(exact_eps, SDE, constraint, jnp.zeros((2, 4), jnp.int32), **kw)
