"""SDEdit against exact answers: Gaussian data with its exact score.

Data ``x_0 ~ N(m, C)``, ``C = U diag(d) U^T``; every marginal is
``N(a_t m, P_t)``, ``P_t = U diag(a_t^2 d + s_t^2) U^T``, and all ``P_t`` commute.
One SDEdit cycle from an input ``y`` perturbed to ``t0`` and sampled down to
``e = sde.eps`` is an affine Gaussian map ``out = a_e m + M (a0 (y - m) + s0 z) + q``
with ``q ~ N(0, Q)``:

* reverse SDE (exact): ``out ~ p(x_e | x_t0)``, the Gaussian conditional of the
  forward process: ``M = (a0 / a_e) P_e P_0^-1``, ``Q = P_e - (a0/a_e)^2 P_e P_0^-1 P_e``;
* probability flow (exact): the linear map ``M = P_e^1/2 P_0^-1/2``, ``Q = 0``.

``repeats`` cycles iterate the map on the law (Algorithm 2 re-perturbs the
previous output). All reference numbers are float64 on the host.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.samplers import DDIM, DPMSolverPP, EulerMaruyama, Heun, PredictorCorrector
from diffjax.sde import VESDE, VPSDE, SubVPSDE
from diffjax.tasks.sdedit import DEFAULT_SAMPLER
from gaussians import GaussianMixture, gaussian

DIM = 4
N = 4000
MODEL = gaussian(DIM, seed=3)
# A guide well away from the data mean, so that how far SDEdit moves it is measured.
GUIDE = MODEL.means[0] + np.array([2.0, -1.5, 1.0, 2.5])


def _cycle_map(model, sde, t0, stochastic):
    """(M, Q) of one exact SDEdit cycle (see the module docstring)."""
    u, d = model.eigvecs[0], model.eigvals[0]
    a0, s0 = (float(v) for v in sde.alpha_sigma(jnp.asarray(t0, jnp.float32)))
    ae, se = (float(v) for v in sde.alpha_sigma(jnp.asarray(sde.eps, jnp.float32)))
    p0, pe = a0**2 * d + s0**2, ae**2 * d + se**2
    if stochastic:
        m_diag, q_diag = (a0 / ae) * pe / p0, pe - (a0 / ae) ** 2 * pe**2 / p0
    else:
        m_diag, q_diag = np.sqrt(pe / p0), np.zeros_like(d)
    return u @ np.diag(m_diag) @ u.T, u @ np.diag(q_diag) @ u.T, (a0, s0, ae)


def exact_law(model, sde, guide, t0, stochastic, repeats=1):
    """Mean and covariance of SDEdit's output after ``repeats`` cycles."""
    m = model.means[0]
    big_m, q, (a0, s0, ae) = _cycle_map(model, sde, t0, stochastic)
    mean, cov = np.asarray(guide, np.float64), np.zeros((len(m), len(m)))
    for _ in range(repeats):
        mean = ae * m + a0 * big_m @ (mean - m)
        cov = a0**2 * big_m @ cov @ big_m.T + s0**2 * big_m @ big_m.T + q
    return mean, cov


def _run(sde, t0, sampler, *, model=MODEL, guide=GUIDE, repeats=1, mask=None, key=0, n=N):
    guides = jnp.broadcast_to(jnp.asarray(guide, jnp.float32), (n, model.dim))
    fn = jax.jit(partial(dj.tasks.sdedit, model.score_fn(sde), sde, sampler=sampler, repeats=repeats))
    return np.asarray(fn(guides, key=jax.random.key(key), t0=t0, mask=mask), np.float64)


def _check_law(samples, mean, cov, *, mean_tol=5.0, cov_tol=0.08):
    """Sample mean within ``mean_tol`` standard errors (+ a small floor), covariance within ``cov_tol``."""
    got_mean, got_cov = samples.mean(0), np.cov(samples.T)
    stderr = np.sqrt(np.diag(cov) / len(samples)) + 0.01
    z = np.abs(got_mean - mean) / stderr
    cov_err = np.linalg.norm(got_cov - cov) / np.linalg.norm(cov)
    assert z.max() < mean_tol, f"mean {got_mean} vs exact {mean} (max z {z.max():.1f})"
    assert cov_err < cov_tol, f"covariance error {cov_err:.3f}\n{got_cov}\nvs exact\n{cov}"
    return z.max(), cov_err


