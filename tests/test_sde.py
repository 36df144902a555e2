"""Forward processes against closed forms and against simulation of their own SDE."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from xla_levels import DEFAULT_XLA

PROCESSES = {
    "vp": dj.VPSDE(beta_min=0.1, beta_max=20.0),
    "subvp": dj.SubVPSDE(beta_min=0.1, beta_max=20.0),
    "ve": dj.VESDE(sigma_min=0.01, sigma_max=50.0),
    "cosine": dj.CosineVPSDE(),
    "discrete": dj.DiscreteVPSDE(num_steps=1000),
}


@pytest.fixture(params=list(PROCESSES), ids=list(PROCESSES))
def sde(request):
    return PROCESSES[request.param]


def _closed_form_alpha_sigma(sde, t: np.ndarray):
    """alpha(t), sigma(t) written from the papers' formulas in numpy float64."""
    if isinstance(sde, (dj.VPSDE, dj.SubVPSDE)):
        alpha = np.exp(-0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min)
        sigma = np.sqrt(1 - alpha**2) if isinstance(sde, dj.VPSDE) else 1 - alpha**2
        return alpha, sigma
    if isinstance(sde, dj.VESDE):
        return np.ones_like(t), sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    if isinstance(sde, dj.CosineVPSDE):
        f = lambda u: np.cos(0.5 * np.pi * (u + sde.s) / (1 + sde.s)) ** 2
        alpha = np.sqrt(f(t) / f(0.0))
        return alpha, np.sqrt(1 - alpha**2)
    if isinstance(sde, dj.DiscreteVPSDE):
        betas = np.linspace(sde.beta_start, sde.beta_end, sde.num_steps)
        grid_t = np.concatenate([[0.0], np.arange(1, sde.num_steps + 1) / sde.num_steps])
        grid_log_alpha = np.concatenate([[0.0], 0.5 * np.log(np.cumprod(1 - betas))])
        alpha = np.exp(np.interp(t, grid_t, grid_log_alpha))
        return alpha, np.sqrt(1 - alpha**2)
    raise AssertionError(type(sde))


def test_alpha_sigma_match_closed_form(sde):
    t = np.linspace(sde.eps, sde.T, 37)
    with jax.enable_x64(True):
        alpha, sigma = sde.alpha_sigma(jnp.asarray(t))
        want_alpha, want_sigma = _closed_form_alpha_sigma(sde, t)
        np.testing.assert_allclose(alpha, want_alpha, rtol=1e-10)
        np.testing.assert_allclose(sigma, want_sigma, rtol=1e-8)
        x0 = jnp.asarray(np.random.default_rng(0).normal(size=(37, 3)))
        mean, std = sde.marginal_prob(x0, jnp.asarray(t))
        np.testing.assert_allclose(mean, want_alpha[:, None] * np.asarray(x0), rtol=1e-10)
        np.testing.assert_allclose(std, want_sigma, rtol=1e-8)


def test_log_snr_round_trip(sde):
    with jax.enable_x64(True):
        t = jnp.linspace(sde.eps, sde.T, 101)
        alpha, sigma = sde.alpha_sigma(t)
        lam = sde.log_snr(t)
        np.testing.assert_allclose(lam, np.log(np.asarray(alpha) / np.asarray(sigma)), rtol=1e-10, atol=1e-12)
        assert np.all(np.diff(np.asarray(lam)) < 0), "log-SNR must decrease in t"
        np.testing.assert_allclose(sde.t_from_log_snr(lam), t, rtol=1e-7, atol=1e-9)


