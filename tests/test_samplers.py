"""Samplers against exact answers: Gaussian moments, mixture weights, convergence order.

Every sampler is checked on data whose every marginal is known in closed form
(tests/gaussians.py). Tolerances are ``5`` Monte Carlo standard errors plus a
discretisation allowance measured for the step counts used here.

Hook for the probability-flow solvers written elsewhere (DPMSolverPP,
ProbabilityFlowODE): append a ``Case`` to ``CASES`` and every test below that
iterates ``CASES`` covers it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.samplers import DDIM, Ancestral, EulerMaruyama, Heun, PredictorCorrector, ReverseDiffusion
from diffjax.samplers.pc import langevin_correct

import gaussians
from xla_levels import DEFAULT_XLA

PROCESSES = {
    "vp": dj.VPSDE(),
    "subvp": dj.SubVPSDE(),
    "ve": dj.VESDE(),
    "cosine": dj.CosineVPSDE(),
    "discrete": dj.DiscreteVPSDE(),
}


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    sampler: dj.samplers.Sampler
    nfe: int
    # Discretisation allowance on the whitened moments (measured with 40000
    # samples at these step counts on vp/subvp/ve/cosine, then rounded up).
    bias: float


CASES = [
    Case("euler_maruyama", EulerMaruyama(300), 300, 0.05),
    Case("reverse_diffusion", ReverseDiffusion(300), 300, 0.05),
    # snr = 0.05: score_sde's 0.16 is tuned for images, and takes long steps in 4 dimensions.
    Case("predictor_corrector", PredictorCorrector(200, snr=0.05), 400, 0.1),
    Case("ancestral", Ancestral(300), 300, 0.06),
    Case("ddim", DDIM(100), 100, 0.08),
    Case("ddim_eta1", DDIM(200, eta=1.0), 200, 0.08),
    Case("heun", Heun(30), 60, 0.1),
]
CASE_IDS = [c.name for c in CASES]

N_SAMPLES = 8000


def _run(sampler, sde, data, x_init, *, key=jax.random.key(1), **kwargs):
    fn = jax.jit(functools.partial(dj.sample, data.score_fn(sde), sde, sampler=sampler, **kwargs))
    return fn(x_init, key=key)


def _assert_gaussian_moments(x, data, bias):
    """Whitened samples w = D^{-1/2} U^T (x - mu) must be N(0, I)."""
    w = (np.asarray(x, np.float64) - data.means[0]) @ (data.eigvecs[0] / np.sqrt(data.eigvals[0]))
    n = w.shape[0]
    mean_err = np.abs(w.mean(0)).max()
    cov_err = np.abs(np.cov(w.T) - np.eye(w.shape[1])).max()
    assert mean_err < 5 / math.sqrt(n) + bias, f"whitened mean off by {mean_err:.3f}"
    assert cov_err < 5 * math.sqrt(2 / n) + bias, f"whitened covariance off by {cov_err:.3f}"


# Every sampler on VP, and on one other process in rotation; the full grid is slow.
_ROTATION = ["subvp", "ve", "cosine", "discrete"]
_DEFAULT_GRID = [(c, "vp") for c in CASES] + [(c, _ROTATION[i % 4]) for i, c in enumerate(CASES)]
_FULL_GRID = [(c, p) for c in CASES for p in PROCESSES if (c, p) not in _DEFAULT_GRID]


def _grid_params(grid, marks=()):
    return [pytest.param(c, p, id=f"{c.name}-{p}", marks=marks) for c, p in grid]


@pytest.mark.parametrize(
    "case, process", _grid_params(_DEFAULT_GRID) + _grid_params(_FULL_GRID, marks=pytest.mark.slow)
)
def test_gaussian_mean_and_covariance(case, process):
    sde = PROCESSES[process]
    data = gaussians.gaussian(dim=4, seed=0)
    x_init = sde.prior_sample(jax.random.key(0), (N_SAMPLES, 4))
    x, info = _run(case.sampler, sde, data, x_init)
    assert int(info["nfe"]) == case.nfe
    assert x.shape == x_init.shape and x.dtype == x_init.dtype
    _assert_gaussian_moments(x, data, case.bias)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_mixture_weights(case):
    """The share of samples in each component matches the mixture weights."""
    sde = PROCESSES["vp"]
    data = gaussians.mixture(dim=4, k=3, seed=1)
    n = 4000
    x_init = sde.prior_sample(jax.random.key(2), (n, 4))
    x, _ = _run(case.sampler, sde, data, x_init)
    assert np.all(np.isfinite(np.asarray(x)))
    shares = np.asarray(data.responsibilities(x)).mean(0)
    se = np.sqrt(data.weights * (1 - data.weights) / n)
    np.testing.assert_array_less(np.abs(shares - data.weights), 5 * se + 0.02)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_start_below_T(case):
    """SDEdit-style start: exact samples of p_{t0} at t0 < T, integrated down to the data."""
    sde = PROCESSES["vp"]
    data = gaussians.gaussian(dim=4, seed=0)
    t0 = 0.4
    x_init = data.sample_t(jax.random.key(3), 4000, t0, sde)
    x, _ = _run(case.sampler, sde, data, x_init, t_start=t0)
    _assert_gaussian_moments(x, data, case.bias)


# -- convergence order of the deterministic samplers --------------------------


def _reference_flow(data, sde, x_T, steps=4000):
    """Classical RK4 in t on the probability-flow ODE (float64): the 'exact' solution."""
    score = data.score_fn(sde)
    ts = jnp.linspace(sde.T, sde.eps, steps + 1)

    def drift(x, t):
        tv = jnp.full(x.shape[:1], t)
        return sde.probability_flow_drift(x, tv, score(x, tv))

    def body(x, i):
        t, h = ts[i], ts[i + 1] - ts[i]
        k1 = drift(x, t)
        k2 = drift(x + 0.5 * h * k1, t + 0.5 * h)
        k3 = drift(x + 0.5 * h * k2, t + 0.5 * h)
        k4 = drift(x + h * k3, t + h)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

    return jax.lax.scan(body, x_T, jnp.arange(steps))[0]


@pytest.mark.parametrize(
    "make, steps, order",
    [(lambda n: DDIM(n), (16, 32, 64, 128), 1.0), (lambda n: Heun(n), (8, 16, 32, 64), 2.0)],
    ids=["ddim", "heun"],
)
def test_convergence_order(make, steps, order):
    sde = PROCESSES["vp"]
    data = gaussians.gaussian(dim=4, seed=0)
    with jax.enable_x64(True):
        x_T = sde.prior_sample(jax.random.key(4), (32, 4), jnp.float64)
        ref = jax.jit(lambda x: _reference_flow(data, sde, x))(x_T)
        errors = []
        for n in steps:
            x, _ = dj.sample(data.score_fn(sde), sde, x_T, key=jax.random.key(0), sampler=make(n))
            errors.append(float(jnp.max(jnp.abs(x - ref))))
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.25, f"empirical order {slope:.2f} (errors {errors})"


# -- exact relations between samplers ------------------------------------------


def test_ddim_with_eta_one_is_ancestral():
    sde = PROCESSES["vp"]
    data = gaussians.gaussian(dim=4, seed=0)
    x_init = sde.prior_sample(jax.random.key(0), (64, 4))
    a, _ = _run(Ancestral(20), sde, data, x_init)
    b, _ = _run(DDIM(20, eta=1.0), sde, data, x_init)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_ancestral_step_is_the_ddpm_posterior():
    """One step n -> n-1 of a DiscreteVPSDE equals DDPM's posterior mean with the true x0."""
    num_steps = 10
    sde = dj.DiscreteVPSDE(num_steps=num_steps, beta_start=0.01, beta_end=0.2, eps=0.1)
    betas = np.linspace(0.01, 0.2, num_steps)
    abar = np.cumprod(1 - betas)
    n = 6  # t_n = (n + 1) / N
    x0 = np.random.default_rng(0).normal(size=(3, 5))
    xt = np.random.default_rng(1).normal(size=(3, 5))
    with jax.enable_x64(True):
        t_n = jnp.asarray((n + 1) / num_steps)
        alpha, sigma = sde.alpha_sigma(t_n)
        # The score whose Tweedie estimate is exactly x0.
        score_fn = lambda x, t: -(x - alpha * x0) / sigma**2
        got, _ = dj.sample(
            score_fn, sde, jnp.asarray(xt), key=jax.random.key(0), sampler=Ancestral(1),
            t_start=float(t_n), t_end=n / num_steps,
        )
    want = (np.sqrt(abar[n - 1]) * betas[n] * x0 + np.sqrt(1 - betas[n]) * (1 - abar[n - 1]) * xt) / (1 - abar[n])
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_langevin_corrector_reaches_p_t():
    """At fixed t, the corrector's chain moves a too-wide start onto p_t = N(0, v I).

    score_sde's rule (``step_norm="batch"``) uses one step size for the batch, so
    the chain leaves p_t invariant up to discretisation: from twice the variance
    it lands within 3% of p_t even in 4 dimensions. With per-example norms the step
    depends on ``||score(x)||`` and the invariant law is p_t reweighted by it: in
    4 dimensions the variance ends far off (measured +40-50% at snr = 0.05), while
    at d = 64 the bias shrinks to a few percent.
    """
    n, v = 4000, 0.7
    score_fn = lambda x, t: -x / v
    t = jnp.zeros((n,))

    def variance_ratio(dim, step_norm):
        x = jnp.sqrt(2.0 * v) * jax.random.normal(jax.random.key(0), (n, dim))
        # 900 steps: the time is in running, so this chain compiles at XLA's default level, not
        # at the default suite's quick one (tests/conftest.py): 6 s instead of 37 s.
        chain = jax.jit(lambda x, key: langevin_correct(
            score_fn, x, t, key=key, snr=0.05, n_steps=900, alpha=jnp.ones(n), step_norm=step_norm
        ), compiler_options=DEFAULT_XLA)
        return float(jnp.var(chain(x, jax.random.key(1)))) / v

    assert abs(variance_ratio(4, "batch") - 1.0) < 0.03
    assert abs(variance_ratio(64, "batch") - 1.0) < 0.03
    assert variance_ratio(4, "example") > 1.2  # the documented low-dimension bias
    assert 1.0 < variance_ratio(64, "example") < 1.1


