"""Losses against exact answers: exact predictions give zero loss on point data,
the score-matching identity holds for Gaussian data, importance sampling is unbiased."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.losses import importance_sampler, make_loss_fn
from diffjax.parametrization import convert

from gaussians import gaussian

PROCESSES = [dj.VPSDE(), dj.SubVPSDE(), dj.VESDE(), dj.CosineVPSDE(), dj.DiscreteVPSDE()]


def _exact_point_network(sde, x0_point, prediction):
    """The exact network for data that is a single point: it knows x0, so every
    parametrization is available from (x_t, t)."""

    def apply_fn(x_t, t):
        alpha, sigma = sde.alpha_sigma(t)
        eps = (x_t - alpha[:, None] * x0_point) / sigma[:, None]
        return convert(eps, source="eps", target=prediction, x=x_t, t=t, sde=sde)

    return apply_fn


@pytest.mark.parametrize("sde", PROCESSES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_exact_prediction_has_zero_loss(sde, prediction, kind):
    x0_point = jnp.array([0.3, -0.7, 0.5])
    x0 = jnp.tile(x0_point, (64, 1))
    loss_fn = make_loss_fn(sde, prediction=prediction, kind=kind, num_steps=100)
    loss, aux = loss_fn(_exact_point_network(sde, x0_point, prediction), x0, jax.random.PRNGKey(0))
    assert aux["per_example"].shape == (64,)
    assert float(loss) < 1e-6


def test_score_matching_identity_on_gaussian_data():
    """DSM loss(s* + delta) - loss(s*) = E_t[sigma_t^2] * delta^2 (uniform weighting, eps-space):
    the cross term vanishes because E[sigma s* + z | x_t] = 0 for the exact score s*."""
    sde = dj.VPSDE()
    data = gaussian(dim=3, seed=1)
    delta = 0.2
    loss_fn = make_loss_fn(sde, prediction="score")
    x0 = data.sample(jax.random.PRNGKey(0), 200_000)
    key = jax.random.PRNGKey(1)  # common random numbers for both losses

    exact = lambda x, t: data.score(x, t, sde)
    shifted = lambda x, t: data.score(x, t, sde) + delta
    l_exact, aux = loss_fn(exact, x0, key)
    l_shift, _ = loss_fn(shifted, x0, key)
    _, sigma = sde.alpha_sigma(aux["t"])
    expected = float(jnp.mean(sigma**2)) * delta**2
    assert float(l_shift - l_exact) == pytest.approx(expected, rel=0.03)


@pytest.mark.parametrize("sde", [dj.VPSDE(), dj.VESDE()], ids=lambda s: type(s).__name__)
def test_importance_sampling_is_unbiased(sde):
    """With a zero eps-prediction the per-example loss is w(t) * mean(z^2), so both
    estimators must agree on E_t~U[w(t)] = Z / (T - eps)."""
    x0 = jnp.zeros((200_000, 4))
    zero = lambda x, t: jnp.zeros_like(x)
    uniform = make_loss_fn(sde, weighting="likelihood")
    importance = make_loss_fn(sde, weighting="likelihood", t_sampling="importance")
    l_uniform, aux_uniform = uniform(zero, x0, jax.random.PRNGKey(0))
    l_importance, aux = importance(zero, x0, jax.random.PRNGKey(0))
    _, weight = importance_sampler(sde)
    assert float(l_importance) == pytest.approx(weight, rel=0.01)
    assert float(l_uniform) == pytest.approx(weight, rel=0.05)
    # For VP the weight ~ 1/t near 0, and importance sampling removes that variance
    # (for VE g^2/sigma^2 is constant, so the two samplers coincide).
    if isinstance(sde, dj.VPSDE):
        assert float(jnp.std(aux["per_example"])) < 0.5 * float(jnp.std(aux_uniform["per_example"]))


def test_importance_density_matches_weight():
    """Histogram of importance-sampled t against g^2/sigma^2 (normalised), VP process."""
    sde = dj.VPSDE()
    sample_t, _ = importance_sampler(sde)
    t = np.asarray(sample_t(jax.random.PRNGKey(3), 400_000))
    edges = np.linspace(0.1, 1.0, 10)
    counts, _ = np.histogram(t, edges)
    mids = 0.5 * (edges[1:] + edges[:-1])
    _, g = sde.sde(jnp.zeros((len(mids), 1)), jnp.asarray(mids))
    _, sigma = sde.alpha_sigma(jnp.asarray(mids))
    w = np.asarray(g**2 / sigma**2)
    np.testing.assert_allclose(counts / counts.sum(), w / w.sum(), rtol=0.03)


def test_mask_restricts_the_loss():
    sde = dj.VPSDE()
    x0 = jnp.zeros((8, 4, 4, 1))
    mask = jnp.zeros((4, 4, 1)).at[:2].set(1.0)

    def wrong_outside_mask(x_t, t):
        exact = _exact_point_network(sde, jnp.zeros(16), "x0")(x_t.reshape(8, -1), t).reshape(x_t.shape)
        return exact + (1.0 - mask)  # error only where the loss does not count

    loss_fn = make_loss_fn(sde, prediction="x0", kind="discrete")
    loss, _ = loss_fn(wrong_outside_mask, x0, jax.random.PRNGKey(0), mask=mask)
    assert float(loss) < 1e-8
    unmasked, _ = loss_fn(wrong_outside_mask, x0, jax.random.PRNGKey(0))
    assert float(unmasked) == pytest.approx(0.5, rel=1e-5)


def test_l1_norm():
    sde = dj.VPSDE()
    loss_fn = make_loss_fn(sde, prediction="x0", kind="discrete", norm="l1")
    x0 = jnp.zeros((4, 3))
    loss, _ = loss_fn(lambda x, t: jnp.full_like(x, -0.5), x0, jax.random.PRNGKey(0))
    assert float(loss) == pytest.approx(0.5)


def test_loss_is_jittable_and_differentiable():
    sde = dj.VPSDE()
    loss_fn = make_loss_fn(sde)
    x0 = jax.random.normal(jax.random.PRNGKey(0), (8, 5))

    def objective(w, key):
        return loss_fn(lambda x, t: w * x, x0, key)[0]

    g = jax.jit(jax.grad(objective))(jnp.float32(0.5), jax.random.PRNGKey(1))
    assert np.isfinite(float(g))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prediction="noise"), "prediction kind"),
        (dict(kind="ddpm"), "loss kind"),
        (dict(norm="l3"), "norm"),
        (dict(weighting="snr"), "weighting"),
        (dict(t_sampling="importance"), "needs weighting='likelihood'"),
        (dict(kind="discrete", weighting="likelihood"), "kind='discrete'"),
        (dict(kind="discrete", num_steps=0), "num_steps"),
        (dict(time_input="step"), "time input"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_loss_fn(dj.VPSDE(), **kwargs)


def test_integer_data_raises():
    loss_fn = make_loss_fn(dj.VPSDE())
    with pytest.raises(ValueError, match="floating point"):
        loss_fn(lambda x, t: x, jnp.zeros((2, 3), jnp.int32), jax.random.PRNGKey(0))


def test_sr3_noise_levels_are_uniform_between_adjacent_grid_levels():
    """SR3 training: n ~ U{0..N-1}, gamma ~ U(gamma_n, gamma_{n-1}). With N small the
    density of gamma is piecewise constant: mass 1/N on each interval, flat inside."""
    sde = dj.VPSDE()
    n_steps = 5
    loss_fn = make_loss_fn(sde, kind="discrete", t_sampling="sr3", num_steps=n_steps, time_input="alpha")
    seen = {}

    def probe(x_t, c):
        seen["gamma"] = c
        return jnp.zeros_like(x_t)

    _, aux = loss_fn(probe, jnp.zeros((200_000, 1)), jax.random.PRNGKey(0))
    gamma = np.asarray(seen["gamma"])
    # The network sees gamma = alpha(t) for the t the loss used.
    np.testing.assert_allclose(gamma, np.asarray(sde.alpha_sigma(aux["t"])[0]), rtol=1e-4)
    grid_t = sde.eps + (sde.T - sde.eps) * np.arange(n_steps) / (n_steps - 1)
    levels = np.concatenate([[1.0], np.asarray(sde.alpha_sigma(jnp.asarray(grid_t))[0])])
    for hi, lo in zip(levels[:-1], levels[1:]):
        inside = gamma[(gamma > lo) & (gamma <= hi)]
        assert inside.size / gamma.size == pytest.approx(1 / n_steps, abs=0.01)
        # Flat inside the interval: the two halves hold equal mass.
        lower_half = np.mean(inside < 0.5 * (lo + hi))
        assert lower_half == pytest.approx(0.5, abs=0.02)


def test_sr3_sampling_needs_a_decaying_signal():
    with pytest.raises(ValueError, match="alpha"):
        make_loss_fn(dj.VESDE(), kind="discrete", t_sampling="sr3")
    with pytest.raises(ValueError, match="kind='discrete'"):
        make_loss_fn(dj.VPSDE(), t_sampling="sr3")
