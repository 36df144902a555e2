"""LSGM's math against exact answers (diagonal Gaussians: every score and density in closed form)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffjax.sde import VPSDE
from diffjax.tasks import lsgm

SDE = VPSDE()
# The toy model's process starts later, so that q(z_eps | x) differs visibly from q(z_0 | x).
WIDE = VPSDE(eps=0.1)


def _alpha_sigma(t, sde=SDE):
    a, s = sde.alpha_sigma(jnp.asarray(t, jnp.float32))
    return float(a), float(s)


def _gauss_ce(m_q, v_q, m_p, v_p):
    """CE(N(m_q, v_q) || N(m_p, v_p)) summed over (diagonal) dimensions, float64."""
    return float(np.sum(0.5 * np.log(2 * np.pi * v_p) + (v_q + (m_q - m_p) ** 2) / (2 * v_p)))


def _exact_eps_fn(m0, v0, sde=SDE):
    """Noise prediction of the exact score of p_0 = N(m0, v0) (diagonal) under ``sde``."""

    def eps_fn(z, t):
        a, s = sde.alpha_sigma(t)
        a, s = a.reshape((-1,) + (1,) * (z.ndim - 1)), s.reshape((-1,) + (1,) * (z.ndim - 1))
        score = -(z - a * m0) / (a**2 * v0 + s**2)
        return -s * score

    return eps_fn


def test_discretized_logistic_sums_to_one_and_matches_cdf():
    k = np.arange(256)
    x = jnp.asarray(2 * k / 255 - 1, jnp.float32)[:, None]
    means = jnp.asarray([-1.0, -0.3, 0.0, 0.52, 0.99], jnp.float32)[None]
    log_scales = jnp.asarray([-4.0, -2.0, -0.5, -3.0, -5.0], jnp.float32)[None]
    logp = np.asarray(lsgm.discretized_logistic_logp(x, means, log_scales), np.float64)
    np.testing.assert_allclose(np.exp(logp).sum(axis=0), 1.0, atol=2e-4)
    # Against the logistic CDF in float64.
    edges = np.concatenate([[-np.inf], (2 * k[:-1] + 1) / 255 - 1, [np.inf]])
    m, s = np.asarray(means[0], np.float64), np.exp(np.asarray(log_scales[0], np.float64))
    cdf = stats.logistic.cdf((edges[:, None] - m) / s)
    expected = np.log(np.maximum(np.diff(cdf, axis=0), 1e-300))
    ok = expected > -30  # probabilities below e^-30 are not resolved in float32
    np.testing.assert_allclose(logp[ok], expected[ok], atol=2e-3, rtol=2e-3)


def test_entropy_is_the_gaussian_closed_form():
    std = jnp.asarray(np.random.default_rng(0).uniform(0.1, 2.0, (3, 2, 2, 2)), jnp.float32)
    expected = [stats.norm(scale=np.asarray(s, np.float64)).entropy().sum() for s in std]
    np.testing.assert_allclose(lsgm.gaussian_entropy(std), expected, rtol=1e-5)


def test_mixed_score_with_coefficient_zero_is_exactly_the_normal_score():
    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(4, 3, 3, 2)), jnp.float32)
    net = jnp.asarray(rng.normal(size=(4, 3, 3, 2)) * 100, jnp.float32)
    sigma = jnp.asarray([0.01, 0.3, 0.7, 1.0], jnp.float32)
    zero = jnp.full((2,), -jnp.inf)
    np.testing.assert_array_equal(lsgm.mixed_score(net, z, sigma, zero), -z)
    np.testing.assert_array_equal(lsgm.mixed_eps(net, z, sigma, zero), sigma[:, None, None, None] * z)
    # a = 1: the network alone; in between: score = -eps / sigma, per channel.
    np.testing.assert_array_equal(lsgm.mixed_eps(net, z, sigma, jnp.full((2,), jnp.inf)), net)
    logit = jnp.asarray([-3.0, 0.7], jnp.float32)
    a = jax.nn.sigmoid(logit)
    np.testing.assert_allclose(lsgm.mixed_eps(net, z, sigma, logit),
                               sigma[:, None, None, None] * (1 - a) * z + a * net, rtol=1e-6)
    np.testing.assert_allclose(lsgm.mixed_score(net, z, sigma, logit),
                               -lsgm.mixed_eps(net, z, sigma, logit) / sigma[:, None, None, None], rtol=2e-5)


def test_cross_entropy_by_score_matching_equals_the_closed_form():
    """DSM integral + constant = CE(q_eps || p_eps) for Gaussian q and a Gaussian prior with its exact score."""
    mu = np.array([0.8, -0.4, 0.1], np.float32)
    s = np.array([0.3, 0.05, 1.2], np.float32)
    m0 = np.array([0.5, -1.0, 0.0], np.float32)
    v0 = np.array([0.6, 2.0, 0.3], np.float32)
    n = 250_000
    key = jax.random.key(0)
    z0 = mu + s * jax.random.normal(jax.random.key(1), (n, 3))
    dsm, _ = jax.jit(lambda z, k: lsgm.dsm_cross_entropy(_exact_eps_fn(m0, v0), SDE, z, k))(z0, key)
    dsm = np.asarray(dsm, np.float64)
    a_e, s_e = _alpha_sigma(SDE.eps)
    a_T, s_T = _alpha_sigma(SDE.T)
    end = 3 * math.log(s_e / s_T) + _gauss_ce(a_T * mu, a_T**2 * s**2 + s_T**2, a_T * m0, a_T**2 * v0 + s_T**2)
    exact = _gauss_ce(a_e * mu, a_e**2 * s**2 + s_e**2, a_e * m0, a_e**2 * v0 + s_e**2)
    se = dsm.std() / math.sqrt(n)
    assert se < 0.07, se
    assert abs(dsm.mean() + end - exact) < 4 * se, (dsm.mean() + end, exact, se)

    # Through the objective: a standard Normal prior (mixing coefficient 0) gives
    # the closed-form CE(q_eps || N(0, I)) that the VAE alone uses.
    mean, std = jnp.broadcast_to(mu, (n, 3)), jnp.broadcast_to(s, (n, 3))
    normal_eps = lambda z, t: lsgm.mixed_eps(jnp.zeros_like(z), z, SDE.alpha_sigma(t)[1],  # noqa: E731
                                             jnp.full((3,), -jnp.inf))
    terms = jax.jit(lambda k: lsgm.lsgm_terms(lambda x: (mean, std), lambda x, z: jnp.zeros(n), normal_eps,
                                              SDE, jnp.zeros((n, 1)), k))(key)
    ce = np.asarray(terms["cross_entropy"], np.float64)
    # The VAE-alone term is deterministic: CE(q_eps || N(0, I)) against an independent float64 closed form.
    vae_alone = lsgm.lsgm_terms(lambda x: (mean[:2], std[:2]), lambda x, z: jnp.zeros(2), None, WIDE,
                                jnp.zeros((2, 1)), key, prior="normal")["cross_entropy"]
    a_w, s_w = _alpha_sigma(WIDE.eps, WIDE)
    np.testing.assert_allclose(vae_alone, _gauss_ce(a_w * mu, a_w**2 * s**2 + s_w**2, 0.0, 1.0), rtol=1e-5)
    closed = np.asarray(lsgm.normal_cross_entropy(*lsgm.diffuse_posterior(SDE, mean[:1], std[:1])))[0]
    assert abs(ce.mean() - closed) < 4 * ce.std() / math.sqrt(n) + 1e-4, (ce.mean(), closed)


def _mixed_exact_score_fn(m0, v0, logit, sde=SDE):
    """A mixed score whose network output is chosen so that the mixture is p_0 = N(m0, v0)'s exact score."""
    exact = _exact_eps_fn(m0, v0, sde)
    a = jax.nn.sigmoid(logit)

    def score_fn(z, t):
        sigma = sde.alpha_sigma(t)[1]
        sb = sigma.reshape((-1,) + (1,) * (z.ndim - 1))
        net = (exact(z, t) - sb * (1 - a) * z) / a
        return lsgm.mixed_score(net, z, sigma, logit)

    return score_fn


