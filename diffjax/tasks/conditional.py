"""Conditional score estimators of Batzolis et al. (2021): CDE, CDiffE and CMDE.

A conditional model learns ``grad_x log p_t(x_t | y)`` for paired data ``(x, y)``
(super-resolution, inpainting, edge-to-image, ...). The three estimators differ
in what the network sees of the condition ``y``:

``cde``     conditional denoising estimator: the clean ``y``. Its training
            target is exactly ``grad_x log p_t(x_t | y)``; at sampling ``y``
            stays clean.
``cdiffe``  conditional diffusive estimator: ``y_t``, ``y`` diffused by the
            same process as ``x`` at the same time. The target is the x-part of
            the joint score, ``grad_x log p_t(x_t, y_t) = grad_x log p_t(x_t | y_t)``;
            at sampling ``y_t`` is drawn from the forward process of the observed
            ``y`` at every step. This is *not* the conditional score given the
            clean ``y``, so the samples are biased (measured in docs/conditional.md).
``cmde``    conditional multi-speed diffusive estimator: as ``cdiffe`` but ``y``
            is diffused by its own, slower process ``sde_y`` (the paper uses a VE
            process with ``sigma_max_y = 1``), so ``y_t`` stays close to ``y``
            and the bias shrinks.

The math here is pure and jit-able: :func:`conditional_score` turns a
conditional score ``cond_score_fn(x_t, y_in, t)`` into an ordinary
``score_fn(x, t)`` that every sampler of :mod:`diffjax.samplers` drives, and
:func:`conditional_sample` runs the whole sampling loop. The training losses of
the three estimators are :func:`diffjax.losses.make_conditional_loss_fn`.

Fresh condition noise without a step counter: a score function sees only
``(x, t)``, so the noise of ``y_t`` is keyed by the bits of ``t`` itself,
``fold_in(key, bits(t))``. Every step of a fixed grid therefore draws its own
``y_t`` (deterministically given ``key``), and the evaluations made at one time
within a step (the Langevin corrector and the predictor of the
predictor-corrector sampler) share it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from diffjax.losses import CONDITIONAL_METHODS as METHODS
from diffjax.losses import ConditionalMethod as Method
from diffjax.losses import check_conditional_method as check_method
from diffjax.losses import condition_process
from diffjax.samplers.base import Sampler, sample
from diffjax.samplers.ode import ProbabilityFlowODE
from diffjax.sde import SDE, broadcast_to_x
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = [
    "METHODS",
    "Y_NOISES",
    "CondScoreFn",
    "check_method",
    "condition_process",
    "diffuse_condition",
    "conditional_score",
    "conditional_sample",
    "default_y_noise",
]

Y_NOISES = ("per_step", "shared")

#: ``cond_score_fn(x_t, y_in, t) -> score of x``; ``y_in`` is ``y`` (cde) or ``y_t``.
CondScoreFn = Callable[[Array, Array, Array], Array]


def diffuse_condition(y: Array, t: Array, noise: Array, sde_y: SDE) -> Array:
    """``y_t = alpha_y(t) y + sigma_y(t) noise``: a draw of the forward marginal ``p(y_t | y)``.

    Args:
      y: ``(batch, *dims)`` clean conditions.
      t: ``(batch,)`` times.
      noise: standard normal, shaped like ``y``.
      sde_y: the condition's process.

    Returns:
      ``y_t`` shaped like ``y``.
    """
    mean, std = sde_y.marginal_prob(y, t)
    return mean + broadcast_to_x(std, y) * noise


def _time_key(key: PRNGKey, t: Array) -> PRNGKey:
    """A key for time ``t``: ``fold_in(key, float32 bits of t)`` (every grid time gets its own)."""
    bits = jax.lax.bitcast_convert_type(jnp.asarray(t, jnp.float32), jnp.uint32)
    return jax.random.fold_in(key, bits)


def conditional_score(
    cond_score_fn: CondScoreFn,
    sde: SDE,
    y: Array,
    *,
    key: PRNGKey,
    method: Method = "cde",
    sde_y: SDE | None = None,
    y_noise: str = "per_step",
) -> ScoreFn:
    """An ordinary ``score_fn(x, t)`` from a conditional score and its condition.

    Args:
      cond_score_fn: ``cond_score_fn(x_t, y_in, t) -> score of x``.
      sde: the process of ``x``.
      y: ``(batch, *dims_y)`` observed conditions (clean).
      key: seeds the noise of ``y_t`` (unused by ``cde``).
      method: ``"cde"`` (``y_in = y``), ``"cdiffe"`` (``y_t`` by ``sde``) or
        ``"cmde"`` (``y_t`` by ``sde_y``).
      sde_y: the condition's process, for ``cmde`` only.
      y_noise: ``"per_step"``: a fresh ``y_t`` at every evaluation time, keyed by
        ``(key, t)``; ``"shared"``: one noise draw for the whole trajectory,
        ``y_t = alpha_y(t) y + sigma_y(t) z`` (still an exact draw of ``p(y_t | y)``
        at every ``t``, and smooth in ``t``, which an adaptive ODE solver needs).

    Returns:
      ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.

    Raises:
      ValueError: on a bad method / ``sde_y`` pair (see :func:`check_method`) or ``y_noise``.
    """
    process = condition_process(method, sde, sde_y)
    if y_noise not in Y_NOISES:
        raise ValueError(f"y_noise must be one of {Y_NOISES}, got {y_noise!r}")
    if process is None:
        return lambda x, t: cond_score_fn(x, y, t)
    y = jnp.asarray(y)
    shared = jax.random.normal(key, y.shape, y.dtype) if y_noise == "shared" else None

    def score_fn(x: Array, t: Array) -> Array:
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        # Every sampler evaluates a whole batch at one time, so t[0] names the step.
        noise = shared if shared is not None else jax.random.normal(_time_key(key, t[0]), y.shape, y.dtype)
        return cond_score_fn(x, diffuse_condition(y, t.astype(y.dtype), noise, process), t)

    return score_fn


def default_y_noise(sampler: Sampler) -> str:
    """``"shared"`` for the adaptive :class:`~diffjax.samplers.ProbabilityFlowODE`, ``"per_step"`` otherwise.

    An adaptive solver needs a drift continuous in ``t``; a fresh ``y_t`` at every
    evaluation makes its error control reject every step.
    """
    return "shared" if isinstance(sampler, ProbabilityFlowODE) else "per_step"


def conditional_sample(
    cond_score_fn: CondScoreFn,
    sde: SDE,
    y: Array,
    x_init: Array,
    *,
    key: PRNGKey,
    sampler: Sampler,
    method: Method = "cde",
    sde_y: SDE | None = None,
    y_noise: str | None = None,
    t_start=None,
    t_end=None,
    denoise: bool = False,
) -> tuple[Array, dict]:
    """Sample ``x ~ p(x | y)`` with a CDE, CDiffE or CMDE conditional score (jit-able as a whole).

    ``jax.jit(functools.partial(conditional_sample, cond_score_fn, sde, sampler=s,
    method=m))(y, x_init, key=key)`` compiles once per input shape; new ``y``,
    ``x_init`` or ``key`` values reuse the program.

    Args:
      cond_score_fn: ``cond_score_fn(x_t, y_in, t) -> array shaped like x_t``;
        ``y_in`` is the clean ``y`` for ``cde`` and the diffused ``y_t`` for
        ``cdiffe`` (diffused by ``sde``) and ``cmde`` (diffused by ``sde_y``).
      sde: the process of ``x``.
      y: ``(batch, *dims_y)`` observed conditions, floating point; the batch must
        be ``x_init``'s.
      x_init: ``(batch, *dims)`` state at ``t_start`` (``sde.prior_sample``).
      key: one key: split into the sampler's noise and the noise of ``y_t``
        (fresh at every step, see :func:`conditional_score`).
      sampler: any sampler of :mod:`diffjax.samplers`.
      method: ``"cde"``, ``"cdiffe"`` or ``"cmde"``.
      sde_y: the condition's process (``cmde`` only; the paper's is
        ``dj.VESDE(sigma_min=0.01, sigma_max=1.0)``).
      y_noise: ``"per_step"`` or ``"shared"`` (see :func:`conditional_score`);
        ``None`` = ``"shared"`` for the adaptive :class:`~diffjax.samplers.ProbabilityFlowODE`
        (a drift that jumps at every ``t`` defeats its error control) and
        ``"per_step"`` for every fixed-grid sampler.
      t_start, t_end, denoise: as in :func:`diffjax.sample`.

    Returns:
      ``(x, info)`` as :func:`diffjax.sample` returns them.

    Raises:
      ValueError: an unknown ``method``; ``cmde`` without ``sde_y`` (or ``sde_y``
        with another method); a ``y`` that is not a floating array with the
        batch of ``x_init``; and everything :func:`diffjax.sample` refuses.
    """
    check_method(method, sde, sde_y)
    y, x_init = jnp.asarray(y), jnp.asarray(x_init)
    if y.ndim < 1 or x_init.ndim < 1 or y.shape[0] != x_init.shape[0]:
        raise ValueError(
            f"y must hold one condition per sample: expected a batch of {x_init.shape[:1] or '(no batch)'} "
            f"like x_init {tuple(x_init.shape)}, got y of shape {tuple(y.shape)}"
        )
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"y must be floating point (images in [-1, 1]), got dtype {y.dtype}")
    y_noise = default_y_noise(sampler) if y_noise is None else y_noise
    y_key, sample_key = jax.random.split(key)
    score_fn = conditional_score(cond_score_fn, sde, y, key=y_key, method=method, sde_y=sde_y, y_noise=y_noise)
    return sample(score_fn, sde, x_init, key=sample_key, sampler=sampler, t_start=t_start, t_end=t_end,
                  denoise=denoise)
