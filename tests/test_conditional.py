"""CDE / CDiffE / CMDE (Batzolis et al.) against exact answers on a jointly Gaussian (x, y).

Every estimator's target is known in closed form (tests/paired_gaussians.py), so
the samplers and losses are checked with no training in the way:

* with the exact CDE score, samples follow p(x | y) (mean and covariance within
  5 Monte Carlo standard errors plus a measured discretisation allowance);
* with the exact CDiffE score the samples are measurably off p(x | y), and the
  exact CMDE score with the paper's slow y-process is much closer;
* each loss is minimised by its claimed score: along the line from the claimed
  score to another estimator's, the quadratic loss has its minimum at the claim.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax import builders
from diffjax.losses import make_conditional_loss_fn
from diffjax.tasks.conditional import conditional_score

import paired_gaussians as pg

SDE = dj.VPSDE()
SDE_Y = dj.VESDE(sigma_min=0.01, sigma_max=1.0)  # the paper's slow condition process
GAUSS = pg.PairedGaussian.random(0, dim=4, correlation=0.95)
# A condition 1.5 standard deviations out, so that conditioning moves the mean.
Y_OBS = GAUSS.my + GAUSS.v @ (1.5 * np.sqrt(GAUSS.vb))
N = 4000


def _sample(method, sampler, n=N, gauss=GAUSS, y_obs=Y_OBS, seed=0):
    sde_y = SDE_Y if method == "cmde" else None
    run = jax.jit(functools.partial(dj.tasks.conditional_sample, gauss.cond_score_fn(SDE, method, sde_y), SDE,
                                    sampler=sampler, method=method, sde_y=sde_y))
    y = jnp.tile(jnp.asarray(y_obs, jnp.float32), (n, 1))
    x_init = SDE.prior_sample(jax.random.key(seed), (n, gauss.dim))
    x, info = run(y, x_init, key=jax.random.key(seed + 1))
    return np.asarray(x, np.float64), info


@pytest.mark.parametrize("sampler", [dj.samplers.PredictorCorrector(100, snr=0.15), dj.samplers.DPMSolverPP(40)],
                         ids=["pc_snr0.15", "dpm_solver_pp"])
def test_cde_samples_follow_the_posterior(sampler):
    x, _ = _sample("cde", sampler)
    mean, cov = GAUSS.posterior(Y_OBS)
    se_mean = np.sqrt(np.diag(cov) / N)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se_mean + 0.01), (x.mean(0), mean)
    # Standard error of a sample covariance entry: sqrt((C_ii C_jj + C_ij^2) / N).
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / N)
    assert np.all(np.abs(np.cov(x, rowvar=False) - cov) < 5 * se_cov + 0.01), (np.cov(x, rowvar=False), cov)


def test_cmde_with_a_slow_y_process_is_closer_than_cdiffe():
    mean, cov = GAUSS.posterior(Y_OBS)
    sampler = dj.samplers.EulerMaruyama(200)
    w2 = {m: pg.gaussian_w2(_sample(m, sampler)[0], mean, cov) for m in ("cde", "cdiffe", "cmde")}
    # Measured: cde 0.02, cdiffe 0.57, cmde 0.02 (the sampling-noise floor of N = 4000 is ~0.02).
    assert w2["cde"] < 0.06, w2
    assert w2["cdiffe"] > 0.3, w2
    assert w2["cmde"] < 0.06 and w2["cmde"] < w2["cdiffe"] / 5, w2


def _line_minimum(method, alternative, n=20_000):
    """Minimiser over e of the loss of ``claim + e (alternative - claim)`` (the loss is quadratic in e)."""
    sde_y = SDE_Y if method == "cmde" else None
    loss_fn = make_conditional_loss_fn(SDE, method=method, sde_y=sde_y, prediction="score", time_input="t")
    x0, y = GAUSS.sample(jax.random.key(3), n)
    claim_proc = {"cde": None, "cdiffe": SDE, "cmde": SDE_Y}[method]

    def scales_y(t, c_y, proc):
        if proc is None:
            return jnp.ones_like(t), jnp.zeros_like(t)
        if proc is SDE_Y:  # VE: alpha_y = 1, and the network is told sigma_y as c_y
            assert c_y is not None
            return jnp.ones_like(t), c_y
        return proc.alpha_sigma(t)

    def apply_fn(e):
        def net(x_t, t, y_in, c_y):
            alpha, sigma = SDE.alpha_sigma(t)
            right = GAUSS.score(x_t, y_in, alpha, sigma, *scales_y(t, c_y, claim_proc))
            wrong = GAUSS.score(x_t, y_in, alpha, sigma, *SDE.alpha_sigma(t)) if alternative == "same" else \
                GAUSS.score(x_t, y_in, alpha, sigma, jnp.ones_like(t), jnp.zeros_like(t))
            return right + e * (wrong - right)

        return net

    key = jax.random.key(4)  # the same draws of t, x_t and y_t for every e
    loss = {e: float(loss_fn(apply_fn(e), x0, key, cond=y)[0]) for e in (-1.0, 0.0, 1.0)}
    slope, curvature = (loss[1.0] - loss[-1.0]) / 2, (loss[1.0] + loss[-1.0] - 2 * loss[0.0]) / 2
    return -slope / (2 * curvature), curvature


@pytest.mark.parametrize("method,alternative", [("cde", "same"), ("cdiffe", "clean"), ("cmde", "same")])
def test_each_loss_is_minimised_by_its_claimed_score(method, alternative):
    """Alternatives: CDE vs the CDiffE formula; CDiffE vs the clean-y formula; CMDE vs CDiffE's scales."""
    e_star, curvature = _line_minimum(method, alternative)
    assert curvature > 1e-3  # the two scores differ enough for the test to mean something
    assert abs(e_star) < 0.1, e_star


