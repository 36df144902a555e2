"""Keeping what the input already says: SR's low-frequency projection, colorization's luma."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.degradations import LUMA_WEIGHTS, to_grayscale
from diffjax.guidance import consistent_x0
from diffjax.pipelines.palette import PaletteColorization
from diffjax.pipelines.sr3 import SR3Pipeline
from diffjax.tasks.palette import keep_luminance
from diffjax.tasks.sr3 import consistency_projection, downsample, downsample_pinv, super_resolve, upsample

RNG = np.random.default_rng(0)


def _gaussian_cond_score(mean: float, std: float, sde):
    """Exact score of x0 ~ N(mean + 0.1 cond, std^2 I) noised by ``sde`` (cond shifts the mean)."""

    def score(x, t, cond):
        alpha, sigma = sde.alpha_sigma(t)
        alpha, sigma = alpha[:, None, None, None], sigma[:, None, None, None]
        return -(x - alpha * (mean + 0.1 * cond)) / (alpha**2 * std**2 + sigma**2)

    return score


@pytest.mark.parametrize("factor,size", [(4, 16), (2, 12), (8, 32)])
def test_pseudo_inverse_of_downsample_is_a_right_inverse_and_the_projection_is_orthogonal(factor, size):
    low = RNG.uniform(-1, 1, (2, size // factor, size // factor, 3)).astype(np.float32)
    np.testing.assert_allclose(downsample(downsample_pinv(low, factor), factor), low, atol=2e-5)
    x = RNG.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    projected = consistency_projection(x, low, factor)
    np.testing.assert_allclose(downsample(projected, factor), low, atol=2e-5)
    np.testing.assert_allclose(consistency_projection(projected, low, factor), projected, atol=2e-5)  # idempotent
    # The change is orthogonal to the null space of downsample: the projection is the nearest consistent image.
    z = RNG.standard_normal(x.shape).astype(np.float32)
    null = z - downsample_pinv(downsample(z, factor), factor)
    assert abs(np.vdot(x - projected, null)) < 1e-3 * np.linalg.norm(x - projected) * np.linalg.norm(null)
    # Bicubic upsampling is not a right inverse (why the pseudo-inverse is needed).
    assert np.abs(downsample(upsample(low, factor), factor) - low).max() > 1e-2


def test_consistent_x0_makes_every_implied_clean_image_agree_with_the_input():
    sde = dj.VPSDE()
    low = jnp.asarray(RNG.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
    score = _gaussian_cond_score(0.2, 0.5, sde)
    guided = consistent_x0(lambda x, t: score(x, t, 0.0), sde, low, lambda x: downsample(x, 4),
                           lambda y: downsample_pinv(y, 4))
    null = lambda v: v - downsample_pinv(downsample(v, 4), 4)

    @jax.jit
    def implied(x, tt):
        alpha, sigma = sde.alpha_sigma(tt)
        x0 = (x + sigma[0] ** 2 * guided(x, tt)) / alpha[0]
        plain = (x + sigma[0] ** 2 * score(x, tt, 0.0)) / alpha[0]
        return downsample(x0, 4), null(x0), null(plain)

    x = jnp.asarray(RNG.standard_normal((2, 16, 16, 3)), jnp.float32)
    for t in (0.05, 0.5, 0.9):
        low_of_x0, null_x0, null_plain = implied(x, jnp.full((2,), t))
        np.testing.assert_allclose(low_of_x0, low, atol=1e-4)
        # Only the low frequencies moved: the null-space part of x0 is the unguided one.
        np.testing.assert_allclose(null_x0, null_plain, atol=1e-4)


@pytest.mark.parametrize("projection", ["end", "each"])
def test_super_resolve_with_projection_reproduces_its_input(projection):
    sde = dj.VPSDE()
    hr = jnp.asarray(RNG.uniform(-0.9, 0.9, (2, 16, 16, 3)), jnp.float32)
    low = downsample(hr, 4)
    cond = upsample(low, 4)
    traces = []

    def cond_score(x, t, c):
        traces.append(1)
        return _gaussian_cond_score(0.0, 0.6, sde)(x, t, c)

    run = jax.jit(lambda cond, low, key: super_resolve(cond_score, sde, cond, key=key, low=low, projection=projection,
                                                       sampler=dj.samplers.DPMSolverPP(steps=4), channels=3,
                                                       clip_x0=True))
    out = run(cond, low, jax.random.key(0))
    np.testing.assert_allclose(downsample(out, 4), low, atol=3e-5)
    n = len(traces)
    run(cond, -low, jax.random.key(1))  # new values, same shapes: no retrace
    assert len(traces) == n


def test_projection_options_are_checked():
    sde = dj.VPSDE()
    cond = jnp.zeros((1, 8, 8, 3))
    kw = dict(key=jax.random.key(0), sampler=dj.samplers.DDIM(2), channels=3)
    score = _gaussian_cond_score(0.0, 1.0, sde)
    with pytest.raises(ValueError, match="projection must be one of"):
        super_resolve(score, sde, cond, projection="always", **kw)
    with pytest.raises(ValueError, match="needs low-resolution inputs"):
        super_resolve(score, sde, cond, projection="end", **kw)
    with pytest.raises(ValueError, match="projection must be one of"):
        SR3Pipeline(projection="each_step")


def test_keep_luminance_gives_the_input_luma_exactly_and_stays_in_range():
    rgb = jnp.asarray(RNG.uniform(-1.5, 1.5, (3, 8, 8, 3)), jnp.float32)  # an estimate may leave the range
    luma = jnp.asarray(RNG.uniform(-1, 1, (3, 8, 8, 1)), jnp.float32)
    out = jax.jit(keep_luminance)(rgb, luma)
    np.testing.assert_allclose(to_grayscale(out, keep_channels=False), luma, atol=1e-6)
    assert float(out.min()) >= -1 - 1e-6 and float(out.max()) <= 1 + 1e-6
    # Where the estimate already has that luma and is in range, it is unchanged.
    inside = jnp.asarray(RNG.uniform(-0.5, 0.5, (3, 8, 8, 3)), jnp.float32)
    np.testing.assert_allclose(jax.jit(keep_luminance)(inside, inside @ jnp.asarray(LUMA_WEIGHTS)[:, None]), inside,
                               atol=1e-6)
    # The hue (direction of the chroma) is kept: out - luma is a non-negative multiple of rgb - Y(rgb).
    chroma = rgb - to_grayscale(rgb)
    ratio = (out - luma) / chroma
    np.testing.assert_allclose(ratio, jnp.broadcast_to(ratio[..., :1], ratio.shape), atol=1e-4)
    with pytest.raises(ValueError, match="keep_luminance needs"):
        keep_luminance(rgb, rgb)


def test_colorization_restore_keeps_the_input_luma():
    sde = dj.VPSDE()
    gray = jnp.asarray(RNG.uniform(-1, 1, (2, 8, 8, 1)), jnp.float32)
    score = lambda x, t: _gaussian_cond_score(0.3, 0.8, sde)(x, t, 0.0)
    restore = lambda pipeline: jax.jit(lambda gray, key: pipeline.restore(
        score, sde, dj.samplers.DDIM(4), "colorization", (2, 8, 8, 3), gray, None, key, True))(gray, jax.random.key(0))
    luma = lambda images: np.asarray(images) @ np.asarray(LUMA_WEIGHTS, np.float32)[:, None]
    np.testing.assert_allclose(luma(restore(PaletteColorization())), gray, atol=1e-6)