def test_ode_likelihood_of_a_gaussian_latent_matches_the_closed_form():
    rng = np.random.default_rng(2)
    shape = (2, 2, 2)  # (h, w, c) latents, D = 8
    # Zero mean: the prior N(0, I) at T then matches p_T to ~1e-5 nats (a mean m
    # would leave alpha_T m ~ 0.007 m in p_T, a few 0.01 nats over 8 dimensions).
    m0 = np.zeros(shape, np.float32)
    v0 = rng.uniform(0.1, 2.5, size=shape).astype(np.float32)
    logit = jnp.asarray([0.4, -1.0], jnp.float32)
    z = jnp.asarray(rng.normal(size=(5,) + shape), jnp.float32)
    fn = jax.jit(lambda z: lsgm.latent_log_prob(_mixed_exact_score_fn(m0, v0, logit), SDE, z,
                                                key=jax.random.key(0), exact_divergence=True))
    a_e, s_e = _alpha_sigma(SDE.eps)
    var = a_e**2 * v0 + s_e**2
    exact = stats.norm(a_e * m0, np.sqrt(var)).logpdf(np.asarray(z, np.float64)).reshape(5, -1).sum(1)
    np.testing.assert_allclose(fn(z), exact, atol=5e-3)
    # The Normal prior's closed form.
    normal = lsgm.latent_log_prob(None, SDE, z, key=None, prior="normal")
    np.testing.assert_allclose(normal, stats.norm.logpdf(np.asarray(z, np.float64)).reshape(5, -1).sum(1), rtol=1e-5)


