"""RePaint inpainting (Lugmayr et al., 2022) with any unconditional score function.

The walk over time follows the schedule of RePaint's released code: ``steps``
levels indexed ``steps - 1 .. 0``, walked down one level at a time; every
``jump_length`` levels (at levels ``0, j, 2j, ...`` below ``steps - j``) the walk
jumps back up ``jump_length`` levels with forward "undo" transitions, and does so
``jump_n_sample - 1`` times before going on down. The last down step goes from
level 0 to the clean image (index ``-1``).

Level ``i`` sits at time ``t_i = eps + (T - eps) i / (steps - 1)`` (uniform in
``[sde.eps, sde.T]``), so the same code serves every process through
``sde.alpha_sigma``:

* a *down* step from ``t`` to ``s < t`` estimates ``x_0`` with Tweedie's formula
  from the score, draws the unknown pixels from the DDPM posterior
  ``q(x_s | x_t, x_0)``, and draws the known pixels afresh from the forward
  marginal ``q(x_s | x_0 = image)`` (Algorithm 1 of the paper);
* an *up* step from ``s`` to ``t > s`` applies the forward transition
  ``q(x_t | x_s)`` to the whole image, which lets the unknown region "harmonise"
  with the freshly injected known pixels on the way down again.

The schedule is static, built on the host in numpy; the walk is one
``lax.scan`` over the precomputed level pairs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.guidance import check_known_mask
from diffjax.parametrization import tweedie_x0
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["repaint", "repaint_schedule", "repaint_nfe"]


def _check_positive_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def repaint_schedule(steps: int = 250, jump_length: int = 10, jump_n_sample: int = 10) -> np.ndarray:
    """The level sequence RePaint walks, as in the paper's released code.

    Args:
      steps: number of noise levels (``T`` in the paper, 250 there).
      jump_length: how many levels each jump goes back up (``j``, 10 there).
      jump_n_sample: how many times each jump point is passed on the way down
        (``r``, 10 there); 1 means no jumps, i.e. plain replacement.

    Returns:
      Integer levels, starting at ``steps - 1`` and ending at ``-1`` (the clean
      image), consecutive entries differing by exactly one. A decrease is a
      denoising step (one score evaluation); an increase is a forward step.
      For 250 / 10 / 10 it has 4,571 entries: 2,410 down and 2,160 up steps.

    Raises:
      ValueError: on non-integer or too small arguments.
    """
    _check_positive_int("steps", steps, 2)
    _check_positive_int("jump_length", jump_length, 1)
    _check_positive_int("jump_n_sample", jump_n_sample, 1)
    # Jump points 0, j, 2j, ... strictly below steps - j, each taken r - 1 times.
    jumps_left = {level: jump_n_sample - 1 for level in range(0, steps - jump_length, jump_length)}
    level = steps
    levels = []
    while level >= 1:
        level -= 1
        levels.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            for _ in range(jump_length):
                level += 1
                levels.append(level)
    levels.append(-1)
    return np.asarray(levels, dtype=np.int32)


def repaint_nfe(steps: int = 250, jump_length: int = 10, jump_n_sample: int = 10) -> int:
    """Score evaluations per example of :func:`repaint` (its number of down steps)."""
    levels = repaint_schedule(steps, jump_length, jump_n_sample)
    return int(np.sum(np.diff(levels) < 0))


def _level_scales(sde: SDE, steps: int, dtype) -> tuple[Array, Array, Array, Array]:
    """Times, alpha, sigma and log-SNR of levels ``-1 .. steps - 1`` (position = level + 1).

    Level -1 is the clean image: alpha = 1, sigma = 0, log-SNR = +inf.
    """
    t = jnp.linspace(sde.eps, sde.T, steps, dtype=dtype)
    alpha, sigma = sde.alpha_sigma(t)
    lam = sde.log_snr(t)
    one, zero = jnp.ones((1,), dtype), jnp.zeros((1,), dtype)
    return (
        jnp.concatenate([zero, t]),
        jnp.concatenate([one, alpha.astype(dtype)]),
        jnp.concatenate([zero, sigma.astype(dtype)]),
        jnp.concatenate([jnp.full((1,), jnp.inf, dtype), lam.astype(dtype)]),
    )


def repaint(
    score_fn: ScoreFn,
    sde: SDE,
    image: Array,
    mask,
    *,
    key: PRNGKey,
    steps: int = 250,
    jump_length: int = 10,
    jump_n_sample: int = 10,
    return_info: bool = False,
):
    """Inpaint ``image`` where ``mask == 0`` with RePaint's resampling schedule.

    Jit-able as a whole with the integer arguments static, e.g.
    ``jax.jit(functools.partial(repaint, score_fn, sde, steps=250))``.

    Args:
      score_fn: ``score_fn(x, t) -> array shaped like x``, ``t`` of shape ``(batch,)``;
        an unconditional model of the images.
      sde: the forward process the score belongs to (:mod:`diffjax.sde`).
      image: the images to complete, shape ``(batch, *dims)``, floating point, in
        the model's data range (e.g. [-1, 1]); values under ``mask == 0`` are ignored.
      mask: 1 for known pixels, 0 for pixels to fill; ``(H, W)`` for
        ``(B, H, W, C)`` images, or any shape that broadcasts to ``image.shape``
        (``(H, W, 1)``, ``(B, H, W, 1)``, ``image.shape``). Must be binary
        (checked when the mask is a concrete array; under ``jit`` values above
        0.5 count as known).
      key: a ``jax.random`` key; scan step ``i`` uses ``fold_in(key, i)``.
      steps: number of noise levels, uniform in time over ``[sde.eps, sde.T]``.
      jump_length: levels per jump back (``j`` in the paper).
      jump_n_sample: passes through each jump point (``r`` in the paper); 1 is
        plain replacement without resampling.
      return_info: also return a dict with ``"nfe"`` (score evaluations per
        example) and ``"forward_steps"`` (undo transitions).

    Returns:
      The completed images, shaped like ``image``; the known pixels equal
      ``image`` exactly (the last step injects the clean known pixels). With
      ``return_info``, ``(images, info)``.

    Raises:
      ValueError: on a non-floating image, a mask that does not broadcast to the
        image or is not binary, a score_fn output of the wrong shape, or bad
        schedule integers.
    """
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(
            f"image must be a floating-point array, got dtype {image.dtype}; convert uint8 "
            "images with x.astype(jnp.float32) / 127.5 - 1"
        )
    if image.ndim < 2:
        raise ValueError(f"image must have a batch axis and data axes, got shape {image.shape}")
    known_pixels = check_known_mask(mask, image)
    levels = repaint_schedule(steps, jump_length, jump_n_sample)
    batch, dtype = image.shape[0], image.dtype
    out = jax.eval_shape(score_fn, image, jnp.zeros((batch,), dtype))
    if out.shape != image.shape:
        raise ValueError(
            f"score_fn(x, t) must return an array shaped like x {image.shape} for t of shape "
            f"({batch},), got {out.shape}"
        )

    times, alphas, sigmas, lams = _level_scales(sde, steps, dtype)
    cur, nxt = levels[:-1] + 1, levels[1:] + 1  # positions in the level arrays
    is_down = jnp.asarray(nxt < cur)
    a_cur, a_nxt, s_nxt = alphas[cur], alphas[nxt], sigmas[nxt]
    # ratio = SNR(noisier) / SNR(cleaner) of the pair, in [0, 1); written through
    # log-SNR differences so the small per-level variances keep their float32
    # precision (1 - (alpha_t / alpha_s)^2 would cancel catastrophically). It is
    # 0 when going to the clean level, whose log-SNR is +inf.
    log_ratio = 2.0 * (jnp.minimum(lams[cur], lams[nxt]) - jnp.maximum(lams[cur], lams[nxt]))
    ratio, one_minus_ratio = jnp.exp(log_ratio), -jnp.expm1(log_ratio)
    # Both the down posterior q(x_s | x_t, x_0) and the up transition q(x_t | x_s)
    # have std sigma_next * sqrt(1 - ratio).
    std = s_nxt * jnp.sqrt(one_minus_ratio)
    # Down t -> s: mean = c_xt x_t + c_x0 x_0. Up s -> t: mean = (alpha_t / alpha_s) x_s.
    c_xt = jnp.where(is_down, ratio, 1.0) * a_nxt / a_cur
    c_x0 = jnp.where(is_down, a_nxt * one_minus_ratio, 0.0)

    xs = dict(
        step=jnp.arange(len(cur)),
        is_down=is_down,
        t_cur=times[cur],
        c_xt=c_xt,
        c_x0=c_x0,
        std=std,
        a_nxt=a_nxt,
        s_nxt=s_nxt,
    )

    key_init, key_walk = jax.random.split(key)
    x_init = sde.prior_sample(key_init, image.shape, dtype)

    def down(x, row, key):
        key_noise, key_known = jax.random.split(key)
        t = jnp.full((batch,), row["t_cur"], dtype)
        x0_hat = tweedie_x0(score_fn(x, t), x, t, sde)
        unknown = row["c_xt"] * x + row["c_x0"] * x0_hat
        unknown = unknown + row["std"] * jax.random.normal(key_noise, x.shape, dtype)
        known = row["a_nxt"] * image + row["s_nxt"] * jax.random.normal(key_known, x.shape, dtype)
        # A select rather than a blend: the known pixels come out bit-exact.
        return jnp.where(known_pixels, known, unknown)

    def up(x, row, key):
        return row["c_xt"] * x + row["std"] * jax.random.normal(key, x.shape, dtype)

    def body(x, row):
        step_key = jax.random.fold_in(key_walk, row["step"])
        x = jax.lax.cond(row["is_down"], down, up, x, row, step_key)
        return x, None

    x, _ = jax.lax.scan(body, x_init, xs)
    if not return_info:
        return x
    nfe = int(np.sum(np.diff(levels) < 0))
    return x, {"nfe": nfe, "forward_steps": len(cur) - nfe}
