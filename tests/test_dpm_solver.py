"""DPM-Solver++ against exact answers: Gaussian moments, mixture weights, the
closed-form probability-flow map (convergence order), and its API contract."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
import gaussians
from diffjax.samplers.dpm_solver import dpm_solver_coefficients, step_orders
from exact_flow import gaussian_flow_map

GAUSS = gaussians.gaussian(dim=4, seed=0)


def _solve(sde, x, sampler, g=GAUSS):
    return dj.sample(g.score_fn(sde), sde, x, key=jax.random.key(1), sampler=sampler)


def _rms(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)))


@pytest.mark.parametrize("order,steps", [(1, 200), (2, 25), (3, 25)])
def test_gaussian_moments(order, steps):
    # First order (DDIM) shrinks the covariance by O(h): it needs more steps.
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (8192, 4))
    y, info = _solve(sde, x, dj.samplers.DPMSolverPP(steps=steps, order=order))
    assert info["nfe"] == steps
    # Sampling noise: the mean's std is ~ sqrt(2 / 8192) = 0.016.
    np.testing.assert_allclose(np.mean(y, 0), GAUSS.mean, atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(y).T), GAUSS.covariance, atol=0.12)


@pytest.mark.parametrize("order,steps", [(1, 500), (2, 50), (3, 50)])
def test_sde_variant_gaussian_moments(order, steps):
    # eta = 1: the reverse SDE, whose end law is the data law too. First order
    # shrinks the covariance ~10% at 100 steps (like ancestral sampling): it needs more.
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (8192, 4))
    y, info = _solve(sde, x, dj.samplers.DPMSolverPP(steps=steps, order=order, eta=1.0))
    assert info["nfe"] == steps
    np.testing.assert_allclose(np.mean(y, 0), GAUSS.mean, atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(y).T), GAUSS.covariance, atol=0.12)


def test_sde_first_order_step_is_the_ddpm_posterior():
    # eta = 1, order 1 from s to t: x_t ~ q(x_t | x_s, x0) with the predicted x0,
    # mean (alpha_s sigma_t^2 / (alpha_t sigma_s^2)) x_s + alpha_t (sigma_{s|t}^2 / sigma_s^2) x0,
    # std sigma_t sigma_{s|t} / sigma_s, sigma_{s|t}^2 = sigma_s^2 - (alpha_s / alpha_t)^2 sigma_t^2.
    sde = dj.VPSDE()
    ts = jnp.array([0.8, 0.3])
    c = np.asarray(dpm_solver_coefficients(sde, ts, np.array([1]), eta=1.0))[0]
    (a_s, a_t), (s_s, s_t) = (np.asarray(v) for v in sde.alpha_sigma(ts))
    var_st = s_s**2 - (a_s / a_t) ** 2 * s_t**2
    np.testing.assert_allclose(c, [a_s * s_t**2 / (a_t * s_s**2), a_t * var_st / s_s**2, 0, 0,
                                   s_t * np.sqrt(var_st) / s_s], rtol=1e-5, atol=1e-7)
    # eta = 0 keeps the ODE's coefficients and draws no noise.
    ode = np.asarray(dpm_solver_coefficients(sde, ts, np.array([1])))[0]
    assert ode[4] == 0 and np.isclose(ode[0], s_t / s_s)


def test_sde_variant_uses_the_key_and_the_ode_does_not():
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (16, 4))
    run = lambda sampler, k: dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(k), sampler=sampler)[0]
    sde_sampler, ode_sampler = dj.samplers.DPMSolverPP(10, eta=1.0), dj.samplers.DPMSolverPP(10)
    np.testing.assert_array_equal(run(sde_sampler, 3), run(sde_sampler, 3))
    assert _rms(run(sde_sampler, 3), run(sde_sampler, 4)) > 0.05
    np.testing.assert_array_equal(run(ode_sampler, 3), run(ode_sampler, 4))


def test_mixture_weights():
    mix = gaussians.mixture(dim=8, k=4, seed=0)
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (4096, 8))
    y, _ = _solve(sde, x, dj.samplers.DPMSolverPP(steps=20, order=2), g=mix)
    counts = np.bincount(np.argmax(mix.responsibilities(y), -1), minlength=4) / len(y)
    np.testing.assert_allclose(counts, mix.weights, atol=0.03)


def _convergence_slope(order, steps=(16, 32, 64, 128)):
    # float64 so the errors at 128 steps stay far above rounding.
    with jax.enable_x64(True):
        sde = dj.VPSDE()
        x = sde.prior_sample(jax.random.key(0), (32, 4), jnp.float64)
        exact = gaussian_flow_map(GAUSS, sde, x, sde.T, sde.eps)
        errors = [
            _rms(_solve(sde, x, dj.samplers.DPMSolverPP(n, order=order, lower_order_final=False))[0], exact)
            for n in steps
        ]
    return -np.polyfit(np.log(steps), np.log(errors), 1)[0], errors


def test_convergence_order_one_and_two():
    slope1, err1 = _convergence_slope(1)
    slope2, err2 = _convergence_slope(2)
    assert 0.85 < slope1 < 1.15, (slope1, err1)
    assert 1.75 < slope2 < 2.3, (slope2, err2)
    assert err2[-1] < err1[-1] / 20


def test_convergence_order_three():
    # 3M warms up with one first-order step, whose O(h^2) local error bounds the
    # global order by 2 asymptotically (true of the reference method as well);
    # it must still converge at least at second order and beat 2M.
    slope3, err3 = _convergence_slope(3)
    _, err2 = _convergence_slope(2)
    assert slope3 > 1.9, (slope3, err3)
    assert all(e3 < e2 for e3, e2 in zip(err3, err2)), (err3, err2)


def test_first_order_step_is_ddim():
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (16, 4))
    t_start, t_end = 0.8, 0.3
    y, _ = dj.sample(
        GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=dj.samplers.DPMSolverPP(1, order=1),
        t_start=t_start, t_end=t_end,
    )
    # DDIM (eta = 0): x_t = alpha_t x0_hat + sigma_t eps_hat, both from the score at t_start.
    t = jnp.full((16,), t_start)
    score = GAUSS.score(x, t, sde)
    a_s, s_s = sde.alpha_sigma(t_start)
    a_t, s_t = sde.alpha_sigma(t_end)
    eps = -s_s * score
    x0 = (x - s_s * eps) / a_s
    np.testing.assert_allclose(y, a_t * x0 + s_t * eps, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing,tol", [("logsnr", 0.02), ("uniform", 0.05), ("quadratic", 0.02)])
def test_each_spacing_approaches_exact_flow(spacing, tol):
    # Uniform-in-t steps are coarse in lambda near the data, hence the looser bound.
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (64, 4))
    exact = gaussian_flow_map(GAUSS, sde, x, sde.T, sde.eps)
    y, _ = _solve(sde, x, dj.samplers.DPMSolverPP(40, order=2, spacing=spacing))
    assert _rms(y, exact) < tol


@pytest.mark.parametrize("sde", [dj.VESDE(), dj.SubVPSDE(), dj.CosineVPSDE(), dj.DiscreteVPSDE()], ids=type)
def test_other_processes(sde):
    x = sde.prior_sample(jax.random.key(0), (64, 4))
    exact = gaussian_flow_map(GAUSS, sde, x, sde.T, sde.eps)
    y, _ = _solve(sde, x, dj.samplers.DPMSolverPP(50, order=3))
    assert _rms(y, exact) < 0.01


def test_step_orders_warm_up_and_lower_order_final():
    np.testing.assert_array_equal(step_orders(6, 3, True), [1, 2, 3, 3, 2, 1])
    np.testing.assert_array_equal(step_orders(6, 3, False), [1, 2, 3, 3, 3, 3])
    np.testing.assert_array_equal(step_orders(20, 2, True)[-3:], [2, 2, 2])  # only below 15 steps
    np.testing.assert_array_equal(step_orders(1, 3, True), [1])


@pytest.mark.parametrize("bad", [dict(order=4), dict(order=0), dict(steps=0), dict(steps=2.5), dict(spacing="cosine"),
                                 dict(eta=-0.1), dict(eta=1.5), dict(eta="sde")])
def test_bad_hyper_parameters_raise(bad):
    kwargs = dict(steps=10, order=2) | bad
    with pytest.raises(ValueError, match="order|steps|spacing|eta"):
        dj.samplers.DPMSolverPP(**kwargs)


def test_bad_order_message_names_allowed_values():
    with pytest.raises(ValueError, match=r"\(1, 2, 3\)"):
        dj.samplers.DPMSolverPP(10, order=5)


def test_no_retrace_on_second_call():
    sde = dj.VPSDE()
    sampler = dj.samplers.DPMSolverPP(8, order=2)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x, key):
        return dj.sample(GAUSS.score_fn(sde), sde, x, key=key, sampler=sampler)[0]

    run(jnp.ones((4, 4)), jax.random.key(0))
    run(jnp.zeros((4, 4)), jax.random.key(1))  # would raise on a retrace


def test_vmap_and_jit_agree():
    sde = dj.VPSDE()
    sampler = dj.samplers.DPMSolverPP(6, order=3)
    x = sde.prior_sample(jax.random.key(0), (3, 2, 4))
    fn = functools.partial(dj.sample, GAUSS.score_fn(sde), sde, key=jax.random.key(0), sampler=sampler)
    batched = jax.vmap(lambda xi: fn(xi)[0])(x)
    np.testing.assert_allclose(batched, jax.jit(lambda z: fn(z)[0])(x.reshape(6, 4)).reshape(3, 2, 4), atol=1e-5)