class _LinearGaussianToy:
    """x = W z + tau n in R^3, z_eps ~ N(0, v_eps I) in R^2 (the VP marginal of p_0 = N(0, v0)); W = Q diag(d)."""

    def __init__(self, v0: float = 0.8):
        self.Q = np.array([[1, 1], [1, -1], [0, 1]], np.float64) / np.array([math.sqrt(2), math.sqrt(3)])
        self.d = np.array([1.5, 0.7])
        self.W = self.Q * self.d
        self.tau = 0.6
        self.v0 = v0
        a_e, s_e = _alpha_sigma(WIDE.eps, WIDE)
        self.a_e, self.s_e = a_e, s_e
        self.v_eps = a_e**2 * self.v0 + s_e**2
        self.post_var = 1.0 / (1.0 / self.v_eps + self.d**2 / self.tau**2)  # diagonal since Q^T Q = I

    def exact_nll(self, x):
        cov = self.v_eps * self.W @ self.W.T + self.tau**2 * np.eye(3)
        return -stats.multivariate_normal(np.zeros(3), cov).logpdf(x)

    def posterior(self, x):
        return (self.post_var * (x @ self.W) / self.tau**2), self.post_var

    def encoder(self, mean_scale=1.0, std_scale=1.0):
        """Encoder whose q(z_eps | x) is the exact posterior (scales 1) or a distorted one."""

        def encode(x):
            pm, pv = self.posterior(np.asarray(x, np.float64))
            mean = pm / self.a_e * mean_scale
            std = np.sqrt(pv - self.s_e**2) / self.a_e * std_scale
            return (jnp.asarray(mean, jnp.float32).reshape(-1, 1, 1, 2),
                    jnp.broadcast_to(jnp.asarray(std, jnp.float32), (len(x), 2)).reshape(-1, 1, 1, 2))

        return encode

    def decode_logp(self, x, z):
        mean = z.reshape(len(z), 2) @ jnp.asarray(self.W.T, jnp.float32)
        return jnp.sum(jax.scipy.stats.norm.logpdf(x, mean, self.tau), axis=-1)

    def kl_to_posterior(self, x, encode):
        mean, std = (np.asarray(v, np.float64).reshape(-1, 2) for v in encode(x))
        qm, qv = self.a_e * mean, self.a_e**2 * std**2 + self.s_e**2
        pm, pv = self.posterior(x)
        return np.sum(0.5 * np.log(pv / qv) + (qv + (qm - pm) ** 2) / (2 * pv) - 0.5, axis=1)