@pytest.mark.slow  # 8 compiles; the default suite covers PC (snr 0.15), DPM-Solver++ and Euler-Maruyama above
def test_every_sampler_drives_every_estimator():
    small = pg.PairedGaussian.random(1, dim=2, correlation=0.9)
    y_obs = small.my
    mean, cov = small.posterior(y_obs)
    n = 1000
    for name, cls in builders.SAMPLERS.items():
        sampler = cls() if name == "ode" else cls(steps=100)
        x, info = _sample("cde", sampler, n=n, gauss=small, y_obs=y_obs)
        assert np.all(np.abs(x.mean(0) - mean) < 5 * np.sqrt(np.diag(cov) / n) + 0.05), (name, x.mean(0), mean)
        assert np.allclose(np.var(x, 0), np.diag(cov), rtol=0.25, atol=0.02), (name, np.var(x, 0), np.diag(cov))
    for method in ("cdiffe", "cmde"):
        x, _ = _sample(method, dj.samplers.PredictorCorrector(30, snr=0.15), n=n, gauss=small, y_obs=y_obs)
        assert np.all(np.isfinite(x))


def test_jit_whole_no_retrace_and_deterministic():
    traces = []

    def cond_score_fn(x, y_in, t):
        traces.append(1)
        return GAUSS.cond_score_fn(SDE, "cmde", SDE_Y)(x, y_in, t)

    run = jax.jit(functools.partial(dj.tasks.conditional_sample, cond_score_fn, SDE,
                                    sampler=dj.samplers.EulerMaruyama(10), method="cmde", sde_y=SDE_Y))
    x_a, y_a = GAUSS.sample(jax.random.key(0), 8)
    x_b, y_b = GAUSS.sample(jax.random.key(1), 8)
    out1, _ = run(y_a, x_a, key=jax.random.key(5))
    n_traces = len(traces)
    out2, _ = run(y_b, x_b, key=jax.random.key(6))
    out3, _ = run(y_a, x_a, key=jax.random.key(5))
    assert len(traces) == n_traces  # new inputs and keys reuse the program
    np.testing.assert_array_equal(out1, out3)
    assert not np.allclose(out1, out2)


