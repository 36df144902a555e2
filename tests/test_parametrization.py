"""eps / x0 / v / score conversions, network wrapping and Tweedie, against exact values."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.parametrization import PREDICTION_KINDS, convert, model_score_fn, network_time_input, tweedie_x0

import gaussians

PROCESSES = {
    "vp": dj.VPSDE(),
    "subvp": dj.SubVPSDE(),
    "ve": dj.VESDE(),
    "cosine": dj.CosineVPSDE(),
    "discrete": dj.DiscreteVPSDE(),
}


def _exact_predictions(sde, seed=0):
    """x_t built from known x0 and noise, with every parametrization's true value."""
    rng = np.random.default_rng(seed)
    x0 = jnp.asarray(rng.normal(size=(7, 3, 2)))
    eps = jnp.asarray(rng.normal(size=(7, 3, 2)))
    t = jnp.linspace(sde.eps, sde.T, 7)
    alpha, sigma = (a[:, None, None] for a in sde.alpha_sigma(t))
    x = alpha * x0 + sigma * eps
    truth = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma}
    return x, t, truth


@pytest.mark.parametrize("name", list(PROCESSES))
def test_convert_every_pair_matches_exact_values(name):
    sde = PROCESSES[name]
    with jax.enable_x64(True):
        x, t, truth = _exact_predictions(sde)
        for source, target in itertools.product(PREDICTION_KINDS, PREDICTION_KINDS):
            got = convert(truth[source], source=source, target=target, x=x, t=t, sde=sde)
            # x0 from eps divides by alpha (tiny near T for VP); compare on the scale of x.
            scale = 1.0 + float(jnp.max(jnp.abs(truth[target])))
            np.testing.assert_allclose(got, truth[target], atol=1e-8 * scale, err_msg=f"{source}->{target}")


def test_convert_rejects_unknown_kind():
    sde = dj.VPSDE()
    x = jnp.ones((2, 3))
    t = jnp.full((2,), 0.5)
    with pytest.raises(ValueError, match="unknown prediction kind 'noise'"):
        convert(x, source="noise", target="eps", x=x, t=t, sde=sde)
    with pytest.raises(ValueError, match="unknown prediction kind"):
        convert(x, source="eps", target="noise", x=x, t=t, sde=sde)


def _exact_prediction_network(sde, mean, var, prediction, time_input):
    """A fake network: the exact ``prediction`` for data ``N(mean, var I)``.

    It only sees the conditioning scalar, so it recovers t from it; that checks the
    value ``model_score_fn`` feeds the network as well as the conversion back.
    """

    def to_time(c):
        if time_input == "t":
            return c
        if time_input == "log_snr":
            return sde.t_from_log_snr(c)
        if time_input == "index":
            return (c + 1.0) / sde.num_steps
        raise AssertionError(time_input)

    def apply_fn(x, c):
        t = to_time(c)
        alpha, sigma = (a[:, None] for a in sde.alpha_sigma(t))
        score = -(x - alpha * mean) / (alpha**2 * var + sigma**2)
        return convert(score, source="score", target=prediction, x=x, t=t, sde=sde)

    return apply_fn


@pytest.mark.parametrize("prediction", PREDICTION_KINDS)
@pytest.mark.parametrize("name, time_input", [("vp", "t"), ("ve", "log_snr"), ("discrete", "index"), ("cosine", "t")])
def test_model_score_fn_with_fake_network(prediction, name, time_input):
    sde = PROCESSES[name]
    mean, var = 0.7, 0.3
    with jax.enable_x64(True):
        score_fn = model_score_fn(
            _exact_prediction_network(sde, mean, var, prediction, time_input),
            sde,
            prediction=prediction,
            time_input=time_input,
        )
        x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)))
        t = jnp.linspace(0.05, 0.9, 5) * sde.T
        alpha, sigma = (a[:, None] for a in sde.alpha_sigma(t))
        want = -(x - alpha * mean) / (alpha**2 * var + sigma**2)
        np.testing.assert_allclose(score_fn(x, t), want, rtol=1e-7)


def test_network_time_input_values():
    sde = dj.DiscreteVPSDE(num_steps=1000)
    t = jnp.array([0.001, 0.5, 1.0])
    np.testing.assert_allclose(network_time_input(sde, t, "index"), [0.0, 499.0, 999.0], atol=1e-4)
    np.testing.assert_allclose(network_time_input(sde, t, "alpha"), sde.alpha_sigma(t)[0])
    np.testing.assert_allclose(network_time_input(sde, t, "sigma"), sde.alpha_sigma(t)[1])
    with pytest.raises(ValueError, match="unknown time input"):
        model_score_fn(lambda x, c: x, sde, time_input="step")
    with pytest.raises(ValueError, match="unknown prediction kind"):
        model_score_fn(lambda x, c: x, sde, prediction="noise")


@pytest.mark.parametrize("name", list(PROCESSES))
def test_tweedie_is_the_exact_posterior_mean_for_gaussian_data(name):
    """E[x0 | x_t] = mu + U diag(alpha d / (alpha^2 d + sigma^2)) U^T (x_t - alpha mu)."""
    sde = PROCESSES[name]
    data = gaussians.gaussian(dim=4, seed=3)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 4)) * 2.0)
        t = jnp.linspace(sde.eps, 0.9 * sde.T, 6)
        got = tweedie_x0(data.score(x, t, sde), x, t, sde)
        alpha, sigma = (np.asarray(a)[:, None] for a in sde.alpha_sigma(t))
        mu, d, u = data.means[0], data.eigvals[0], data.eigvecs[0]
        gain = alpha * d / (alpha**2 * d + sigma**2)  # (B, D) in the eigenbasis
        proj = (np.asarray(x) - alpha * mu) @ u
        want = mu + (gain * proj) @ u.T
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