def test_bound_is_tight_at_the_posterior_and_never_below_the_exact_nll():
    toy = _LinearGaussianToy()
    x = np.random.default_rng(3).normal(size=(4, 3)) * 1.2
    nll = toy.exact_nll(x)
    score_fn = _mixed_exact_score_fn(np.zeros((1, 1, 2), np.float32), np.full((1, 1, 2), toy.v0, np.float32),
                                     jnp.asarray([0.5, -0.5], jnp.float32), WIDE)
    eps_fn = lambda z, t: -WIDE.alpha_sigma(t)[1].reshape(-1, 1, 1, 1) * score_fn(z, t)  # noqa: E731
    reps = 128
    xr = jnp.asarray(np.repeat(x, reps, axis=0), jnp.float32)

    # At the exact posterior every one-sample ODE bound equals the exact NLL (zero-variance estimator).
    exact_enc = toy.encoder()
    ode = jax.jit(lambda k, mean, std: lsgm.nelbo_ode(lambda _: (mean, std), toy.decode_logp, score_fn, WIDE, xr[:8],
                                                     k, exact_divergence=True)["nelbo"])
    tight = np.asarray(ode(jax.random.key(0), *exact_enc(np.asarray(xr[:8]))))
    np.testing.assert_allclose(tight, np.repeat(nll, reps)[:8], atol=5e-3)

    # A distorted encoder: the bound exceeds the NLL by KL(q || posterior), for ODE and score-matching bounds.
    enc = toy.encoder(mean_scale=0.6, std_scale=1.8)
    gap = toy.kl_to_posterior(x, enc)
    assert np.all(gap > 0.05)
    mean, std = enc(np.asarray(xr))
    ode_all = jax.jit(lambda k: lsgm.nelbo_ode(lambda _: (mean, std), toy.decode_logp, score_fn, WIDE, xr, k,
                                               exact_divergence=True)["nelbo"])
    dsm_all = jax.jit(lambda k: lsgm.lsgm_terms(lambda _: (mean, std), toy.decode_logp, eps_fn, WIDE, xr, k)["nelbo"])
    for values in (np.asarray(ode_all(jax.random.key(1))), np.asarray(dsm_all(jax.random.key(2)))):
        values = values.reshape(4, reps)
        est, se = values.mean(1), values.std(1) / math.sqrt(reps)
        assert np.all(est > nll), (est, nll)  # a bound: never below the exact NLL
        np.testing.assert_array_less(np.abs(est - (nll + gap)), 4 * se + 2e-3)

    # The VAE alone (prior="normal", closed-form cross-entropy) is the same bound when p_eps = N(0, I).
    unit = _LinearGaussianToy(v0=(1.0 - toy.s_e**2) / toy.a_e**2)  # alpha^2 v0 + sigma^2 = 1
    enc = unit.encoder(mean_scale=0.6, std_scale=1.8)
    many = 8192  # no ODE here: enough samples to resolve a few tenths of a nat
    xm = jnp.asarray(np.repeat(x, many, axis=0), jnp.float32)
    mean, std = enc(np.asarray(xm))
    values = np.asarray(jax.jit(lambda k: lsgm.lsgm_terms(lambda _: (mean, std), unit.decode_logp, None, WIDE, xm, k,
                                                          prior="normal")["nelbo"])(jax.random.key(3)))
    values = values.reshape(4, many)
    est, se = values.mean(1), values.std(1) / math.sqrt(many)
    assert np.all(se < 0.08), se
    np.testing.assert_array_less(np.abs(est - (unit.exact_nll(x) + unit.kl_to_posterior(x, enc))), 4 * se + 2e-3)


def test_objective_rejects_bad_input():
    with pytest.raises(ValueError, match="prior must be one of"):
        lsgm.lsgm_terms(None, None, None, SDE, jnp.zeros((1, 2)), jax.random.key(0), prior="flow")
    with pytest.raises(ValueError, match="needs eps_fn"):
        lsgm.lsgm_terms(None, None, None, SDE, jnp.zeros((1, 2)), jax.random.key(0))
    with pytest.raises(ValueError, match="VPSDE"):
        lsgm.sample_t_likelihood(__import__("diffjax").VESDE(), jax.random.key(0), 3)
    with pytest.raises(ValueError, match="weighting"):
        lsgm.dsm_cross_entropy(None, SDE, jnp.zeros((1, 2)), jax.random.key(0), weighting="uniform")


def test_time_samplers_have_the_stated_densities():
    """Likelihood weighting: t uniform in log(sigma^2/alpha^2); reweighted: density proportional to beta(t)."""
    t, w = lsgm.sample_t_likelihood(SDE, jax.random.key(0), 200_000)
    ell = np.asarray(-2 * SDE.log_snr(t), np.float64)
    lo, hi = float(-2 * SDE.log_snr(SDE.eps)), float(-2 * SDE.log_snr(SDE.T))
    assert stats.kstest((ell - lo) / (hi - lo), "uniform").pvalue > 1e-3
    np.testing.assert_allclose(w, 0.5 * (hi - lo), rtol=1e-6)
    t, w = lsgm.sample_t_reweighted(SDE, jax.random.key(1), 200_000)
    t = np.asarray(t, np.float64)

    def cdf(t):
        b0, b1 = SDE.beta_min, SDE.beta_max
        return b0 * t + 0.5 * (b1 - b0) * t**2

    u = (cdf(t) - cdf(SDE.eps)) / (cdf(SDE.T) - cdf(SDE.eps))
    assert stats.kstest(u, "uniform").pvalue > 1e-3