@pytest.mark.parametrize(
    "t0, sampler", [(0.3, EulerMaruyama(400)), (0.6, EulerMaruyama(400)), (0.5, DEFAULT_SAMPLER)], ids=["em-0.3", "em-0.6", "default-0.5"]
)
def test_stochastic_sampler_gives_the_posterior(t0, sampler):
    samples = _run(VPSDE(), t0, sampler)
    mean, cov = exact_law(MODEL, VPSDE(), GUIDE, t0, stochastic=True)
    _check_law(samples, mean, cov)
    with pytest.raises(AssertionError):
        _check_law(samples, *exact_law(MODEL, VPSDE(), GUIDE, t0, stochastic=False))


@pytest.mark.parametrize(
    "t0, sampler", [(0.3, DPMSolverPP(50, order=2)), (0.6, DPMSolverPP(50, order=2)), (0.45, Heun(50))], ids=["dpm-0.3", "dpm-0.6", "heun-0.45"]
)
def test_deterministic_sampler_gives_the_flow_pushforward(t0, sampler):
    samples = _run(VPSDE(), t0, sampler)
    mean, cov = exact_law(MODEL, VPSDE(), GUIDE, t0, stochastic=False)
    _check_law(samples, mean, cov)
    # The check tells the two laws apart: the pushforward is not the posterior.
    with pytest.raises(AssertionError):
        _check_law(samples, *exact_law(MODEL, VPSDE(), GUIDE, t0, stochastic=True))


@pytest.mark.parametrize("sde", [SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=20.0)], ids=["subvp", "ve"])
def test_other_processes(sde):
    t0 = 0.5
    _check_law(_run(sde, t0, EulerMaruyama(400)), *exact_law(MODEL, sde, GUIDE, t0, stochastic=True))
    _check_law(_run(sde, t0, DDIM(100)), *exact_law(MODEL, sde, GUIDE, t0, stochastic=False))


def test_t0_equal_T_samples_the_data_law():
    sde = VPSDE()
    samples = _run(sde, sde.T, EulerMaruyama(400))
    mean, cov = exact_law(MODEL, sde, GUIDE, sde.T, stochastic=True)
    # The guide's weight alpha(T) = 0.0067 leaves the data law up to ~1% of a std.
    ae, se = (float(v) for v in sde.alpha_sigma(jnp.asarray(sde.eps)))
    data_cov = ae**2 * MODEL.covariances[0] + se**2 * np.eye(DIM)
    np.testing.assert_allclose(mean, ae * MODEL.means[0], atol=0.05)
    np.testing.assert_allclose(cov, data_cov, atol=1e-3)
    _check_law(samples, ae * MODEL.means[0], data_cov)


@pytest.mark.slow
def test_langevin_corrector_is_not_faithful():
    """A corrector pulls toward the unconditional law: its output misses SDEdit's law."""
    sde, t0 = VPSDE(), 0.3
    samples = _run(sde, t0, PredictorCorrector(100, snr=0.16, corrector_steps=2))
    mean, cov = exact_law(MODEL, sde, GUIDE, t0, stochastic=True)
    z = np.abs(samples.mean(0) - mean) / np.sqrt(np.diag(cov) / N)
    assert z.max() > 10.0


def test_repeats_reperturb_the_previous_output():
    sde, t0, repeats = VPSDE(), 0.4, 3
    samples = _run(sde, t0, EulerMaruyama(300), repeats=repeats)
    mean, cov = exact_law(MODEL, sde, GUIDE, t0, stochastic=True, repeats=repeats)
    _check_law(samples, mean, cov)
    # Re-perturbing the guide every cycle would leave the one-cycle law, far from this one.
    with pytest.raises(AssertionError):
        _check_law(samples, *exact_law(MODEL, sde, GUIDE, t0, stochastic=True, repeats=1))


def _block_model():
    """Coordinates {0, 1} and {2, 3} independent: the edited block's law is exact under paste-back."""
    rng = np.random.default_rng(7)
    blocks = [np.linalg.qr(rng.normal(size=(2, 2)))[0] for _ in range(2)]
    u = np.zeros((DIM, DIM))
    u[:2, :2], u[2:, 2:] = blocks
    return GaussianMixture(
        weights=np.ones(1), means=rng.normal(size=(1, DIM)), eigvals=rng.uniform(0.3, 1.5, (1, DIM)), eigvecs=u[None]
    )


