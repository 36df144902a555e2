"""SDEdit (Meng et al., 2022): guided image synthesis and editing with an unconditional score.

A guide (a stroke painting, a coarse edit, an image of another domain) is
perturbed to an intermediate time ``t0`` with the forward process,
``x_t0 = alpha(t0) guide + sigma(t0) z``, and any sampler of
:mod:`diffjax.samplers` integrates from ``t0`` down to ``sde.eps``. Small ``t0``
stays faithful to the guide, large ``t0`` is more realistic; ``t0 = sde.T``
forgets the guide (unconditional sampling up to ``alpha(T)``).

What the output is, exactly (for a score that is exact):

* with a reverse-SDE sampler (the default), a draw of ``x_eps`` given ``x_t0``:
  the posterior of the clean image given the perturbed guide, averaged over
  the perturbation;
* with a deterministic sampler (DDIM, Heun, DPM-Solver++ with ``eta = 0``, the
  adaptive ODE), the perturbed guide pushed through the probability-flow map;
* a Langevin corrector (``PredictorCorrector``) drifts toward the unconditional
  law, so it is not a faithful SDEdit sampler.

``tests/test_sdedit.py`` checks the first two against closed-form Gaussians.

The pieces are written once and shared with EGSDE (:mod:`diffjax.tasks.egsde`):
:func:`edit_cycles` runs the perturb-and-denoise cycle ``repeats`` times (the
paper's Algorithm 2: each cycle re-perturbs the previous output) and hands each
cycle's perturbation noise to a score builder, so a method can guide the score
with the perturbed source (EGSDE's energy) or paste known pixels back along the
same noise (masked editing, through :func:`diffjax.guidance.paste_back`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.guidance import check_known_mask, paste_back
from diffjax.samplers import DPMSolverPP, Sampler, sample
from diffjax.sde import SDE, broadcast_to_x
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["sdedit", "edit_cycles", "perturb", "check_edit_inputs", "DEFAULT_SAMPLER"]

DEFAULT_SAMPLER = DPMSolverPP(steps=50, order=2, eta=1.0)
"""The stochastic default: SDE-DPM-Solver++ (2M) with 50 steps from ``t0``."""

# builder(noise) -> the score function of one cycle; noise is that cycle's
# standard normal perturbation draw (shaped like the images).
ScoreBuilder = Callable[[Array], ScoreFn]


def perturb(sde: SDE, x: Array, t, noise: Array) -> Array:
    """``alpha(t) x + sigma(t) noise``: ``x`` moved to time ``t`` by the forward process.

    Args:
      sde: the forward process.
      x: ``(B, ...)`` clean images.
      t: a scalar time or per-example times ``(B,)``.
      noise: a standard normal draw shaped like ``x``.

    Returns:
      The perturbed images, shaped like ``x``.
    """
    t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
    alpha, sigma = sde.alpha_sigma(t)
    return broadcast_to_x(alpha, x) * x + broadcast_to_x(sigma, x) * noise


def check_edit_inputs(name: str, image, sde: SDE, t0, sampler, repeats: int = 1) -> tuple[Array, Sampler]:
    """Validate the arguments SDEdit and EGSDE share; returns ``(image, sampler)``.

    Raises:
      ValueError: on a non-floating image or one without a batch axis, ``t0``
        outside ``(sde.eps, sde.T]`` (checked when concrete) or not a scalar, a
        ``sampler`` that is not one of :mod:`diffjax.samplers`, or ``repeats``
        not an integer >= 1.
    """
    image = jnp.asarray(image)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        raise ValueError(
            f"{name} must be a floating-point array, got dtype {image.dtype}; convert uint8 "
            "images with x.astype(jnp.float32) / 127.5 - 1"
        )
    if image.ndim < 2:
        raise ValueError(f"{name} must have a batch axis and data axes, got shape {image.shape}")
    if jnp.ndim(t0) != 0:
        raise ValueError(f"t0 must be a scalar time, got an array of shape {jnp.shape(t0)}")
    if not isinstance(t0, jax.core.Tracer):
        v = float(t0)
        tol = 1e-6 * max(1.0, sde.T)  # float32 rounding of T itself
        if not (sde.eps < v <= sde.T + tol):
            raise ValueError(f"t0 must lie in (sde.eps, sde.T] = ({sde.eps}, {sde.T}], got {v}")
    if sampler is None:
        sampler = DEFAULT_SAMPLER
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be one of diffjax.samplers or None, got {type(sampler).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    return image, sampler


def edit_cycles(
    make_score: ScoreBuilder,
    sde: SDE,
    image: Array,
    *,
    key: PRNGKey,
    t0,
    sampler: Sampler,
    repeats: int = 1,
    known: Array | None = None,
) -> tuple[Array, dict]:
    """``repeats`` perturb-and-denoise cycles from ``image`` (inputs already validated).

    Cycle ``k`` draws ``noise_k``, perturbs the previous cycle's output (the
    image itself for the first) to ``t0`` with it, and samples with
    ``make_score(noise_k)`` from ``t0`` to ``sde.eps``. The cycles run in one
    ``lax.scan``: the compiled program does not grow with ``repeats``.

    Args:
      make_score: ``make_score(noise) -> score_fn`` for one cycle.
      sde: the forward process.
      image: ``(B, ...)`` floating-point start images (the guide or source).
      key: a ``jax.random`` key; cycle ``k`` uses ``split(key, repeats)[k]``.
      t0: start time of each cycle.
      sampler: a sampler of :mod:`diffjax.samplers`.
      repeats: number of cycles (static).
      known: optional boolean array shaped like ``image``, True where the
        output must equal ``image`` (pasted after every cycle).

    Returns:
      ``(x, info)``: the edited images and ``{"nfe": score evaluations per example}``.
    """
    t0 = jnp.asarray(t0, image.dtype)

    def cycle(x, cycle_key):
        noise_key, sample_key = jax.random.split(cycle_key)
        noise = jax.random.normal(noise_key, x.shape, x.dtype)
        out, info = sample(make_score(noise), sde, perturb(sde, x, t0, noise), key=sample_key, sampler=sampler, t_start=t0)
        if known is not None:
            out = jnp.where(known, image, out)
        return out, info["nfe"]

    x, nfe = jax.lax.scan(cycle, image, jax.random.split(key, repeats))
    return x, {"nfe": jnp.sum(nfe)}


def sdedit(
    score_fn: ScoreFn,
    sde: SDE,
    guide: Array,
    *,
    key: PRNGKey,
    t0=0.5,
    sampler: Sampler | None = None,
    mask=None,
    repeats: int = 1,
    return_info: bool = False,
):
    """Edit or synthesise from ``guide`` with SDEdit, using any unconditional score.

    Pure and jit-able as a whole, with ``sampler``, ``repeats`` and
    ``return_info`` static, e.g.
    ``jax.jit(functools.partial(sdedit, score_fn, sde, sampler=s))(guide, key=key)``;
    ``t0`` may be traced. Every operation is per pixel or per example, so a
    batch sharded over devices stays sharded.

    Args:
      score_fn: ``score_fn(x, t) -> array shaped like x``, ``t`` of shape ``(batch,)``;
        an unconditional model of the images to produce.
      sde: the forward process of the score (VP, sub-VP, VE, cosine, discrete).
      guide: ``(B, ...)`` floating-point guides in the model's data range
        (e.g. [-1, 1]): stroke paintings, coarse edits, images of another domain.
      key: a ``jax.random`` key.
      t0: the time the guide is perturbed to, in ``(sde.eps, sde.T]``; the
        paper uses 0.3-0.6 (lower = more faithful, higher = more realistic).
      sampler: any :mod:`diffjax.samplers` sampler, run from ``t0`` to
        ``sde.eps``; ``None`` is :data:`DEFAULT_SAMPLER` (SDE-DPM-Solver++, 50
        steps). Reverse-SDE samplers give SDEdit's stochastic edits,
        deterministic ones the probability-flow image of the perturbed guide.
      mask: optional; 1 = keep the guide there, 0 = edit (the library's mask
        convention), ``(H, W)`` for ``(B, H, W, C)`` images or anything that
        broadcasts to ``guide``. The kept pixels follow the forward process of
        the guide at every step (the perturbation's own noise, through
        :func:`diffjax.guidance.paste_back`) and equal the guide exactly in
        the output.
      repeats: perturb-and-denoise cycles (the paper's Algorithm 2); each cycle
        re-perturbs the previous cycle's output to ``t0``.
      return_info: also return ``{"nfe": score evaluations per example}``.

    Returns:
      The edited images, shaped like ``guide``; with ``return_info``, ``(images, info)``.

    Raises:
      ValueError: on a guide that is not floating point or has no batch axis,
        ``t0`` outside ``(sde.eps, sde.T]``, a mask that does not broadcast to
        the guide or is not binary, a bad ``sampler`` or ``repeats``, or a
        score whose output is not shaped like the guide.
    """
    guide, sampler = check_edit_inputs("guide", guide, sde, t0, sampler, repeats)
    if mask is None:
        known = None

        def make_score(noise):
            return score_fn

    else:
        known = check_known_mask(mask, guide)

        def make_score(noise):
            return paste_back(score_fn, sde, guide, known, noise)

    x, info = edit_cycles(make_score, sde, guide, key=key, t0=t0, sampler=sampler, repeats=repeats, known=known)
    return (x, info) if return_info else x
