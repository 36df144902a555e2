"""EGSDE (Zhao et al., 2022): unpaired image-to-image translation with energy-guided SDEs.

The score model knows only the target domain. As in SDEdit the source image is
perturbed to ``t0`` (0.5 in the paper) with noise ``z``; the reverse SDE then runs
on the score of ``p_t(y) exp(-E(y, x_t, t))``, whose mean is shifted at every
step by ``-w(t) grad_y E`` with ``w`` the step's variance
(:func:`diffjax.guidance.energy_guidance`). ``x_t = alpha(t) source + sigma(t) z``
is the source perturbed to the current level with the *same* ``z`` as the start
(as in the paper's released code), so at ``t0`` it is the starting point itself.

The paper's energy (:func:`egsde_energy`) is

``E(y, x_t, t) = lambda_s E_s + lambda_i E_i`` with

* ``E_s``, domain-specific: the cosine similarity (over channels, averaged over
  positions) of a time-dependent domain classifier's middle features at ``y``
  and at ``x_t``. Lowering it removes the source domain's features (realism);
* ``E_i``, domain-independent: ``||LP(y) - LP(x_t)||^2`` summed over pixels,
  with ``LP`` a low-pass filter (downsampling by ``down_factor`` then
  upsampling back). Lowering it keeps the source's coarse layout (faithfulness).

The paper's defaults: ``lambda_s = 500``, ``lambda_i = 2``, ``down_factor = 32``
(for 256 x 256 images, an 8 x 8 low-pass image; 4 keeps that at 32 x 32).
Researchers can pass any ``energy_fn(y, x_t, t) -> (batch,)`` of their own.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from diffjax.guidance import energy_guidance
from diffjax.sde import SDE
from diffjax.tasks.sdedit import check_edit_inputs, edit_cycles, perturb
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["egsde", "egsde_energy", "low_pass", "cosine_similarity_energy"]

# energy_fn(y, x_t, t) -> (batch,): y the current sample, x_t the source at the same level.
EnergyFn = Callable[[Array, Array, Array], Array]
# feature_fn(x, t) -> (batch, ..., channels): a domain classifier's middle features.
FeatureFn = Callable[[Array, Array], Array]


def low_pass(x: Array, down_factor: int) -> Array:
    """Down- then up-sample ``(B, H, W, C)`` images by ``down_factor`` (antialiased cubic).

    Raises:
      ValueError: if ``x`` is not 4-D or ``down_factor`` does not divide H and W.
    """
    if x.ndim != 4:
        raise ValueError(f"low_pass needs (B, H, W, C) images, got shape {x.shape}")
    b, h, w, c = x.shape
    if isinstance(down_factor, bool) or not isinstance(down_factor, int) or down_factor < 1 or h % down_factor or w % down_factor:
        raise ValueError(f"down_factor must be an integer >= 1 dividing H = {h} and W = {w}, got {down_factor!r}")
    small = jax.image.resize(x, (b, h // down_factor, w // down_factor, c), "cubic", antialias=True)
    return jax.image.resize(small, x.shape, "cubic")


def cosine_similarity_energy(features_y: Array, features_x: Array) -> Array:
    """Cosine similarity over the last (channel) axis, averaged over the others: ``(batch,)``."""

    def normalise(f):
        # max(norm, 1e-10) as the paper's code: finite gradients at zero features.
        return f / jnp.maximum(jnp.linalg.norm(f, axis=-1, keepdims=True), 1e-10)

    sim = jnp.sum(normalise(features_y) * normalise(features_x), axis=-1)
    return jnp.mean(sim.reshape(sim.shape[0], -1), axis=1)


def egsde_energy(
    feature_fn: FeatureFn | None,
    *,
    lambda_s: float = 500.0,
    lambda_i: float = 2.0,
    down_factor: int = 32,
) -> EnergyFn:
    """The paper's energy ``lambda_s E_s + lambda_i E_i`` from a classifier's feature function.

    Args:
      feature_fn: ``feature_fn(x, t) -> (B, ..., C)`` features of a time-dependent
        domain classifier (trained on noisy images of both domains); ``None``
        only with ``lambda_s = 0``.
      lambda_s: weight of the domain-specific energy ``E_s`` (500 in the paper);
        a number, or a scalar array (traced weights: a sweep compiles once).
      lambda_i: weight of the domain-independent energy ``E_i`` (2 in the paper).
      down_factor: the low-pass filter's down-sampling factor (32 in the paper
        at 256 x 256; it must divide the image side).

    Returns:
      ``energy_fn(y, x_t, t) -> (batch,)`` for :func:`egsde`. A weight of 0 drops
      its term entirely (no feature evaluation), so with both weights 0 EGSDE is
      SDEdit.

    Raises:
      ValueError: on negative weights, or ``lambda_s > 0`` without ``feature_fn``.
    """
    def is_zero(w):  # a Python 0 drops its term; arrays (e.g. traced weights of a sweep) keep it
        return isinstance(w, (int, float)) and w == 0

    for name, w in (("lambda_s", lambda_s), ("lambda_i", lambda_i)):
        if isinstance(w, (int, float)) and w < 0:
            raise ValueError(f"energy weights must be >= 0, got {name}={w}")
    if not is_zero(lambda_s) and feature_fn is None:
        raise ValueError("lambda_s > 0 needs a feature_fn (the domain classifier's features)")

    def energy_fn(y: Array, x_t: Array, t: Array) -> Array:
        energy = jnp.zeros(y.shape[:1], y.dtype)
        if not is_zero(lambda_s):
            energy = energy + lambda_s * cosine_similarity_energy(feature_fn(y, t), feature_fn(x_t, t))
        if not is_zero(lambda_i):
            diff = low_pass(y, down_factor) - low_pass(x_t, down_factor)
            energy = energy + lambda_i * jnp.sum(diff.reshape(diff.shape[0], -1) ** 2, axis=1)
        return energy

    return energy_fn


def egsde(
    score_fn: ScoreFn,
    sde: SDE,
    source: Array,
    *,
    key: PRNGKey,
    energy_fn: EnergyFn,
    t0=0.5,
    sampler=None,
    return_info: bool = False,
):
    """Translate ``source`` images to the score model's domain with EGSDE.

    Pure and jit-able as a whole (``energy_fn``, ``sampler`` and ``return_info``
    static): ``jax.jit(functools.partial(egsde, score_fn, sde, energy_fn=e))(x, key=key)``.
    With the same key and an energy of zero it returns exactly
    :func:`diffjax.tasks.sdedit`'s output.

    Args:
      score_fn: ``score_fn(x, t)`` of the target domain (trained on it only).
      sde: its forward process.
      source: ``(B, ...)`` floating-point source-domain images in the model's range.
      key: a ``jax.random`` key.
      energy_fn: ``energy_fn(y, x_t, t) -> (batch,)``: ``y`` the current sample,
        ``x_t`` the source perturbed to the same level with the start's noise,
        ``t`` of shape ``(batch,)``; e.g. :func:`egsde_energy`. Its gradient in
        ``y`` guides the reverse SDE.
      t0: the start time in ``(sde.eps, sde.T]`` (0.5 in the paper).
      sampler: any :mod:`diffjax.samplers` sampler; ``None`` is SDEdit's
        stochastic default (:data:`diffjax.tasks.sdedit.DEFAULT_SAMPLER`).
      return_info: also return ``{"nfe": score evaluations per example}``.

    Returns:
      The translated images, shaped like ``source`` (with ``return_info``, ``(images, info)``).

    Raises:
      ValueError: on a non-floating source or one without a batch axis, ``t0``
        outside ``(sde.eps, sde.T]``, a bad sampler, or a non-callable ``energy_fn``.
    """
    source, sampler = check_edit_inputs("source", source, sde, t0, sampler)
    if not callable(energy_fn):
        raise ValueError(f"energy_fn must be a callable energy_fn(y, x_t, t) -> (batch,), got {energy_fn!r}")

    def make_score(noise):
        def energy(y, t):
            return energy_fn(y, perturb(sde, source, t, noise), t)

        return energy_guidance(score_fn, energy)

    x, info = edit_cycles(make_score, sde, source, key=key, t0=t0, sampler=sampler)
    return (x, info) if return_info else x
