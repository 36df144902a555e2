"""Exact log-likelihoods through the probability-flow ODE, and bits per dimension.

Along the probability flow ``dx/dt = f~(x, t)`` the log-density obeys the
instantaneous change of variables ``d log p_t(x(t)) / dt = -div f~(x(t), t)``.
Integrating data ``x = x(eps)`` forward to ``T`` jointly with the divergence::

    log p_eps(x) = log p_T(x(T)) + int_eps^T div f~(x(t), t) dt

with ``p_T`` replaced by the process's prior. The divergence is exact (the
Jacobian's diagonal, one forward-mode product per dimension) or Hutchinson's
unbiased estimate ``v^T J v`` with one probe ``v`` per example, held fixed over
the solve so the estimate of the whole integral stays unbiased.
"""

from __future__ import annotations

import math
from typing import Literal

import diffrax
import jax
import jax.numpy as jnp

from diffjax.samplers.ode import count_evaluations, make_solver
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["log_likelihood", "bits_per_dim", "ESTIMATORS"]

ESTIMATORS = ("rademacher", "gaussian")


def _probe(key: PRNGKey, x: Array, estimator: str) -> Array:
    if estimator == "rademacher":
        return jax.random.rademacher(key, x.shape, x.dtype)
    if estimator == "gaussian":
        return jax.random.normal(key, x.shape, x.dtype)
    raise ValueError(f"unknown divergence estimator {estimator!r}; expected one of {ESTIMATORS}")


def _exact_divergence(fn, x: Array) -> tuple[Array, Array]:
    """``fn(x)`` and the trace of its per-example Jacobian.

    One jvp per dimension, each with the same one-hot tangent for every example;
    this relies on ``fn`` treating examples independently, as a score network
    does. Cost: ``dims`` forward-mode passes, fine for small dimensions.
    """
    batch, dims = x.shape[0], math.prod(x.shape[1:])
    basis = jnp.eye(dims, dtype=x.dtype).reshape((dims, 1) + x.shape[1:])
    basis = jnp.broadcast_to(basis, (dims,) + x.shape)

    def column(v):
        return jax.jvp(fn, (x,), (v,))

    out, jv = jax.vmap(column)(basis)  # (dims, batch, *dims)
    diag = jnp.einsum("ibi->b", jv.reshape(dims, batch, dims))
    return out[0], diag