def test_sde_coefficients_generate_the_marginals(sde):
    """f = (d log alpha / dt) x and g^2 = d sigma^2/dt - 2 (d log alpha/dt) sigma^2.

    These are the exact conditions under which dx = f dt + g dW has the marginals
    alpha x0 + sigma noise; checked with autodiff of alpha_sigma at interior times
    (mid-cell for the piecewise-linear discrete schedule).
    """
    with jax.enable_x64(True):
        if isinstance(sde, dj.DiscreteVPSDE):
            t = (jnp.arange(3, 990, 97) + 0.5) / sde.num_steps
        else:
            t = jnp.linspace(sde.eps + 0.01, 0.98 * sde.T, 23)
        log_alpha = lambda u: jnp.log(sde.alpha_sigma(u)[0])
        var = lambda u: sde.alpha_sigma(u)[1] ** 2
        dlog_alpha = jax.vmap(jax.grad(log_alpha))(t)
        dvar = jax.vmap(jax.grad(var))(t)
        x = jnp.ones((t.shape[0], 2))
        drift, diffusion = sde.sde(x, t)
        np.testing.assert_allclose(drift, dlog_alpha[:, None] * x, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(diffusion**2, dvar - 2 * dlog_alpha * var(t), rtol=1e-6, atol=1e-12)


def test_marginals_match_simulated_forward_sde(sde):
    """Many Euler-Maruyama paths of sde.sde from a fixed x0 reproduce marginal_prob's moments."""
    n, steps = 20000, 2000
    t_max = 0.9 * sde.T
    x0 = jnp.array([1.5, -0.5])
    alpha0, sigma0 = sde.alpha_sigma(jnp.zeros(()))  # VE's data already carries sigma_min
    init_key, key = jax.random.split(jax.random.key(0))
    x_init = alpha0 * x0 + sigma0 * jax.random.normal(init_key, (n, 2))
    dt = t_max / steps
    checkpoints = [steps // 4, steps // 2, steps]

    @functools.partial(jax.jit, compiler_options=DEFAULT_XLA)  # 2,000 steps: run time, not compile time
    def simulate(x):
        def body(x, i):
            t = jnp.full((n,), i * dt)
            drift, diffusion = sde.sde(x, t)
            z = jax.random.normal(jax.random.fold_in(key, i), x.shape)
            x = x + drift * dt + diffusion[:, None] * math.sqrt(dt) * z
            return x, (jnp.mean(x, 0), jnp.std(x, 0))

        _, moments = jax.lax.scan(body, x, jnp.arange(steps))
        return moments

    means, stds = simulate(x_init)
    for k in checkpoints:
        t = jnp.full((1,), k * dt)
        want_mean, want_std = sde.marginal_prob(x0[None], t)
        sigma = float(want_std[0])
        # 5 standard errors of the Monte Carlo estimate, plus 2% for the Euler bias.
        np.testing.assert_allclose(means[k - 1], want_mean[0], atol=5 * sigma / math.sqrt(n) + 0.02 * sigma)
        np.testing.assert_allclose(stds[k - 1], sigma, rtol=5 / math.sqrt(2 * n) + 0.02)


def test_prior_sample_and_logp(sde):
    shape = (40000, 3)
    z = sde.prior_sample(jax.random.key(1), shape)
    assert z.shape == shape and z.dtype == jnp.float32
    _, sigma_T = _closed_form_alpha_sigma(sde, np.array([sde.T]))
    scale = sde.sigma_max if isinstance(sde, dj.VESDE) else 1.0
    if not isinstance(sde, dj.VESDE):
        # The N(0, I) prior is a good match of the VP marginal at T.
        assert sigma_T[0] > 0.99
    z = np.asarray(z, np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=5 * scale / math.sqrt(shape[0]))
    np.testing.assert_allclose(z.std(0), scale, rtol=5 / math.sqrt(2 * shape[0]))

    pts = np.random.default_rng(0).normal(size=(5, 2, 3)) * scale
    want = np.sum(-0.5 * np.log(2 * np.pi * scale**2) - pts.reshape(5, -1) ** 2 / (2 * scale**2), axis=-1)
    np.testing.assert_allclose(sde.prior_logp(jnp.asarray(pts, jnp.float32)), want, rtol=1e-5)


def test_reverse_and_probability_flow_drifts(sde):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    score = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    t = jnp.linspace(sde.eps, 0.9 * sde.T, 6)
    f, g = sde.sde(x, t)
    assert f.shape == x.shape and g.shape == (6,)
    np.testing.assert_allclose(sde.reverse_drift(x, t, score), f - (g**2)[:, None] * score, rtol=1e-6)
    np.testing.assert_allclose(sde.probability_flow_drift(x, t, score), f - 0.5 * (g**2)[:, None] * score, rtol=1e-6)


def test_discrete_schedule_hits_ddpm_alphas_cumprod():
    sde = dj.DiscreteVPSDE(num_steps=1000, beta_start=1e-4, beta_end=0.02)
    betas = np.linspace(1e-4, 0.02, 1000)
    alphas_cumprod = np.cumprod(1.0 - betas)
    with jax.enable_x64(True):
        t_n = jnp.arange(1, 1001) / 1000.0
        alpha, sigma = sde.alpha_sigma(t_n)
        np.testing.assert_allclose(np.asarray(alpha) ** 2, alphas_cumprod, rtol=1e-12)
        np.testing.assert_allclose(np.asarray(sigma) ** 2, 1 - alphas_cumprod, rtol=1e-10)
        np.testing.assert_allclose(sde.timestep(t_n), np.arange(1000), atol=1e-9)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: dj.VPSDE(beta_min=-1.0), "beta_min"),
        (lambda: dj.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min < beta_max"),
        (lambda: dj.SubVPSDE(beta_min=2.0, beta_max=2.0), "beta_min < beta_max"),
        (lambda: dj.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: dj.VESDE(sigma_min=10.0, sigma_max=1.0), "sigma_min < sigma_max"),
        (lambda: dj.CosineVPSDE(T=1.0), "T < 1"),
        (lambda: dj.DiscreteVPSDE(num_steps=1), "num_steps"),
        (lambda: dj.DiscreteVPSDE(beta_start=0.5, beta_end=0.1), "beta_start < beta_end"),
        (lambda: dj.VPSDE(eps=1.0), "eps < T"),
        (lambda: dj.VESDE(eps=0.0), "eps < T"),
    ],
)
def test_bad_hyper_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_discretize_is_the_exact_forward_transition():
    """x_t = x_s + f + G z reproduces q(x_t | x_s): mean ratio alpha_t/alpha_s and
    variance sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2; for VE that is score_sde's
    G^2 = sigma_t^2 - sigma_s^2, for VP DDPM's 1 - beta step."""
    with jax.enable_x64(True):
        for sde in (dj.VPSDE(), dj.SubVPSDE(), dj.VESDE(), dj.CosineVPSDE(), dj.DiscreteVPSDE()):
            t = jnp.array([0.3, 0.7], jnp.float64)
            dt = 0.01
            x = jnp.ones((2, 3), jnp.float64)
            f, g = sde.discretize(x, t, dt)
            a_t, s_t = sde.alpha_sigma(t)
            a_s, s_s = sde.alpha_sigma(t - dt)
            np.testing.assert_allclose(f, (a_t / a_s - 1.0)[:, None] * x, rtol=1e-10)
            np.testing.assert_allclose(g**2, s_t**2 - (a_t / a_s) ** 2 * s_s**2, rtol=1e-8)
        ve = dj.VESDE()
        _, g = ve.discretize(x, t, dt)
        np.testing.assert_allclose(g**2, ve.sigma(t) ** 2 - ve.sigma(t - dt) ** 2, rtol=1e-10)