def test_mask_keeps_the_guide_and_edits_the_rest_exactly():
    model, sde, t0 = _block_model(), VPSDE(), 0.5
    mask = np.array([1.0, 1.0, 0.0, 0.0], np.float32)  # keep the first block
    for sampler, stochastic in [(EulerMaruyama(400), True), (DPMSolverPP(50), False)]:
        samples = _run(sde, t0, sampler, model=model, mask=mask)
        np.testing.assert_array_equal(samples[:, :2], np.broadcast_to(GUIDE[:2].astype(np.float32), (N, 2)))
        mean, cov = exact_law(model, sde, GUIDE, t0, stochastic=stochastic)
        _check_law(samples[:, 2:], mean[2:], cov[2:, 2:])


def test_mask_reinjects_kept_pixels_from_the_forward_process():
    """At every step the score sees the kept pixels at alpha(t) guide + sigma(t) z, one z per cycle."""
    sde, t0, n = VPSDE(), 0.5, 8
    mask = np.array([1.0, 0.0, 1.0, 0.0], np.float32)
    guide = jnp.asarray(np.tile(GUIDE, (n, 1)), jnp.float32)
    seen = []

    def score_fn(x, t):
        jax.debug.callback(lambda x, t: seen.append((np.asarray(x), np.asarray(t))), x, t)
        return MODEL.score_fn(sde)(x, t)

    dj.tasks.sdedit(score_fn, sde, guide, key=jax.random.key(0), t0=t0, sampler=EulerMaruyama(20), mask=mask)
    assert len(seen) == 20
    noise = []
    for x, t in seen:
        alpha, sigma = (np.asarray(v, np.float64)[:, None] for v in sde.alpha_sigma(jnp.asarray(t)))
        noise.append((x[:, [0, 2]] - alpha * GUIDE[[0, 2]]) / sigma)
    noise = np.stack(noise)  # (steps, n, 2): the same standard normal draw at every step
    np.testing.assert_allclose(noise, np.broadcast_to(noise[:1], noise.shape), atol=2e-3)
    assert 0.3 < noise.std() < 3.0


def test_jit_whole_no_retrace_traced_t0():
    sde = VPSDE()
    traces = []

    def score_fn(x, t):
        traces.append(1)
        return MODEL.score_fn(sde)(x, t)

    fn = jax.jit(partial(dj.tasks.sdedit, score_fn, sde, sampler=DDIM(5), return_info=True))
    guides = jnp.asarray(np.tile(GUIDE, (4, 1)), jnp.float32)
    out, info = fn(guides, key=jax.random.key(0), t0=0.5)
    n_traces = len(traces)
    out2, _ = fn(guides + 0.1, key=jax.random.key(1), t0=0.7)
    assert len(traces) == n_traces  # new images, key and t0: no retrace
    assert int(info["nfe"]) == 5 and out.shape == guides.shape
    assert not np.allclose(out, out2)


def test_repeats_nfe_and_program_size():
    sde = VPSDE()
    guides = jnp.zeros((2, DIM), jnp.float32)
    _, info = dj.tasks.sdedit(
        MODEL.score_fn(sde), sde, guides, key=jax.random.key(0), sampler=DDIM(4), repeats=3, return_info=True
    )
    assert int(info["nfe"]) == 12


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(guide=np.zeros((2, DIM), np.int32)), "floating"),
        (dict(guide=np.zeros((DIM,), np.float32)), "batch axis"),
        (dict(t0=0.0), r"t0 must lie in"),
        (dict(t0=1e-3), r"t0 must lie in"),
        (dict(t0=1.5), r"t0 must lie in"),
        (dict(t0=np.array([0.5, 0.5])), "scalar"),
        (dict(mask=np.ones((3,), np.float32)), "does not broadcast"),
        (dict(mask=np.full((DIM,), 0.5, np.float32)), "binary"),
        (dict(repeats=0), "repeats"),
        (dict(repeats=1.0), "repeats"),
        (dict(sampler="ddim"), "sampler"),
    ],
)
def test_bad_inputs(kwargs, match):
    sde = VPSDE()
    args = dict(guide=np.zeros((2, DIM), np.float32))
    args.update(kwargs)
    guide = args.pop("guide")
    with pytest.raises(ValueError, match=match):
        dj.tasks.sdedit(MODEL.score_fn(sde), sde, guide, key=jax.random.key(0), **args)