# -- counting, compilation, transformations ---------------------------------------


def test_nfe_and_denoise():
    """``denoise=True`` is one more score evaluation: Tweedie's mean at t_end."""
    sde = PROCESSES["vp"]
    data = gaussians.gaussian(dim=4, seed=0)
    score_fn = data.score_fn(sde)
    x_init = jnp.ones((2, 4))

    @functools.partial(jax.jit, static_argnames="denoise")
    def run(x, denoise):
        return dj.sample(score_fn, sde, x, key=jax.random.key(0), sampler=DDIM(3), denoise=denoise)

    x, info = run(x_init, denoise=True)
    y, info_plain = run(x_init, denoise=False)
    assert info["nfe"] == info_plain["nfe"] + 1 == 4
    t_end = jnp.full((2,), sde.eps)
    want = dj.parametrization.tweedie_x0(score_fn(y, t_end), y, t_end, sde)
    np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "sampler, nfe",
    [(PredictorCorrector(5, corrector_steps=0), 5), (PredictorCorrector(5, corrector_steps=3), 20), (Heun(4), 8)],
)
def test_nfe_counts(sampler, nfe):
    info = {}

    def trace(x):  # tracing alone fixes the count: nfe is static
        out, run_info = dj.sample(lambda x, t: -x, PROCESSES["vp"], x, key=jax.random.key(0), sampler=sampler)
        info.update(run_info)
        return out

    jax.eval_shape(trace, jnp.ones((2, 3)))
    assert info["nfe"] == nfe


