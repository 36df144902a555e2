"""RePaint against an exact answer: a Gaussian "image" whose inpainting posterior is closed-form.

The data are 4x4x1 images ``x ~ N(mu, K)`` with ``K`` an RBF kernel over pixel
positions (length scale 1.5 pixels) plus a 0.02 nugget, and a smooth mean. The
score at every noise level is exact (eigendecomposition of ``K``, matmuls only),
so every error left is RePaint's own. With the left half known, the missing half
has the Gaussian posterior ``N(mu_u + K_uk K_kk^-1 (y - mu_k), K_uu - K_uk K_kk^-1 K_ku)``,
computed on the host in float64 as the reference.

Figures measured with 4,000 samples, VPSDE(0.1, 20), key 1; the tests print them::

    pytest -s -q tests/test_repaint.py -k approaches -m "slow or not slow"

=================  =====  ===============  ===============  ==================
levels/jump/r      nfe    mean error       cov. error       KL(sample||exact)
=================  =====  ===============  ===============  ==================
50 / 5 / 1         50     0.519            0.341            0.92
50 / 5 / 10        455    0.214            0.103            0.26
250 / 10 / 1       250    0.518            0.378            0.75
250 / 10 / 10      2410   0.192            0.066            0.07
=================  =====  ===============  ===============  ==================

mean error: ``|m - m*| / sqrt(tr C*)`` (in units of the posterior spread); cov.
error: ``|C - C*|_F / |C*|_F``; KL between the Gaussian fitted to the samples and
the exact posterior. Plain replacement (r = 1) leaves the missing half nearly
ignorant of the known half; resampling closes most of the gap. RePaint is not
exact even with exact scores (the known pixels are re-noised independently of the
unknown ones), so the error does not go to zero: the tests check the ordering and
a bound, not convergence.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffjax.sde import VESDE, VPSDE
from diffjax.tasks import repaint, repaint_nfe, repaint_schedule
from gaussians import correlated_image
from xla_levels import DEFAULT_XLA

H = W = 4
N_SAMPLES = 4000


_IMAGE = correlated_image(H, W)
MODEL, MEAN, COV, TRUTH = _IMAGE.model, _IMAGE.mean, _IMAGE.cov, _IMAGE.truth
MASK = np.zeros((H, W), np.float32)
MASK[:, : W // 2] = 1.0  # left half known
KNOWN = MASK.ravel() > 0.5


def _run(sde, steps, jump_length, jump_n_sample, n=N_SAMPLES, key=1):
    images = jnp.broadcast_to(jnp.asarray(TRUTH.reshape(1, H, W, 1), jnp.float32), (n, H, W, 1))
    fn = jax.jit(
        partial(
            repaint,
            MODEL.score_fn(sde),
            sde,
            steps=steps,
            jump_length=jump_length,
            jump_n_sample=jump_n_sample,
            return_info=True,
        ),
        # Thousands of score calls: the time is in running, so XLA's default level, not the
        # default suite's quick one (tests/conftest.py).
        compiler_options=DEFAULT_XLA,
    )
    out, info = fn(images, MASK, key=jax.random.key(key))
    return np.asarray(out), info


def _report(label, errors):
    mean_err, cov_err, kl = errors
    print(f"{label}: mean error {mean_err:.3f}  cov error {cov_err:.3f}  KL {kl:.2f}")


def _errors(samples):
    """Mean error, covariance error and Gaussian KL of the missing half against the exact posterior."""
    return _IMAGE.errors(samples, KNOWN)


# -- schedule ------------------------------------------------------------------
def test_schedule_matches_paper_count():
    levels = repaint_schedule(250, 10, 10)
    steps = np.diff(levels)
    assert levels[0] == 249 and levels[-1] == -1
    assert set(np.abs(steps).tolist()) == {1}
    assert levels.min() == -1 and levels.max() == 249
    # 250 net down steps, plus 24 jump points (0, 10, ..., 230) x 9 jumps x 10 levels back.
    assert (steps < 0).sum() == 250 + 24 * 9 * 10 == 2410
    assert (steps > 0).sum() == 24 * 9 * 10 == 2160
    assert len(levels) == 4571
    assert repaint_nfe(250, 10, 10) == 2410


def test_schedule_without_resampling_is_plain_descent():
    np.testing.assert_array_equal(repaint_schedule(20, 5, 1), np.arange(19, -2, -1))
    assert repaint_nfe(50, 5, 1) == 50


def test_schedule_jump_points_are_passed_r_times():
    levels = repaint_schedule(30, 5, 4)
    # A jump starts where the walk turns upward: at 0, 5, ..., 20, each r - 1 = 3 times.
    turns = [levels[i] for i in range(1, len(levels) - 1) if levels[i - 1] > levels[i] < levels[i + 1]]
    assert sorted(turns) == sorted([0, 5, 10, 15, 20] * 3)


@pytest.mark.parametrize("args", [(1, 10, 10), (250, 0, 10), (250, 10, 0), (250.0, 10, 10), (250, True, 10)])
def test_schedule_bad_arguments(args):
    with pytest.raises(ValueError):
        repaint_schedule(*args)


# -- the exact answer ----------------------------------------------------------
def test_paper_schedule_approaches_the_exact_posterior():
    """The paper's 250 / 10 / 10 against plain replacement 250 / 10 / 1 (README's table).

    Measured (see the module docstring): r = 1 gives mean 0.518, cov 0.378, KL 0.75;
    r = 10 gives mean 0.192, cov 0.066, KL 0.07. Compilation dominates the run time, so
    the full schedule is as fast as a short one here.
    """
    sde = VPSDE()
    plain, plain_info = _run(sde, 250, 10, 1)
    resampled, info = _run(sde, 250, 10, 10)
    assert plain_info["nfe"] == 250
    assert info["nfe"] == repaint_nfe(250, 10, 10) == 2410 and info["forward_steps"] == 2160
    plain_mean, plain_cov, plain_kl = _errors(plain)
    mean_err, cov_err, kl = _errors(resampled)
    _report("250 / 10 / 1", (plain_mean, plain_cov, plain_kl))
    _report("250 / 10 / 10", (mean_err, cov_err, kl))
    assert mean_err < 0.25 and cov_err < 0.12 and kl < 0.2
    assert plain_mean > 2.0 * mean_err and plain_cov > 3.0 * cov_err and plain_kl > 4.0 * kl


@pytest.mark.slow
def test_short_schedule_resampling_approaches_the_exact_posterior():
    """50 levels, jumps of 5: r = 10 against plain replacement (r = 1).

    Measured (see the module docstring): r = 1 gives mean 0.519, cov 0.341, KL 0.92;
    r = 10 gives mean 0.214, cov 0.103, KL 0.26.
    """
    sde = VPSDE()
    plain, plain_info = _run(sde, 50, 5, 1)
    resampled, info = _run(sde, 50, 5, 10)
    assert plain_info["nfe"] == 50 and info["nfe"] == repaint_nfe(50, 5, 10) == 455
    plain_mean, plain_cov, plain_kl = _errors(plain)
    mean_err, cov_err, kl = _errors(resampled)
    _report("50 / 5 / 1", (plain_mean, plain_cov, plain_kl))
    _report("50 / 5 / 10", (mean_err, cov_err, kl))
    assert mean_err < 0.3 and cov_err < 0.2 and kl < 0.6
    assert plain_mean > 1.5 * mean_err
    assert plain_cov > 2.0 * cov_err
    assert plain_kl > 2.0 * kl


def test_nothing_known_samples_the_prior():
    """An all-zero mask makes RePaint an ancestral sampler of the data distribution."""
    sde = VPSDE()
    images = jnp.zeros((N_SAMPLES, H, W, 1))
    nothing_known = np.zeros((H, W), np.float32)
    out = repaint(
        MODEL.score_fn(sde), sde, images, nothing_known, key=jax.random.key(3),
        steps=250, jump_length=10, jump_n_sample=1,
    )
    flat = np.asarray(out).reshape(N_SAMPLES, -1).astype(np.float64)
    assert np.linalg.norm(flat.mean(0) - MEAN) / np.sqrt(np.trace(COV)) < 0.03
    assert np.linalg.norm(np.cov(flat.T) - COV) / np.linalg.norm(COV) < 0.06


# -- behaviour -----------------------------------------------------------------
def test_mask_layouts_agree():
    sde = VPSDE()
    images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, H, W, 2)), jnp.float32)
    run = partial(
        repaint, _per_channel_score(sde), sde, key=jax.random.key(0), steps=4, jump_length=2, jump_n_sample=2
    )
    layouts = (MASK, MASK[..., None], np.broadcast_to(MASK[None, ..., None], (3, H, W, 1)))
    # One program for the three layouts: one compile instead of three.
    outs = jax.jit(lambda x: [run(x, m) for m in layouts])(images)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
def test_known_pixels_are_exact(sde):
    images = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (3, H, W, 2)), jnp.float32)
    out = np.asarray(
        repaint(
            _per_channel_score(sde), sde, images, MASK, key=jax.random.key(0),
            steps=8, jump_length=2, jump_n_sample=2,
        )
    )
    assert out.shape == images.shape and out.dtype == images.dtype and np.isfinite(out).all()
    known = np.broadcast_to(MASK[None, ..., None], images.shape) > 0.5
    np.testing.assert_array_equal(out[known], np.asarray(images)[known])
    assert not np.allclose(out[~known], np.asarray(images)[~known])


def _per_channel_score(sde):
    """The Gaussian model applied to each channel of (B, H, W, C) images independently."""
    score = MODEL.score_fn(sde)

    def fn(x, t):
        c = x.shape[-1]
        per_channel = jnp.moveaxis(x, -1, 1).reshape(-1, H, W, 1)
        s = score(per_channel, jnp.repeat(t, c))
        return jnp.moveaxis(s.reshape(x.shape[0], c, H, W), 1, -1)

    return fn


def test_jit_and_info():
    sde = VPSDE()
    images = jnp.zeros((2, H, W, 1))
    fn = jax.jit(
        partial(repaint, MODEL.score_fn(sde), sde, steps=6, jump_length=2, jump_n_sample=3, return_info=True)
    )
    out, info = fn(images, MASK, key=jax.random.key(0))
    assert out.shape == images.shape
    nfe = repaint_nfe(6, 2, 3)
    assert info == {"nfe": nfe, "forward_steps": len(repaint_schedule(6, 2, 3)) - 1 - nfe}
    # Same key, same numbers; another key, other numbers.
    np.testing.assert_array_equal(fn(images, MASK, key=jax.random.key(0))[0], out)
    assert not np.array_equal(fn(images, MASK, key=jax.random.key(1))[0], out)


@pytest.mark.parametrize(
    "image, mask, match",
    [
        (np.zeros((2, H, W, 1), np.int32), MASK, "floating"),
        (np.zeros((2, H, W, 1), np.float32), np.zeros((3, 3), np.float32), "broadcast"),
        (np.zeros((2, H, W, 1), np.float32), np.zeros((3, H, W, 1), np.float32), "broadcast"),
        (np.zeros((2, H, W, 1), np.float32), np.full((H, W), 0.5, np.float32), "binary"),
        (np.zeros((H,), np.float32), np.ones((H,), np.float32), "batch axis"),
    ],
)
def test_bad_inputs_raise(image, mask, match):
    sde = VPSDE()
    with pytest.raises(ValueError, match=match):
        repaint(
            MODEL.score_fn(sde), sde, image, mask, key=jax.random.key(0),
            steps=4, jump_length=2, jump_n_sample=2,
        )


def test_score_fn_shape_mismatch_raises():
    sde = VPSDE()
    with pytest.raises(ValueError, match="score_fn"):
        repaint(lambda x, t: x[..., :0], sde, jnp.zeros((2, H, W, 1)), MASK, key=jax.random.key(0), steps=4)