def log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Array,
    *,
    key: PRNGKey,
    exact_divergence: bool = False,
    estimator: Literal["rademacher", "gaussian"] = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_end: float | None = None,
    solver: Literal["tsit5", "dopri5"] = "tsit5",
    max_steps: int = 4096,
) -> tuple[Array, dict]:
    """Log-density of ``x`` under the model's probability flow, in nats per example.

    Integrates the probability-flow ODE from ``t = sde.eps`` to ``t_end``
    together with the divergence of its drift, and adds the prior's log-density
    at the end point. With an exact score this is ``log p_eps(x)`` up to the gap
    between the prior and the true marginal at ``t_end``. Jit-able.

    Args:
      score_fn: ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.
      sde: the forward process.
      x: data in the model's space, shape ``(batch, *dims)``, floating point.
      key: draws the Hutchinson probes (unused with ``exact_divergence``).
      exact_divergence: trace of the Jacobian by one jvp per dimension instead of
        Hutchinson's estimate; exact but ``dims`` times the cost.
      estimator: Hutchinson probe distribution, ``"rademacher"`` (lower variance)
        or ``"gaussian"``.
      rtol, atol: tolerances of the adaptive solver (on ``x`` and the log-density).
      t_end: where the flow stops and the prior is evaluated; default ``sde.T``.
      solver: ``"tsit5"`` or ``"dopri5"``.
      max_steps: cap on solver steps (exceeding it raises at run time).

    Returns:
      ``(logp, info)``: ``logp`` of shape ``(batch,)``; ``info`` holds ``"nfe"``
      (drift evaluations, each a jvp through the score), ``"prior_logp"`` and
      ``"delta_logp"`` (the two terms of ``logp``), and ``"z"``, the end point ``x(t_end)``.

    Raises:
      ValueError: on non-floating or batch-less ``x``, an unknown estimator, or
        ``t_end`` outside ``(eps, T]``.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.ndim < 2:
        raise ValueError(
            f"x must be a floating-point array of shape (batch, *dims), got dtype {x.dtype}, shape {x.shape}"
        )
    if not exact_divergence and estimator not in ESTIMATORS:
        raise ValueError(f"unknown divergence estimator {estimator!r}; expected one of {ESTIMATORS}")
    t1 = sde.T if t_end is None else float(t_end)
    if not sde.eps < t1 <= sde.T:
        raise ValueError(f"t_end must lie in (sde.eps, sde.T] = ({sde.eps}, {sde.T}], got {t1}")
    batch = x.shape[0]

    def drift(x, t):
        t_vec = jnp.full((batch,), t, x.dtype)
        return sde.probability_flow_drift(x, t_vec, score_fn(x, t_vec))

    if exact_divergence:

        def vector_field(t, state, probe):
            return _exact_divergence(lambda y: drift(y, t), state[0])

    else:
        reduce_axes = tuple(range(1, x.ndim))

        def vector_field(t, state, probe):
            f, jv = jax.jvp(lambda y: drift(y, t), (state[0],), (probe,))
            return f, jnp.sum(probe * jv, axis=reduce_axes)

    probe = None if exact_divergence else _probe(key, x, estimator)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        make_solver(solver),
        t0=jnp.asarray(sde.eps, x.dtype),
        t1=jnp.asarray(t1, x.dtype),
        dt0=None,
        y0=(x, jnp.zeros((batch,), x.dtype)),
        args=probe,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
    )
    z, delta = sol.ys[0][-1], sol.ys[1][-1]
    prior = sde.prior_logp(z)
    info = {
        "nfe": count_evaluations(sol.stats),
        "prior_logp": prior,
        "delta_logp": delta,
        "z": z,
    }
    return prior + delta, info


def bits_per_dim(
    logp: Array,
    num_dims: int,
    *,
    dequantized_8bit: bool = True,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> Array:
    """Convert a log-density in nats into bits per dimension.

    Convention for 8-bit data (``dequantized_8bit=True``): integer pixels
    ``k in {0..255}`` are dequantised to ``u = k + U[0, 1)`` in ``[0, 256)`` and
    mapped affinely onto ``data_range = (lo, hi)``::

        y = lo + (hi - lo) * u / 256

    so ``log p_u(u) = log p_y(y) + D log((hi - lo) / 256)``, and the bits per
    dimension of the dequantised data, an upper bound on the discrete data's, are::

        bpd = -logp / (D ln 2) + log2(256 / (hi - lo))

    For the default range (-1, 1) the offset is exactly 7 bits; a model that is
    uniform over ``[lo, hi)^D`` scores exactly 8 bits per dimension.

    With ``dequantized_8bit=False`` no change of variables is made: the result is
    the continuous density's ``-logp / (D ln 2)`` in the model's own space.

    Args:
      logp: log-density in nats, any shape (e.g. ``(batch,)``).
      num_dims: ``D``, the number of dimensions per example (e.g. ``H * W * C``).
      dequantized_8bit: apply the 8-bit dequantisation convention above.
      data_range: ``(lo, hi)``, the model-space interval the 256 bins cover.

    Returns:
      Bits per dimension, shaped like ``logp``.
    """
    if isinstance(num_dims, bool) or not isinstance(num_dims, int) or num_dims < 1:
        raise ValueError(f"num_dims must be a positive integer, got {num_dims!r}")
    lo, hi = data_range
    if not hi > lo:
        raise ValueError(f"data_range must be (lo, hi) with hi > lo, got {data_range!r}")
    bpd = -jnp.asarray(logp) / (num_dims * math.log(2.0))
    if dequantized_8bit:
        bpd = bpd + math.log2(256.0 / (hi - lo))
    return bpd