def test_condition_noise_is_fresh_at_every_time_and_deterministic():
    """``y_t = alpha_y y + sigma_y z``: z standard normal at each time, independent across times, fixed by (key, t)."""
    n, d = 2000, 3
    y = jnp.full((n, d), 0.7)
    probe = lambda x, y_in, t: y_in  # returns what the network would see
    sde_y = dj.VPSDE(beta_min=0.1, beta_max=2.0)  # alpha_y < 1 and sigma_y > 0 at every t used
    score_fn = conditional_score(probe, SDE, y, key=jax.random.key(0), method="cmde", sde_y=sde_y)
    ts = jnp.linspace(0.05, 1.0, 20)

    def noise_at(t):
        alpha, sigma = sde_y.alpha_sigma(t)
        return (score_fn(jnp.zeros((n, d)), jnp.full((n,), t)) - alpha * y) / sigma

    z = np.asarray(jnp.stack([noise_at(t) for t in ts])).reshape(len(ts), -1)
    assert np.allclose(z.mean(1), 0.0, atol=0.05) and np.allclose(z.std(1), 1.0, atol=0.05)
    corr = np.corrcoef(z)
    off_diagonal = corr[~np.eye(len(ts), dtype=bool)]
    assert np.max(np.abs(off_diagonal)) < 0.05, np.max(np.abs(off_diagonal))
    np.testing.assert_array_equal(np.asarray(noise_at(ts[3])).ravel(), z[3])


def test_loss_draws_the_condition_noise_independently_of_x():
    """With x = y = 0 and the CDiffE loss, a network answering ``-y_t / sigma^2`` leaves residual ``z_x - z_y``."""
    loss_fn = make_conditional_loss_fn(SDE, method="cdiffe", prediction="score", time_input="t")
    zeros = jnp.zeros((4000, 4))
    probe = lambda x_t, t, y_in, c_y: -y_in / SDE.alpha_sigma(t)[1][:, None] ** 2
    loss, _ = loss_fn(probe, zeros, jax.random.key(0), cond=zeros)
    assert abs(float(loss) - 2.0) < 0.05, float(loss)  # E|z_x - z_y|^2 = 2 per coordinate when independent


def test_bad_inputs_are_refused():
    fn = GAUSS.cond_score_fn(SDE, "cde")
    x, y = GAUSS.sample(jax.random.key(0), 4)
    s = dj.samplers.EulerMaruyama(5)
    with pytest.raises(ValueError, match="unknown conditional estimator method='cdi'.*expected one of"):
        dj.tasks.conditional_sample(fn, SDE, y, x, key=jax.random.key(0), sampler=s, method="cdi")
    with pytest.raises(ValueError, match="method='cmde'.*pass sde_y"):
        dj.tasks.conditional_sample(fn, SDE, y, x, key=jax.random.key(0), sampler=s, method="cmde")
    with pytest.raises(ValueError, match="pass sde_y=None"):
        dj.tasks.conditional_sample(fn, SDE, y, x, key=jax.random.key(0), sampler=s, method="cde", sde_y=SDE_Y)
    with pytest.raises(ValueError, match=r"expected a batch of \(4,\).*got y of shape \(3, 4\)"):
        dj.tasks.conditional_sample(fn, SDE, y[:3], x, key=jax.random.key(0), sampler=s)
    with pytest.raises(ValueError, match="floating point"):
        dj.tasks.conditional_sample(fn, SDE, y.astype(jnp.int32), x, key=jax.random.key(0), sampler=s)
    with pytest.raises(ValueError, match="sde_y.T"):
        dj.tasks.conditional_sample(fn, SDE, y, x, key=jax.random.key(0), sampler=s, method="cmde",
                                    sde_y=dj.VESDE(sigma_max=1.0, T=2.0))
    with pytest.raises(ValueError, match="unknown conditional estimator"):
        make_conditional_loss_fn(SDE, method="bogus")
    with pytest.raises(ValueError, match="y_noise"):
        dj.tasks.conditional_sample(fn, SDE, y, x, key=jax.random.key(0), sampler=s, method="cdiffe", y_noise="x")