def test_jit_does_not_retrace():
    sde = PROCESSES["vp"]
    data = gaussians.gaussian(dim=4, seed=0)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fn(x, key):
        return dj.sample(data.score_fn(sde), sde, x, key=key, sampler=EulerMaruyama(5))

    a, _ = fn(jnp.ones((8, 4)), key=jax.random.key(0))
    b, _ = fn(jnp.zeros((8, 4)), key=jax.random.key(1))
    assert not np.allclose(a, b)


def test_vmap_over_keys():
    sde = PROCESSES["vp"]
    data = gaussians.gaussian(dim=4, seed=0)
    x_init = jnp.ones((3, 4))
    run = lambda k: dj.sample(data.score_fn(sde), sde, x_init, key=k, sampler=Ancestral(5))[0]
    keys = jax.random.split(jax.random.key(0), 4)
    batched = jax.jit(jax.vmap(run))(keys)
    assert batched.shape == (4, 3, 4)
    single = jax.jit(run)
    for i in range(4):
        np.testing.assert_allclose(batched[i], single(keys[i]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(batched[0], batched[1])


# -- input validation --------------------------------------------------------------


def _sample(x, sampler=None, score_fn=None, **kwargs):
    sde = PROCESSES["vp"]
    score_fn = score_fn or (lambda x, t: -x)
    return dj.sample(score_fn, sde, x, key=jax.random.key(0), sampler=sampler or DDIM(2), **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=jnp.zeros((2, 4), jnp.int32)), "floating-point"),
        (dict(x=jnp.zeros((2, 4)), t_start=jnp.ones((2,))), "t_start must be a scalar"),
        (dict(x=jnp.zeros((2, 4)), t_start=1.5), r"t_start must lie in \[sde.eps, sde.T\]"),
        (dict(x=jnp.zeros((2, 4)), t_start=0.0), r"t_start must lie in \[sde.eps, sde.T\]"),
        (dict(x=jnp.zeros((2, 4)), t_start=0.3, t_end=0.5), "t_end must be below t_start"),
        (dict(x=jnp.zeros((2, 4)), t_start=0.3, t_end=0.3), "t_end must be below t_start"),
        (dict(x=jnp.zeros((2, 4)), score_fn=lambda x, t: x[:, :2]), "score_fn.*shaped like x"),
        (dict(x=jnp.zeros((2, 4)), sampler="ddim"), "sampler must be one of diffjax.samplers"),
    ],
)
def test_bad_input_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _sample(**kwargs)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EulerMaruyama(0), "steps >= 1"),
        (lambda: ReverseDiffusion(2.5), "steps >= 1"),
        (lambda: Ancestral(-3), "steps >= 1"),
        (lambda: Heun(True), "steps >= 1"),
        (lambda: DDIM(10, eta=-0.1), "eta >= 0"),
        (lambda: PredictorCorrector(10, snr=0.0), "snr > 0"),
        (lambda: PredictorCorrector(10, corrector_steps=-1), "corrector_steps >= 0"),
        (lambda: PredictorCorrector(10, corrector_steps=1.5), "corrector_steps >= 0"),
        (lambda: DDIM(10, spacing="cosine"), "spacing"),
    ],
)
def test_bad_hyper_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()
