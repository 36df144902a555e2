"""UniPC and the new time grids against exact answers: the closed-form Gaussian flow
(convergence orders p + 1), a hand-computed two-step run, Gaussian moments at 20
steps, mixture weights at 8, EDM's sigma spacing and the fitted grids."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
import gaussians
from diffjax.samplers import schedules
from exact_flow import gaussian_flow_map

GAUSS = gaussians.gaussian(dim=4, seed=0)
UniPC = dj.samplers.UniPC


def _rms(a, b):
    return float(jnp.sqrt(jnp.mean((a - b) ** 2)))


def _errors(order, steps=(16, 32, 64, 128)):
    # float64 so the errors at 128 steps stay far above rounding.
    with jax.enable_x64(True):
        sde = dj.VPSDE()
        x = sde.prior_sample(jax.random.key(0), (32, 4), jnp.float64)
        exact = gaussian_flow_map(GAUSS, sde, x, sde.T, sde.eps)
        errs = []
        for n in steps:
            sampler = UniPC(n, order=order, spacing="logsnr", lower_order_final=False)
            errs.append(_rms(dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=sampler)[0], exact))
    return np.array(errs), -np.polyfit(np.log(steps), np.log(errs), 1)[0]


def test_convergence_orders_are_one_above_the_predictor():
    # UniC-p lifts UniP-p to order p + 1. Order 3 is capped near 3 by its
    # lower-order warm-up steps (as 3M is capped at 2), but must beat order 2.
    e1, s1 = _errors(1)
    e2, s2 = _errors(2)
    e3, s3 = _errors(3)
    assert 1.8 < s1 < 2.2, (s1, e1)
    assert 2.7 < s2 < 3.3, (s2, e2)
    assert s3 > 3.0, (s3, e3)
    assert np.all(e3 < e2) and np.all(e2 < e1), (e1, e2, e3)


def test_two_first_order_steps_by_hand():
    # Order 1, bh2: the corrector turns the DDIM step into the trapezoid in x0,
    # x_1 = (s_1/s_0) x_0 - a_1 phi (m_0 + m_1) / 2 with m_1 taken at the DDIM
    # prediction; the last step is plain DDIM from (x_1, m_1).
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (16, 4))
    ts = jnp.array([0.8, 0.55, 0.3])  # uniform grid
    sampler = UniPC(2, order=1, spacing="uniform", lower_order_final=False)
    y, info = dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=sampler, t_start=0.8, t_end=0.3)
    assert info["nfe"] == 2

    def x0_at(x, t):
        tv = jnp.full((x.shape[0],), t)
        a, s = sde.alpha_sigma(t)
        return (x + s**2 * GAUSS.score(x, tv, sde)) / a

    (a0, a1, a2), (s0, s1, s2) = sde.alpha_sigma(ts)
    lam = np.log(np.array([a0, a1, a2]) / np.array([s0, s1, s2]))
    phi_a, phi_b = np.expm1(-(lam[1] - lam[0])), np.expm1(-(lam[2] - lam[1]))
    m0 = x0_at(x, 0.8)
    x1_pred = s1 / s0 * x - a1 * phi_a * m0
    m1 = x0_at(x1_pred, 0.55)
    x1 = s1 / s0 * x - a1 * phi_a * 0.5 * (m0 + m1)
    expected = s2 / s1 * x1 - a2 * phi_b * m1
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["logsnr", "karras", "fitted"])
def test_gaussian_moments_at_twenty_steps(spacing):
    # At 20 steps (order 2) the samples sit within 0.03 RMS of the exact flow of the
    # same draws (measured 0.009 / 0.026 / 0.010); at 10 steps they are 0.04-0.09 away
    # and the covariance is 10-20% too large, so 10 steps is not a moment test.
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (8192, 4))
    y, info = dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=UniPC(20, spacing=spacing))
    assert info["nfe"] == 20
    # Sampling noise: the mean's std is ~ sqrt(2 / 8192) = 0.016; the exact flow's own
    # sample covariance is 0.044 off (max entry) on these draws.
    np.testing.assert_allclose(np.mean(y, 0), GAUSS.mean, atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(y).T), GAUSS.covariance, atol=0.13)
    assert _rms(y, gaussian_flow_map(GAUSS, sde, x, sde.T, sde.eps)) < 0.03


def test_mixture_weights_with_default_arguments():
    mix = gaussians.mixture(dim=8, k=4, seed=0)
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (4096, 8))
    y, _ = dj.sample(mix.score_fn(sde), sde, x, key=jax.random.key(1), sampler=UniPC(8))
    counts = np.bincount(np.argmax(mix.responsibilities(y), -1), minlength=4) / len(y)
    np.testing.assert_allclose(counts, mix.weights, atol=0.03)


def test_karras_grid_is_edm_sigma_spacing():
    sde = dj.VPSDE()
    ts = dj.samplers.time_grid(sde, sde.T, sde.eps, 6, "karras")
    alpha, sigma = sde.alpha_sigma(ts)
    root = np.asarray((sigma / alpha) ** (1 / 7), np.float64)
    np.testing.assert_allclose(np.diff(root), np.full(6, (root[-1] - root[0]) / 6), rtol=2e-3)
    assert float(ts[0]) == sde.T and float(ts[-1]) == pytest.approx(sde.eps)


def test_fitted_grids_are_decreasing_and_interpolate():
    sde = dj.VPSDE()
    for family, table in schedules.FITTED.items():
        for steps in sorted(table) + [9, 30]:
            frac = schedules.fitted_fractions(family, steps)
            assert frac.shape == (steps + 1,) and frac[0] == 0 and frac[-1] == 1
            assert np.all(np.diff(frac) > 0), (family, steps, frac)
    ts = dj.samplers.time_grid(sde, sde.T, sde.eps, 7, "fitted", fitted_for="unipc3")
    assert np.all(np.diff(np.asarray(ts)) < 0)
    with pytest.raises(ValueError, match="fitted_for"):
        dj.samplers.time_grid(sde, sde.T, sde.eps, 7, "fitted")
    with pytest.raises(ValueError, match="no fitted schedule"):
        schedules.fitted_fractions("heun", 7)


def test_samplers_without_a_fitted_grid_refuse_it():
    with pytest.raises(ValueError, match="Heun has no fitted schedule"):
        dj.samplers.Heun(5, spacing="fitted")
    with pytest.raises(ValueError, match="no fitted schedule for 'unipc1'"):
        UniPC(5, order=1, spacing="fitted")


@pytest.mark.parametrize("bad", [dict(order=4), dict(order=True), dict(steps=0), dict(spacing="cosine"),
                                 dict(variant="bh3"), dict(lower_order_final=1)])
def test_bad_hyper_parameters_raise(bad):
    with pytest.raises(ValueError, match="order|steps|spacing|variant|lower_order_final"):
        UniPC(**(dict(steps=10) | bad))


def test_unipc_no_retrace_on_second_call():
    sde = dj.VPSDE()
    sampler = UniPC(6)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run_unipc(x, key):
        return dj.sample(GAUSS.score_fn(sde), sde, x, key=key, sampler=sampler)[0]

    run_unipc(jnp.ones((4, 4)), jax.random.key(0))
    run_unipc(jnp.zeros((4, 4)), jax.random.key(1))  # would raise on a retrace
