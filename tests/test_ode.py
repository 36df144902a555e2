"""ProbabilityFlowODE against the closed-form probability-flow map of a Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import diffjax as dj
import gaussians
from exact_flow import gaussian_flow_map

GAUSS = gaussians.gaussian(dim=4, seed=0)


@pytest.mark.parametrize("sde", [dj.VPSDE(), dj.VESDE(), dj.SubVPSDE()], ids=type)
def test_matches_exact_flow_map(sde):
    x = sde.prior_sample(jax.random.key(0), (64, 4))
    exact = gaussian_flow_map(GAUSS, sde, x, sde.T, sde.eps)
    y, info = dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=dj.samplers.ProbabilityFlowODE())
    scale = float(jnp.max(jnp.abs(exact)))
    np.testing.assert_allclose(y, exact, atol=2e-4 * scale)
    assert info["nfe"].shape == () and int(info["nfe"]) > 0
    assert int(info["steps"]) > 0 and int(info["rejected_steps"]) >= 0


def test_partial_interval_matches_exact_flow_map():
    sde = dj.VPSDE()
    x = GAUSS.sample_t(jax.random.key(0), 32, 0.7, sde)
    y, _ = dj.sample(
        GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=dj.samplers.ProbabilityFlowODE(solver="dopri5"),
        t_start=0.7, t_end=0.2,
    )
    np.testing.assert_allclose(y, gaussian_flow_map(GAUSS, sde, x, 0.7, 0.2), atol=1e-4)


def test_moments_of_samples():
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (8192, 4))
    y, _ = dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(1), sampler=dj.samplers.ProbabilityFlowODE(rtol=1e-4, atol=1e-4))
    np.testing.assert_allclose(np.mean(y, 0), GAUSS.mean, atol=0.06)
    np.testing.assert_allclose(np.cov(np.asarray(y).T), GAUSS.covariance, atol=0.12)


def test_nfe_counts_the_evaluations_actually_made():
    sde = dj.VPSDE()
    calls = []

    def record(t):
        calls.append(float(t))
        return np.zeros((), np.float32)

    def counted_score(x, t):
        # The callback's result feeds the score, so it cannot be dropped.
        zero = io_callback(record, jax.ShapeDtypeStruct((), jnp.float32), t[0])
        return GAUSS.score(x, t, sde) + zero

    x = sde.prior_sample(jax.random.key(0), (16, 4))
    for sampler in [dj.samplers.ProbabilityFlowODE(), dj.samplers.ProbabilityFlowODE(1e-3, 1e-3, "dopri5")]:
        calls.clear()
        run = jax.jit(lambda x: dj.sample(counted_score, sde, x, key=jax.random.key(0), sampler=sampler))
        y, info = jax.block_until_ready(run(x))
        assert int(info["nfe"]) == len(calls)


def test_jit_whole_call_and_tighter_tolerance_costs_more():
    sde = dj.VPSDE()
    x = sde.prior_sample(jax.random.key(0), (16, 4))

    def nfe(rtol):
        s = dj.samplers.ProbabilityFlowODE(rtol=rtol, atol=rtol)
        return int(jax.jit(lambda x: dj.sample(GAUSS.score_fn(sde), sde, x, key=jax.random.key(0), sampler=s)[1]["nfe"])(x))

    assert nfe(1e-7) > nfe(1e-3)


@pytest.mark.parametrize("bad", [dict(rtol=0.0), dict(atol=-1.0), dict(solver="euler"), dict(max_steps=0)])
def test_bad_hyper_parameters_raise(bad):
    with pytest.raises(ValueError):
        dj.samplers.ProbabilityFlowODE(**bad)
