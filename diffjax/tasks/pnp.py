"""Plug-and-play priors (Graikos et al., 2022): a diffusion model as the prior of any
inference problem with a differentiable constraint.

The estimate ``x`` is optimised by gradient descent on

    prior(x; t) + constraint_fn(x),

where ``prior(x; t)`` is the diffusion model's denoising loss of ``x`` at noise level
``t``: draw ``eps ~ N(0, I)`` afresh at every step, form ``x_t = alpha_t x + sigma_t eps``
and compare the model's ``eps_fn(x_t, t)`` with ``eps``. ``t`` walks a schedule from high
to low noise, so early steps see a heavily smoothed prior (easy to move in) and late steps
the prior itself.

Two gradients of the prior term are offered (``prior_gradient``):

* ``"score"`` (default): ``(eps_fn(x_t, t) - eps) / sigma_t``, the denoising loss's
  residual without the network's Jacobian. Averaged over ``eps`` it is
  ``-grad log p_t`` of the ``alpha_t``-scaled point for an exact model (``alpha_t
  C_t^{-1} (x - m)`` for a Gaussian prior ``N(m, S)``, ``C_t = alpha_t^2 S + sigma_t^2 I``),
  so as ``t`` falls the iterates descend ``-log p(x) + constraint_fn(x)``: their
  average settles at the posterior mode (MAP). One network call per step, no
  backpropagation through it. Its noise grows like ``learning_rate / sigma_t``, so the
  schedule should stop at a moderate ``t_min``.
* ``"full"``: the gradient of ``||eps - eps_fn(x_t, t)||^2`` through the network, the
  paper's update as written (one forward and one backward pass). For an exact Gaussian
  model its average is ``2 sigma_t^2 alpha_t^2 C_t^{-2} (x - m)``, which weights the
  prior differently from ``-log p`` (and fades as ``sigma_t -> 0``); the balance with
  the constraint is then set by ``prior_weight``.

The loop is one ``lax.scan``: pure, jit-able and vmap-able; ``steps`` and string options
are static.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.sde import SDE, broadcast_to_x
from diffjax.typing import Array, PRNGKey

__all__ = ["plug_and_play", "pnp_time_schedule", "classifier_constraint", "label_map_constraint", "refine_segmentation",
           "T_SCHEDULES", "PRIOR_GRADIENTS"]

T_SCHEDULES = ("linear", "cosine")
PRIOR_GRADIENTS = ("score", "full")
DEFAULT_T_MIN_FRACTION = 0.05


def _is_concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def pnp_time_schedule(t_schedule: str, steps: int, t_max: float, t_min: float) -> np.ndarray:
    """The named schedule of noise levels, from ``t_max`` down to ``t_min``.

    Args:
      t_schedule: ``"linear"`` (equal decrements) or ``"cosine"`` (slow at both ends:
        ``t_min + (t_max - t_min) (1 + cos(pi k / (steps - 1))) / 2``).
      steps: number of levels (>= 1); a single level is ``t_max``.
      t_max, t_min: first and last level, ``0 < t_min <= t_max``.

    Returns:
      float32 ``(steps,)``, non-increasing.

    Raises:
      ValueError: on an unknown name or bad bounds.
    """
    if t_schedule not in T_SCHEDULES:
        raise ValueError(f"t_schedule must be one of {T_SCHEDULES} or an array of shape (steps,), got {t_schedule!r}")
    if not 0 < t_min <= t_max:
        raise ValueError(f"need 0 < t_min <= t_max, got t_min={t_min!r}, t_max={t_max!r}")
    frac = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    if t_schedule == "cosine":
        frac = (1.0 - np.cos(np.pi * frac)) / 2.0
    return (t_max - (t_max - t_min) * frac).astype(np.float32)


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    return int(steps)


def _times(sde: SDE, t_schedule, steps: int, t_max, t_min) -> Array:
    if isinstance(t_schedule, str):
        t_max = float(sde.T) if t_max is None else float(t_max)
        t_min = DEFAULT_T_MIN_FRACTION * float(sde.T) if t_min is None else float(t_min)
        if t_max > sde.T:
            raise ValueError(f"t_max={t_max} exceeds the process's T={sde.T}")
        return jnp.asarray(pnp_time_schedule(t_schedule, steps, t_max, t_min))
    if t_max is not None or t_min is not None:
        raise ValueError("t_max / t_min only apply to a named t_schedule; an array gives the levels itself")
    if np.shape(t_schedule) != (steps,):
        raise ValueError(f"t_schedule as an array must have shape (steps,) = ({steps},), got {np.shape(t_schedule)}")
    if _is_concrete(t_schedule):
        values = np.asarray(t_schedule, np.float64)
        if not (np.all(values > 0) and np.all(values <= sde.T)):
            raise ValueError(f"t_schedule values must lie in (0, T={sde.T}], got min {values.min()} max {values.max()}")
        if np.any(np.diff(values) > 0):
            raise ValueError("t_schedule must run from high to low noise (non-increasing)")
    return jnp.asarray(t_schedule, jnp.float32)


def _learning_rates(learning_rate, steps: int) -> Array:
    shape = np.shape(learning_rate)
    if shape not in ((), (steps,)):
        raise ValueError(f"learning_rate must be a scalar or shape (steps,) = ({steps},), got shape {shape}")
    if _is_concrete(learning_rate) and not np.all(np.asarray(learning_rate) > 0):
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    return jnp.broadcast_to(jnp.asarray(learning_rate, jnp.float32), (steps,))


def plug_and_play(
    eps_fn: Callable[[Array, Array], Array],
    sde: SDE,
    constraint_fn: Callable[[Array], Array],
    x_init: Array,
    *,
    key: PRNGKey,
    steps: int,
    learning_rate: float | Array,
    t_schedule: str | Array = "linear",
    t_max: float | None = None,
    t_min: float | None = None,
    prior_gradient: str = "score",
    prior_weight: float = 1.0,
) -> Array:
    """Optimise ``x`` under a diffusion prior plus a differentiable constraint.

    Each step ``k`` draws fresh noise ``eps``, forms ``x_t = alpha x + sigma eps`` at
    ``t = t_k`` and takes a gradient step
    ``x <- x - learning_rate_k (prior_weight * g_prior + grad constraint_fn(x))``;
    see the module docstring for the two forms of ``g_prior``.

    Args:
      eps_fn: the model's noise prediction ``eps_fn(x_t, t)``; ``t`` has shape ``(batch,)``
        and the output is shaped like ``x_t``. Each batch row must depend only on its
        own row.
      sde: the forward process the model was trained with (gives ``alpha_t, sigma_t``).
      constraint_fn: ``constraint_fn(x) -> scalar``, the negative log-likelihood (or any
        penalty) of the estimate; summed over the batch when rows are independent.
      x_init: starting estimate ``(batch, *dims)``, e.g. zeros or a first guess.
      key: PRNG key; step ``k`` uses ``fold_in(key, k)``.
      steps: number of gradient steps (static).
      learning_rate: step size, a scalar or an array of shape ``(steps,)``.
      t_schedule: ``"linear"`` or ``"cosine"`` from ``t_max`` to ``t_min``, or an array
        of shape ``(steps,)`` of non-increasing times in ``(0, T]``.
      t_max: first level of a named schedule (default ``sde.T``).
      t_min: last level of a named schedule (default ``0.05 * sde.T``).
      prior_gradient: ``"score"`` (default) or ``"full"``.
      prior_weight: multiplies the prior gradient (1 = the posterior for ``"score"``).

    Returns:
      The final estimate, shaped like ``x_init``.

    Raises:
      ValueError: on a bad step count, schedule, learning rate or option; when
        ``eps_fn`` does not return ``x``'s shape or ``constraint_fn`` does not return a
        scalar.
    """
    steps = _check_steps(steps)
    if prior_gradient not in PRIOR_GRADIENTS:
        raise ValueError(f"prior_gradient must be one of {PRIOR_GRADIENTS}, got {prior_gradient!r}")
    x_init = jnp.asarray(x_init)
    if x_init.ndim < 1 or not jnp.issubdtype(x_init.dtype, jnp.floating):
        raise ValueError(f"x_init must be a float array of shape (batch, ...), got {x_init.dtype} {x_init.shape}")
    times = _times(sde, t_schedule, steps, t_max, t_min)
    rates = _learning_rates(learning_rate, steps)
    t_probe = jnp.zeros(x_init.shape[:1], x_init.dtype)
    eps_shape = jax.eval_shape(eps_fn, x_init, t_probe).shape
    if eps_shape != x_init.shape:
        raise ValueError(f"eps_fn(x, t) must return x's shape {x_init.shape}, got {eps_shape}")
    c_shape = jax.eval_shape(constraint_fn, x_init).shape
    if c_shape != ():
        raise ValueError(f"constraint_fn(x) must return a scalar, got shape {c_shape}; sum it over the batch")

    constraint_grad = jax.grad(lambda x: constraint_fn(x).astype(jnp.float32))

    def denoising_loss(x, noise, t_batch):
        alpha, sigma = sde.alpha_sigma(t_batch)
        x_t = broadcast_to_x(alpha, x) * x + broadcast_to_x(sigma, x) * noise
        return jnp.sum((noise - eps_fn(x_t, t_batch)) ** 2)

    def prior_grad(x, noise, t_batch):
        if prior_gradient == "full":
            return jax.grad(denoising_loss)(x, noise, t_batch)
        alpha, sigma = sde.alpha_sigma(t_batch)
        x_t = broadcast_to_x(alpha, x) * x + broadcast_to_x(sigma, x) * noise
        return (eps_fn(x_t, t_batch) - noise) / broadcast_to_x(sigma, x)

    def step(x, inputs):
        k, t, rate = inputs
        noise = jax.random.normal(jax.random.fold_in(key, k), x.shape, x.dtype)
        t_batch = jnp.full(x.shape[:1], t, x.dtype)
        grad = prior_weight * prior_grad(x, noise, t_batch) + constraint_grad(x)
        return x - rate.astype(x.dtype) * grad.astype(x.dtype), None

    x, _ = jax.lax.scan(step, x_init, (jnp.arange(steps), times, rates))
    return x


# -- the paper's two uses: a classifier constraint, and segmentation refinement -------------


def classifier_constraint(log_prob_fn: Callable[[Array], Array], target: Array,
                          weight: float = 1.0) -> Callable[[Array], Array]:
    """``constraint_fn(x) = -weight * sum_b log p(target_b | x_b)``: "make it a bag".

    With an unconditional model as the prior, :func:`plug_and_play` then searches for an
    image that the model finds likely and the classifier assigns to ``target`` (the
    paper's conditional generation with a Fashion-MNIST model).

    Args:
      log_prob_fn: ``log_prob_fn(x) -> (batch, classes)`` log-probabilities (e.g.
        ``jax.nn.log_softmax`` of a classifier's logits on clean images).
      target: ``(batch,)`` integer classes (or one int for every row).
      weight: the constraint's weight (the classifier's "temperature").

    Returns:
      The constraint function (scalar, summed over the batch).
    """
    target = jnp.asarray(target, jnp.int32)

    def constraint(x):
        log_p = log_prob_fn(x)
        labels = jnp.broadcast_to(target, log_p.shape[:1])
        return -weight * jnp.sum(jnp.take_along_axis(log_p, labels[:, None], axis=-1))

    return constraint


def label_map_constraint(pixel_log_probs: Array, weight: float = 1.0,
                         temperature: float = 1.0) -> Callable[[Array], Array]:
    """The per-pixel classifier's log-likelihood of a relaxed label map, as a constraint.

    Label maps are encoded as images with a channel per class (``2 one_hot - 1``, so in
    ``[-1, 1]`` like the images a diffusion model trains on). A relaxed map ``x`` is read
    as the class distribution ``q = softmax(x / temperature)`` per pixel, and the
    constraint is ``-weight * sum_pixels sum_k q_k log p_k``: the classifier's expected
    log-likelihood, lowest where ``x`` puts its mass on the classes the classifier
    believes.

    Args:
      pixel_log_probs: ``(batch, H, W, K)`` log-probabilities of the pixel classifier
        (e.g. ``log`` of the ensemble's mean softmax).
      weight: weight against the prior.
      temperature: softness of the relaxation.

    Returns:
      ``constraint_fn(x)`` for ``x`` of ``pixel_log_probs``'s shape.
    """
    log_p = jnp.asarray(pixel_log_probs, jnp.float32)

    def constraint(x):
        q = jax.nn.softmax(x / temperature, axis=-1)
        return -weight * jnp.sum(q * log_p)

    return constraint


def refine_segmentation(
    eps_fn: Callable[[Array, Array], Array],
    sde: SDE,
    pixel_log_probs: Array,
    *,
    key: PRNGKey,
    steps: int = 100,
    learning_rate: float = 0.02,
    weight: float = 1.0,
    temperature: float = 0.5,
    t_max: float | None = 0.5,
    t_min: float | None = None,
    prior_gradient: str = "score",
) -> Array:
    """Refine a pixel classifier's segmentation with a diffusion prior over label maps.

    :func:`plug_and_play` from the classifier's own belief (``x_0 = 2 p - 1``) under the
    prior ``eps_fn`` (a model of label maps encoded as ``2 one_hot - 1``, K channels) and
    :func:`label_map_constraint`; the refined labels are the argmax over channels. The
    prior removes what label maps do not look like (isolated pixels, ragged edges); the
    constraint keeps the classifier's evidence.

    Args:
      eps_fn: noise prediction of a diffusion model of label maps, ``(B, H, W, K)``.
      sde: its process.
      pixel_log_probs: ``(B, H, W, K)`` classifier log-probabilities.
      key: PRNG key.
      steps, learning_rate, t_max, t_min, prior_gradient: as in :func:`plug_and_play`
        (a refinement starts at a moderate ``t_max``: the start is already close).
      weight, temperature: of :func:`label_map_constraint`.

    Returns:
      ``(B, H, W)`` int32 refined labels.
    """
    log_p = jnp.asarray(pixel_log_probs, jnp.float32)
    x0 = 2.0 * jnp.exp(log_p) - 1.0
    x = plug_and_play(eps_fn, sde, label_map_constraint(log_p, weight, temperature), x0, key=key, steps=steps,
                      learning_rate=learning_rate, t_schedule="linear", t_max=t_max, t_min=t_min,
                      prior_gradient=prior_gradient)
    return jnp.argmax(x, axis=-1).astype(jnp.int32)
