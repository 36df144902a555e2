"""ScoreSdeVePipeline's predictor-corrector loop against diffjax's, from the same x_T and the same noise draws.

The fixture (tests/fixtures/diffusers_sdeve/, from ``tests/make_interop_fixtures.py --only sdeve``) is a
ScoreSdeVePipeline folder with the tiny random NCSN++ UNet, the pipeline's output after 6 steps, its last
predictor mean, and every noise draw it made (per step: the corrector's, then the predictor's). diffjax's
sampler is run with its noise draws replaced by the same arrays, in the same order.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback

import diffjax as dj
from diffjax.samplers import pc

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers_sdeve")


def _nhwc(x):
    return np.transpose(x, (*range(x.ndim - 3), -2, -1, -3))


def _replayed_noise(draws):
    """noise_like that hands out ``draws`` in call order (ordered host callbacks keep the loop's order)."""
    queue = list(draws)

    def next_draw():
        return queue.pop(0)

    def noise_like(key, x):
        return io_callback(next_draw, jax.ShapeDtypeStruct(x.shape, x.dtype), ordered=True)

    return noise_like, queue


def test_score_sde_ve_pipeline_loop_matches_diffusers(monkeypatch):
    ref = dict(np.load(os.path.join(FIX, "reference.npz")))
    steps = int(ref["steps"])
    run = dj.load_run(os.path.join(FIX, "sdeve_pipeline"))
    assert run.sampler == dj.samplers.PredictorCorrector(2000, snr=0.15, corrector_steps=1, discrete_sigmas=True)
    sampler = dj.samplers.PredictorCorrector(steps, snr=0.15, corrector_steps=1, discrete_sigmas=True)
    noise_like, left = _replayed_noise(list(_nhwc(ref["noise"]).reshape(-1, *_nhwc(ref["x_T"]).shape)))
    monkeypatch.setattr(pc, "noise_like", noise_like)
    x_T = jnp.asarray(_nhwc(ref["x_T"])) * run.sde.sigma_max  # the pipeline's randn * init_noise_sigma
    x0, info = jax.jit(lambda x: dj.sample(run.score_fn, run.sde, x, key=jax.random.key(0), sampler=sampler))(x_T)
    assert not left and int(info["nfe"]) == 2 * steps
    want = _nhwc(ref["sample_mean"])
    np.testing.assert_allclose(np.asarray(x0), want, atol=1e-4 * np.abs(want).max(), rtol=0)
    # The pipeline's image is that mean clamped to [0, 1]; run's data range says so.
    np.testing.assert_allclose(run._unit(x0), ref["images"], atol=1e-4 * np.abs(want).max())


def test_discrete_sigma_predictor_follows_score_sdes_recursion(monkeypatch):
    """With the noise draws set to zero and no corrector steps, on the exact score of N(0, s0^2 I) data,
    the loop is score_sde's recursion x <- x + (sigma_k^2 - sigma_(k-1)^2) score(x, t_i), k = N - 1 - i,
    written here in NumPy."""
    monkeypatch.setattr(pc, "noise_like", lambda key, x: jnp.zeros_like(x))
    sde = dj.VESDE(sigma_min=0.01, sigma_max=5.0, eps=1e-5)
    s0 = 0.5

    def score(x, t):
        var = s0**2 + sde.sigma(t) ** 2
        return -x / var[:, None]

    n = 8
    x = jnp.ones((1, 3))
    sampler = dj.samplers.PredictorCorrector(n, snr=0.1, corrector_steps=0, discrete_sigmas=True)
    got, _ = dj.sample(score, sde, x, key=jax.random.key(0), sampler=sampler)
    ts = np.linspace(1.0, 1e-5, n)
    sig = np.exp(np.linspace(np.log(0.01), np.log(5.0), n))
    want = np.ones(3)
    for i, t in enumerate(ts):
        k = n - 1 - i
        g2 = sig[k] ** 2 - (sig[k - 1] ** 2 if k else 0.0)
        want = want - g2 * want / (s0**2 + (0.01 * 500.0**t) ** 2)
    np.testing.assert_allclose(np.asarray(got)[0], want, rtol=1e-5)
    with pytest.raises(ValueError, match="score_sde's VE loop"):
        dj.sample(score, dj.VPSDE(), x, key=jax.random.key(0), sampler=sampler)
