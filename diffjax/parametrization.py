"""Conversions between eps-, x0-, v- and score-predictions, and model wrappers.

With ``x_t = alpha x_0 + sigma eps`` (see :mod:`diffjax.sde`)::

    score = -eps / sigma
    x0    = (x_t - sigma eps) / alpha
    v     = alpha eps - sigma x0          (Salimans & Ho, 2022)

Every function takes the prediction, the noisy input ``x`` and the times ``t``
(shape ``(batch,)``) plus the process, and is exact for every process in
:mod:`diffjax.sde` (VE has ``alpha = 1``).
"""

from __future__ import annotations

from typing import Callable, Literal

import jax.numpy as jnp

from diffjax.sde import SDE, DiscreteVPSDE, broadcast_to_x
from diffjax.typing import Array, ScoreFn

__all__ = [
    "PREDICTION_KINDS",
    "TIME_INPUTS",
    "convert",
    "to_eps",
    "model_score_fn",
    "network_time_input",
    "tweedie_x0",
]

Prediction = Literal["eps", "x0", "v", "score"]
PREDICTION_KINDS = ("eps", "x0", "v", "score")
TimeInput = Literal["t", "index", "alpha", "sigma", "log_snr"]
TIME_INPUTS = ("t", "index", "alpha", "sigma", "log_snr")


def _scales(sde: SDE, x: Array, t: Array) -> tuple[Array, Array]:
    alpha, sigma = sde.alpha_sigma(t)
    return broadcast_to_x(alpha, x), broadcast_to_x(sigma, x)


def to_eps(pred: Array, kind: Prediction, x: Array, t: Array, sde: SDE) -> Array:
    """Express a prediction of ``kind`` as the noise ``eps`` it implies."""
    alpha, sigma = _scales(sde, x, t)
    if kind == "eps":
        return pred
    if kind == "score":
        return -sigma * pred
    if kind == "x0":
        return (x - alpha * pred) / sigma
    if kind == "v":
        # eps = sigma x_t + alpha v when alpha^2 + sigma^2 = 1; in general
        # eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2).
        return (sigma * x + alpha * pred) / (alpha**2 + sigma**2)
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def _from_eps(eps: Array, kind: Prediction, x: Array, t: Array, sde: SDE) -> Array:
    alpha, sigma = _scales(sde, x, t)
    if kind == "eps":
        return eps
    if kind == "score":
        return -eps / sigma
    if kind == "x0":
        return (x - sigma * eps) / alpha
    if kind == "v":
        x0 = (x - sigma * eps) / alpha
        return alpha * eps - sigma * x0
    raise ValueError(f"unknown prediction kind {kind!r}; expected one of {PREDICTION_KINDS}")


def convert(pred: Array, *, source: Prediction, target: Prediction, x: Array, t: Array, sde: SDE) -> Array:
    """Convert a network prediction from one parametrization to another.

    Args:
      pred: the prediction, shaped like ``x``.
      source: what ``pred`` is: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
      target: the parametrization wanted.
      x: the noisy input the prediction was made at.
      t: times, shape ``(batch,)``.
      sde: the forward process.

    Returns:
      The same quantity in the ``target`` parametrization.
    """
    if source == target:
        if source not in PREDICTION_KINDS:
            raise ValueError(f"unknown prediction kind {source!r}; expected one of {PREDICTION_KINDS}")
        return pred
    return _from_eps(to_eps(pred, source, x, t, sde), target, x, t, sde)


def tweedie_x0(score: Array, x: Array, t: Array, sde: SDE) -> Array:
    """Posterior mean ``E[x_0 | x_t] = (x_t + sigma^2 score) / alpha`` (Tweedie's formula)."""
    return convert(score, source="score", target="x0", x=x, t=t, sde=sde)


def network_time_input(sde: SDE, t: Array, kind: TimeInput = "t") -> Array:
    """The scalar a network is conditioned on at time ``t``.

    ``"t"``: t itself. ``"index"``: the discrete step ``t N - 1`` of a
    :class:`~diffjax.sde.DiscreteVPSDE` (``999 t`` for other processes, the DDPM
    convention). ``"alpha"``: the signal scale, SR3's noise level
    ``gamma = sqrt(alpha_bar)``. ``"sigma"``: the noise scale (NCSN). ``"log_snr"``:
    ``log(alpha / sigma)``.
    """
    if kind == "t":
        return t
    if kind == "index":
        if isinstance(sde, DiscreteVPSDE):
            return sde.timestep(t)
        return 999.0 * t
    if kind == "alpha":
        return sde.alpha_sigma(t)[0]
    if kind == "sigma":
        return sde.alpha_sigma(t)[1]
    if kind == "log_snr":
        return sde.log_snr(t)
    raise ValueError(f"unknown time input {kind!r}; expected one of {TIME_INPUTS}")


def model_score_fn(
    apply_fn: Callable[[Array, Array], Array],
    sde: SDE,
    *,
    prediction: Prediction = "eps",
    time_input: TimeInput = "t",
) -> ScoreFn:
    """Wrap a network ``apply_fn(x, c) -> prediction`` as a ``score_fn(x, t)``.

    Args:
      apply_fn: the network with its parameters bound (e.g. ``partial(model, cond=...)``
        or an NNX module); called with ``x`` and the conditioning scalar per example.
      sde: the forward process the network was trained under.
      prediction: what the network outputs: ``"eps"``, ``"x0"``, ``"v"`` or ``"score"``.
      time_input: what the network is conditioned on (see :func:`network_time_input`).

    Returns:
      A score function for every sampler of :mod:`diffjax.samplers`.
    """
    if prediction not in PREDICTION_KINDS:
        raise ValueError(f"unknown prediction kind {prediction!r}; expected one of {PREDICTION_KINDS}")
    if time_input not in TIME_INPUTS:
        raise ValueError(f"unknown time input {time_input!r}; expected one of {TIME_INPUTS}")

    def score_fn(x: Array, t: Array) -> Array:
        t = jnp.broadcast_to(jnp.asarray(t, x.dtype), x.shape[:1])
        pred = apply_fn(x, network_time_input(sde, t, time_input))
        return convert(pred, source=prediction, target="score", x=x, t=t, sde=sde)

    return score_fn
