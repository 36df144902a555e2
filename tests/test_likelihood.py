"""log_likelihood against closed-form Gaussian log-densities; bits_per_dim conventions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
import gaussians

GAUSS = gaussians.gaussian(dim=4, seed=0)
PROCESSES = [dj.VPSDE(), dj.VESDE()]


def _data(sde, n, seed=0):
    # Exact draws from p_eps, the density the flow started at eps transports.
    return GAUSS.sample_t(jax.random.key(seed), n, sde.eps, sde)


@pytest.mark.parametrize("sde", PROCESSES, ids=type)
def test_exact_divergence_matches_closed_form(sde):
    with jax.enable_x64(True):
        x = _data(sde, 16).astype(jnp.float64)
        logp, info = dj.log_likelihood(
            GAUSS.score_fn(sde), sde, x, key=jax.random.key(0), exact_divergence=True, rtol=1e-8, atol=1e-8
        )
        eps_t = jnp.full((16,), sde.eps)
        exact = GAUSS.log_prob(x, eps_t, sde)
        # The flow term alone is exact: int div = log p_eps(x) - log p_T(z).
        true_prior = GAUSS.log_prob(info["z"], jnp.full((16,), sde.T), sde)
        np.testing.assert_allclose(info["delta_logp"], exact - true_prior, atol=1e-5)
        # The total differs only by the prior's mismatch with the true p_T
        # (for VE, the data mean left in p_T = N(mu, C + sigma_max^2 I): ~0.06 nats here).
        np.testing.assert_allclose(logp, exact, atol=0.15)
        np.testing.assert_allclose(logp, info["prior_logp"] + info["delta_logp"], rtol=1e-12)
        assert logp.shape == (16,) and int(info["nfe"]) > 0


@pytest.mark.parametrize(
    "sde,estimator", [(dj.VPSDE(), "rademacher"), (dj.VPSDE(), "gaussian"), (dj.VESDE(), "rademacher")],
    ids=["vp-rademacher", "vp-gaussian", "ve-rademacher"],
)
def test_hutchinson_is_unbiased(sde, estimator):
    # One point repeated with independent probes: the mean over probes must
    # match the exact flow term within a few standard errors.
    n = 256
    x = jnp.broadcast_to(_data(sde, 1), (n, 4))
    logp, info = dj.log_likelihood(
        GAUSS.score_fn(sde), sde, x, key=jax.random.key(3), estimator=estimator, rtol=1e-4, atol=1e-4
    )
    true_prior = GAUSS.log_prob(info["z"][:1], jnp.full((1,), sde.T), sde)
    target = float(GAUSS.log_prob(x[:1], jnp.full((1,), sde.eps), sde)[0] - true_prior[0])
    delta = np.asarray(info["delta_logp"])
    stderr = delta.std() / math.sqrt(n)
    assert abs(delta.mean() - target) < 4 * stderr + 1e-3, (delta.mean(), target, stderr)
    # The total adds the prior's small mismatch with p_T (see the exact test).
    exact = float(GAUSS.log_prob(x[:1], jnp.full((1,), sde.eps), sde)[0])
    assert abs(float(jnp.mean(logp)) - exact) < 4 * stderr + 0.15


def test_jit_and_bad_input():
    sde = dj.VPSDE()
    x = _data(sde, 8)
    run = jax.jit(lambda x, k: dj.log_likelihood(GAUSS.score_fn(sde), sde, x, key=k)[0])
    assert run(x, jax.random.key(0)).shape == (8,)
    with pytest.raises(ValueError, match="estimator"):
        dj.log_likelihood(GAUSS.score_fn(sde), sde, x, key=jax.random.key(0), estimator="sphere")
    with pytest.raises(ValueError, match="floating"):
        dj.log_likelihood(GAUSS.score_fn(sde), sde, x.astype(jnp.int32), key=jax.random.key(0))
    with pytest.raises(ValueError, match="t_end"):
        dj.log_likelihood(GAUSS.score_fn(sde), sde, x, key=jax.random.key(0), t_end=2.0)


def test_bits_per_dim_uniform_8bit_is_eight_bits():
    # A density uniform on [-1, 1)^D (log p = -D log 2) spreads every 8-bit
    # value over its whole bin: exactly 8 bits per dimension.
    dims = 3 * 32 * 32
    logp = jnp.full((2,), -dims * math.log(2.0))
    np.testing.assert_allclose(dj.bits_per_dim(logp, dims), 8.0, rtol=1e-6)
    # Same for data on [0, 1): the offset adapts to the range (log2 256 = 8).
    np.testing.assert_allclose(dj.bits_per_dim(jnp.zeros(2), dims, data_range=(0.0, 1.0)), 8.0, rtol=1e-6)


def test_bits_per_dim_matches_discrete_entropy_of_dequantised_gaussian():
    # Pixels k = floor(128 (y + 1)) from a smooth density on [-1, 1]: the
    # continuous bound equals the discrete entropy up to the bin-smoothing gap.
    rng = np.random.default_rng(0)
    y = np.clip(rng.normal(0.0, 0.3, size=200_000), -1, 1 - 1e-9)
    k = np.floor(128 * (y + 1)).astype(int)
    p = np.bincount(k, minlength=256) / len(k)
    entropy_bits = -np.sum(p[p > 0] * np.log2(p[p > 0]))
    logp = -0.5 * np.log(2 * np.pi * 0.3**2) - 0.5 * (y / 0.3) ** 2  # log density in model space
    bpd = float(jnp.mean(dj.bits_per_dim(jnp.asarray(logp), 1)))
    assert abs(bpd - entropy_bits) < 0.01, (bpd, entropy_bits)


def test_bits_per_dim_continuous_gaussian():
    # Without dequantisation: differential entropy of N(0, 1) in bits.
    dims = 10
    logp = jnp.asarray([-0.5 * dims * math.log(2 * math.pi * math.e)])
    np.testing.assert_allclose(
        dj.bits_per_dim(logp, dims, dequantized_8bit=False), 0.5 * math.log2(2 * math.pi * math.e), rtol=1e-6
    )


@pytest.mark.parametrize("bad", [dict(num_dims=0), dict(num_dims=2.0), dict(num_dims=4, data_range=(1.0, -1.0))])
def test_bits_per_dim_bad_input(bad):
    with pytest.raises(ValueError):
        dj.bits_per_dim(jnp.zeros(2), **bad)
