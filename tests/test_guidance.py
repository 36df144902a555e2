"""Paste-back of known pixels (diffjax.guidance) with every sampler, against closed forms.

The exact-answer case: 4x4x1 Gaussian images with *independent* pixels,
``x ~ N(mu, diag(v))``. There the missing pixels are independent of the known
ones, so the exact inpainting posterior is the prior marginal ``N(mu_u, v_u)``,
and a correct paste-back sampler must reproduce it (and the known pixels bit for
bit). The score is exact at every noise level (``tests/gaussians.py``).

Independent pixels cannot tell a paste-back that ignores the known pixels from a
correct one, so the hole's law is also checked on a *correlated* Gaussian image
(the RePaint fixture), against its exact conditional: see
``test_correlated_pixels_hole_follows_the_known_half``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import samplers
from diffjax.guidance import check_known_mask, paste_back, sample_with_paste_back
from diffjax.sde import VESDE, VPSDE
from gaussians import GaussianMixture, correlated_image

H = W = 4
RNG = np.random.default_rng(3)
MEAN = RNG.normal(size=H * W) * 0.5
VAR = RNG.uniform(0.1, 1.0, size=H * W)
MODEL = GaussianMixture(weights=np.ones(1), means=MEAN[None], eigvals=VAR[None], eigvecs=np.eye(H * W)[None])
MASK = np.zeros((H, W), np.float32)
MASK[:, : W // 2] = 1.0  # left half known
KNOWN_FLAT = MASK.ravel() > 0.5
TRUTH = (MEAN + np.sqrt(VAR) * RNG.normal(size=H * W)).reshape(1, H, W, 1).astype(np.float32)

ALL_SAMPLERS = [
    samplers.EulerMaruyama(steps=20),
    samplers.ReverseDiffusion(steps=20),
    samplers.PredictorCorrector(steps=10),
    samplers.Ancestral(steps=20),
    samplers.DDIM(steps=20),
    samplers.Heun(steps=10),
    samplers.DPMSolverPP(steps=10, order=2),
    samplers.ProbabilityFlowODE(rtol=1e-4, atol=1e-4),
]


def _images(n):
    return jnp.broadcast_to(jnp.asarray(TRUTH), (n, H, W, 1))


@pytest.mark.parametrize("sampler", ALL_SAMPLERS, ids=lambda s: type(s).__name__)
def test_every_sampler_keeps_known_pixels_and_fills_the_hole(sampler):
    sde = VPSDE()
    fn = jax.jit(partial(sample_with_paste_back, MODEL.score_fn(sde), sde, sampler=sampler))
    out, info = fn(_images(64), MASK, key=jax.random.key(0))
    out = np.asarray(out).reshape(64, -1)
    np.testing.assert_array_equal(out[:, KNOWN_FLAT], np.broadcast_to(TRUTH.ravel()[KNOWN_FLAT], (64, 8)))
    assert np.all(np.isfinite(out)) and int(info["nfe"]) >= 1
    # The hole is sampled, not copied: the samples differ from one another.
    assert out[:, ~KNOWN_FLAT].std(axis=0).min() > 0.05


@pytest.mark.parametrize(
    "sde, sampler",
    [(VPSDE(), samplers.DPMSolverPP(steps=20, order=2)),
     (VPSDE(), samplers.EulerMaruyama(steps=200)),
     (VESDE(sigma_min=0.01, sigma_max=20.0), samplers.Heun(steps=40))],
    ids=["vp-dpm_solver_pp", "vp-euler_maruyama", "ve-heun"],
)
def test_independent_pixels_posterior_is_the_prior_marginal(sde, sampler):
    """Exact answer: with independent pixels the hole's posterior is N(mu_u, v_u).

    Measured with 4,000 samples (key 1), largest mean error (in posterior
    std units) and range of the variance ratio over the 8 missing pixels:
    DPM-Solver++ 20 steps 0.027, 0.986-1.039; Euler-Maruyama 200 steps 0.029,
    0.978-1.046; Heun 40 steps (VE) 0.056, 0.969-1.020. Monte-Carlo error
    alone is ~0.016 (mean) and ~0.022 (variance ratio) per pixel, so the
    bounds (0.08, 0.12) are about 4-5 standard errors.
    """
    n = 4000
    fn = jax.jit(partial(sample_with_paste_back, MODEL.score_fn(sde), sde, sampler=sampler))
    out = np.asarray(fn(_images(n), MASK, key=jax.random.key(1))[0], np.float64).reshape(n, -1)
    hole = out[:, ~KNOWN_FLAT]
    mean_err = np.abs(hole.mean(0) - MEAN[~KNOWN_FLAT]) / np.sqrt(VAR[~KNOWN_FLAT])
    var_ratio = hole.var(0) / VAR[~KNOWN_FLAT]
    print(f"{type(sampler).__name__}: max mean error {mean_err.max():.3f} (std units), "
          f"variance ratio {var_ratio.min():.3f}-{var_ratio.max():.3f}")
    assert mean_err.max() < 0.08
    assert np.all(np.abs(var_ratio - 1.0) < 0.12)


def test_correlated_pixels_hole_follows_the_known_half():
    """Correlated 4x4 Gaussian: the hole must respond to the known half's values.

    The exact conditional mean of the hole is linear in the known pixels,
    ``m*(y) = mu_u + G (y_k - mu_k)``. Two known halves ``y`` and ``y'`` are filled with
    the same noise (common random numbers); the hole means' difference ``D`` is
    compared with the exact ``G (y_k - y'_k)``. Paste-back is plain replacement, not
    exact inference (like RePaint with r = 1, which ``tests/test_repaint.py`` measures),
    so it carries only part of that response. Measured with 2,000 samples each, key 1,
    DPM-Solver++ 20 steps: response ratio ``<D, G dy> / |G dy|^2`` 0.38, mean error 0.61,
    KL 2.2 against the exact conditional; a paste-back that ignores the known values
    (pastes ``sigma * noise``) gives ratio 0.00, mean error 0.87, KL 7.1.
    """
    image = correlated_image(H, W)
    known = KNOWN_FLAT
    other = image.truth.copy()
    other[known] = image.mean[known] - (image.truth[known] - image.mean[known]) + 0.8
    n = 2000
    sde = VPSDE()
    sampler = samplers.DPMSolverPP(steps=20, order=2)
    fn = jax.jit(partial(sample_with_paste_back, image.model.score_fn(sde), sde, sampler=sampler))

    def fill(y):  # the same key for both: the same x_T and paste-back noise
        images = jnp.broadcast_to(jnp.asarray(y.reshape(1, H, W, 1), jnp.float32), (n, H, W, 1))
        return np.asarray(fn(images, MASK, key=jax.random.key(1))[0], np.float64).reshape(n, -1)

    first, second = fill(image.truth), fill(other)
    mean_err, _, kl = image.errors(first, known)
    cov = image.cov
    gain = np.linalg.solve(cov[known][:, known], cov[known][:, ~known]).T
    want = gain @ (image.truth[known] - other[known])
    got = first[:, ~known].mean(0) - second[:, ~known].mean(0)
    ratio = got @ want / (want @ want)
    prior_err = np.linalg.norm(image.mean[~known] - image.posterior(known)[0]) / np.sqrt(
        np.trace(image.posterior(known)[1]))
    print(f"response ratio {ratio:.3f}, mean error {mean_err:.3f} (prior's {prior_err:.3f}), KL {kl:.2f}")
    assert 0.25 < ratio < 0.6
    assert mean_err < 0.75 < prior_err
    assert kl < 3.0


def test_paste_back_feeds_the_noised_known_pixels_and_their_exact_score():
    sde = VPSDE()
    known = jnp.asarray(TRUTH)
    noise = jax.random.normal(jax.random.key(2), known.shape)
    seen = {}

    def spy(x, t):
        seen["x"] = x
        return jnp.zeros_like(x)

    guided = paste_back(spy, sde, known, MASK, noise)
    x = jax.random.normal(jax.random.key(3), known.shape)
    t = jnp.full((1,), 0.4)
    score = np.asarray(guided(x, t)).ravel()
    alpha, sigma = (float(v[0]) for v in sde.alpha_sigma(t))
    fed = np.asarray(seen["x"]).ravel()
    pasted = alpha * np.asarray(known).ravel() + sigma * np.asarray(noise).ravel()
    np.testing.assert_allclose(fed[KNOWN_FLAT], pasted[KNOWN_FLAT], rtol=1e-6)
    np.testing.assert_array_equal(fed[~KNOWN_FLAT], np.asarray(x).ravel()[~KNOWN_FLAT])
    # Known coordinates: the score of N(alpha y, sigma^2), in closed form.
    expected = -(np.asarray(x).ravel() - alpha * np.asarray(known).ravel()) / sigma**2
    np.testing.assert_allclose(score[KNOWN_FLAT], expected[KNOWN_FLAT], rtol=1e-5)
    np.testing.assert_array_equal(score[~KNOWN_FLAT], 0.0)


def test_bad_masks_and_noise_are_refused():
    image = jnp.zeros((2, H, W, 1))
    with pytest.raises(ValueError, match="binary"):
        check_known_mask(np.full((H, W), 0.5), image)
    with pytest.raises(ValueError, match="does not broadcast"):
        check_known_mask(np.ones((H + 1, W)), image)
    with pytest.raises(ValueError, match="noise must be shaped"):
        paste_back(lambda x, t: x, VPSDE(), image, MASK, jnp.zeros((1, H, W, 1)))
    with pytest.raises(ValueError, match="floating-point"):
        sample_with_paste_back(lambda x, t: x, VPSDE(), jnp.zeros((2, H, W, 1), jnp.int32), MASK,
                               key=jax.random.key(0), sampler=samplers.DDIM(steps=2))


def test_clip_x0_keeps_in_range_scores_and_clips_the_rest():
    from diffjax.guidance import clip_x0

    sde = VPSDE()
    t = jnp.full((2,), 0.5)
    alpha, sigma = (float(v[0]) for v in sde.alpha_sigma(t))
    x = jnp.full((2, 3), 0.3)
    # Score whose Tweedie x0 is 0.5 (in range) and 3.0 (out of range): x0 = (x + sigma^2 s) / alpha.
    s_in = (alpha * 0.5 - 0.3) / sigma**2
    s_out = (alpha * 3.0 - 0.3) / sigma**2
    score = jnp.asarray([[s_in] * 3, [s_out] * 3], jnp.float32)
    out = np.asarray(clip_x0(lambda x, t: score, sde)(x, t))
    np.testing.assert_allclose(out[0], s_in, rtol=1e-5)
    np.testing.assert_allclose(out[1], (alpha * 1.0 - 0.3) / sigma**2, rtol=1e-5)
