"""The one sampling entry point, :func:`sample`, and what every sampler shares.

A sampler is a frozen dataclass whose hyper-parameters are static fields; it
implements ``run(score_fn, sde, x, *, key, t_start, t_end) -> (x, info)`` as a
pure function whose whole loop is a ``lax.scan`` / ``lax.while_loop``. The
dataclass is registered as a pytree with no leaves, so it hashes by value and
``jax.jit`` treats it as a compile-time constant.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.parametrization import tweedie_x0
from diffjax.samplers.schedules import FITTED, fitted_fractions
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["Sampler", "sample", "time_grid", "static_sampler", "SPACINGS", "DISCRETE_SPACINGS", "discrete_timesteps"]

Spacing = Literal["logsnr", "uniform", "quadratic", "karras", "fitted"]
SPACINGS = ("logsnr", "uniform", "quadratic", "karras", "fitted")
# diffusers' integer timestep spacings (DDIM / DDPM schedulers on a DiscreteVPSDE; see discrete_timesteps).
DISCRETE_SPACINGS = ("leading", "trailing", "linspace")

# EDM's exponent for its sigma spacing (Karras et al. 2022, eq. 5).
KARRAS_RHO = 7.0


def static_sampler(cls):
    """Decorator: frozen dataclass + pytree with every field static."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=[], meta_fields=fields)


def _check_steps(name: str, steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{name} needs an integer steps >= 1, got steps={steps!r}")


class Sampler:
    """Base class of the samplers in :mod:`diffjax.samplers`."""

    def validate(self) -> None:
        """Raise ``ValueError`` on bad hyper-parameters (called from ``__post_init__``)."""
        if hasattr(self, "steps"):
            _check_steps(type(self).__name__, self.steps)
        if getattr(self, "spacing", None) in DISCRETE_SPACINGS and self._discrete_ok:
            return
        if hasattr(self, "spacing") and self.spacing not in SPACINGS:
            raise ValueError(f"{type(self).__name__} needs spacing in {SPACINGS}, got spacing={self.spacing!r}")
        if getattr(self, "spacing", None) == "fitted" and self._fitted_family is None:
            allowed = tuple(s for s in SPACINGS if s != "fitted")
            raise ValueError(
                f"{type(self).__name__} has no fitted schedule (only UniPC and DPMSolverPP do); "
                f"use spacing in {allowed}, got spacing='fitted'"
            )
        if getattr(self, "spacing", None) == "fitted" and not FITTED.get(self._fitted_family):
            raise ValueError(
                f"{type(self).__name__} has no fitted schedule for {self._fitted_family!r}; fitted: "
                f"{sorted(k for k, v in FITTED.items() if v)} (benchmarks/fit_schedule.py fits them)"
            )

    # Key of schedules.FITTED read by spacing="fitted"; None: the sampler has no fitted grid.
    _fitted_family = None
    # Whether the sampler takes diffusers' discrete timestep spacings (DISCRETE_SPACINGS).
    _discrete_ok = False

    def __post_init__(self):
        self.validate()

    def run(
        self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start: Array, t_end: Array
    ) -> tuple[Array, dict]:
        """Integrate from ``t_start`` down to ``t_end``; returns ``(x, info)``."""
        raise NotImplementedError


def time_grid(
    sde: SDE, t_start, t_end, steps: int, spacing: Spacing = "uniform", dtype=jnp.float32, *, fitted_for: str | None = None
) -> Array:
    """``steps + 1`` decreasing times from ``t_start`` to ``t_end`` (both included).

    ``"uniform"``: equal steps in t. ``"quadratic"``: equal steps in sqrt(t)
    (finer near the data, as in DDIM's quadratic schedule). ``"logsnr"``: equal
    steps in the half log-SNR ``lambda(t)``, DPM-Solver's recommended choice.
    ``"karras"``: EDM's sigma spacing (Karras et al. 2022, eq. 5): equal steps in
    ``rho^(1/7)`` with ``rho = sigma / alpha = exp(-lambda)``, the noise level of
    the scaled variable. ``"fitted"``: the log-SNR fractions fitted once on the
    exact-score Gaussian mixture under the VP process for the sampler family
    ``fitted_for`` (Align-Your-Steps style; see :mod:`diffjax.samplers.schedules`).

    Args:
      sde: the forward process (its ``log_snr`` / ``t_from_log_snr`` for the
        ``"logsnr"``, ``"karras"`` and ``"fitted"`` grids).
      t_start, t_end: scalar end points, ``t_end < t_start``.
      steps: number of intervals, ``>= 1``.
      spacing: one of ``SPACINGS``.
      dtype: floating dtype of the result.
      fitted_for: which fitted table ``"fitted"`` reads (a key of
        ``schedules.FITTED``); required by ``"fitted"``, ignored by the others.

    Returns:
      Array of shape ``(steps + 1,)``.

    Raises:
      ValueError: on an unknown ``spacing`` or ``fitted_for``.
    """
    t_start = jnp.asarray(t_start, dtype)
    t_end = jnp.asarray(t_end, dtype)
    u = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    if spacing == "uniform":
        return t_start + (t_end - t_start) * u
    if spacing == "quadratic":
        a, b = jnp.sqrt(t_start), jnp.sqrt(t_end)
        return (a + (b - a) * u) ** 2
    if spacing in ("logsnr", "karras", "fitted"):
        lam_start, lam_end = sde.log_snr(t_start), sde.log_snr(t_end)
        if spacing == "logsnr":
            lam = lam_start + (lam_end - lam_start) * u
        elif spacing == "karras":
            # rho^(1/7) = exp(-lambda / 7), linear in u.
            a, b = jnp.exp(-lam_start / KARRAS_RHO), jnp.exp(-lam_end / KARRAS_RHO)
            lam = -KARRAS_RHO * jnp.log(a + (b - a) * u)
        else:
            if fitted_for is None:
                raise ValueError("spacing='fitted' needs fitted_for, the sampler family the grid was fitted for")
            frac = jnp.asarray(fitted_fractions(fitted_for, steps), dtype)
            lam = lam_start + (lam_end - lam_start) * frac
        ts = sde.t_from_log_snr(lam)
        # Pin the end points: the inverse is exact only to rounding.
        return ts.at[0].set(t_start).at[-1].set(t_end)
    raise ValueError(f"unknown time spacing {spacing!r}; expected one of {SPACINGS}")


def discrete_timesteps(spacing: str, num_train: int, steps: int, steps_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """diffusers' DDIM / DDPM inference timesteps and the step each one jumps to.

    ``"leading"``: ``arange(steps) * (N // steps) + steps_offset``; ``"trailing"``:
    ``round(arange(N, 0, -N / steps)) - 1``; ``"linspace"``: ``round(linspace(0, N - 1,
    steps))`` (all decreasing). Step ``k`` jumps to ``k - N // steps`` (so with
    ``"linspace"`` not always to the next timestep, exactly as the schedulers do);
    a negative target means the chain's end.

    Args:
      spacing: one of ``DISCRETE_SPACINGS``.
      num_train: ``N``, the training chain's length.
      steps: number of inference steps, ``1 <= steps <= N``.
      steps_offset: added to ``"leading"`` timesteps (diffusers' ``steps_offset``).

    Returns:
      ``(timesteps, previous)``: two int64 arrays of shape ``(steps,)``.
    """
    if not 1 <= steps <= num_train:
        raise ValueError(f"discrete spacings need 1 <= steps <= num_steps = {num_train}, got steps={steps}")
    if spacing == "linspace":
        ts = np.linspace(0, num_train - 1, steps).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        ts = (np.arange(0, steps) * (num_train // steps)).round()[::-1].astype(np.int64) + steps_offset
    elif spacing == "trailing":
        ts = np.round(np.arange(num_train, 0, -num_train / steps)).astype(np.int64) - 1
    else:
        raise ValueError(f"unknown discrete spacing {spacing!r}; expected one of {DISCRETE_SPACINGS}")
    return ts, ts - num_train // steps


def _is_concrete(v) -> bool:
    return not isinstance(v, jax.core.Tracer)


def _check_time(name: str, value, sde: SDE, batch: int) -> Array:
    value = jnp.asarray(value)
    if value.ndim != 0:
        raise ValueError(
            f"{name} must be a scalar time, got an array of shape {value.shape} "
            f"(x has batch {batch}; per-example start times are not supported)"
        )
    if _is_concrete(value):
        v = float(value)
        # Allow float32 rounding of the interval's own end points.
        tol = 1e-6 * max(1.0, sde.T)
        if not (sde.eps - tol <= v <= sde.T + tol):
            raise ValueError(f"{name} must lie in [sde.eps, sde.T] = [{sde.eps}, {sde.T}], got {v}")
    return value


def sample(
    score_fn: ScoreFn,
    sde: SDE,
    x_init: Array,
    *,
    key: PRNGKey,
    sampler: Sampler,
    t_start=None,
    t_end=None,
    denoise: bool = False,
) -> tuple[Array, dict]:
    """Run ``sampler`` on ``score_fn`` from ``x_init`` at ``t_start`` down to ``t_end``.

    The whole loop is one compiled program, so the call is jit-able as a whole:
    ``jax.jit(functools.partial(dj.sample, score_fn, sde, sampler=s))(x, key=key)``.

    Args:
      score_fn: ``score_fn(x, t) -> array shaped like x``, ``t`` of shape ``(batch,)``.
      sde: the forward process (:mod:`diffjax.sde`).
      x_init: the state at ``t_start``, shape ``(batch, *dims)``, floating point;
        ``sde.prior_sample(key, shape)`` for unconditional generation, a noised
        image for SDEdit-style editing.
      key: a ``jax.random`` key; step ``i`` uses ``fold_in(key, i)``.
      sampler: one of :mod:`diffjax.samplers`.
      t_start: start time, a scalar in ``[sde.eps, sde.T]``; default ``sde.T``.
      t_end: end time, a scalar in ``[sde.eps, t_start)``; default ``sde.eps``.
      denoise: finish with one Tweedie denoising step ``E[x_0 | x_{t_end}]`` (one
        extra score evaluation, counted in ``info["nfe"]``).

    Returns:
      ``(x, info)``: the samples, shaped like ``x_init``, and a dict with at least
      ``"nfe"``, the number of score evaluations per example.

    Raises:
      ValueError: on a non-floating ``x_init``, times outside ``[eps, T]`` or not
        decreasing, or a ``score_fn`` whose output does not match ``x``.
    """
    if not isinstance(sampler, Sampler):
        raise ValueError(f"sampler must be one of diffjax.samplers, got {type(sampler).__name__}")
    x_init = jnp.asarray(x_init)
    if not jnp.issubdtype(x_init.dtype, jnp.floating):
        raise ValueError(
            f"x_init must be a floating-point array, got dtype {x_init.dtype}; convert images "
            "with x.astype(jnp.float32) / 127.5 - 1"
        )
    if x_init.ndim < 1:
        raise ValueError(f"x_init must have a batch axis, got shape {x_init.shape}")
    batch = x_init.shape[0]
    t_start = _check_time("t_start", sde.T if t_start is None else t_start, sde, batch)
    t_end = _check_time("t_end", sde.eps if t_end is None else t_end, sde, batch)
    if _is_concrete(t_start) and _is_concrete(t_end) and not float(t_end) < float(t_start):
        raise ValueError(f"t_end must be below t_start, got t_start={float(t_start)}, t_end={float(t_end)}")
    t_start = t_start.astype(x_init.dtype)
    t_end = t_end.astype(x_init.dtype)

    out = jax.eval_shape(score_fn, x_init, jnp.zeros((batch,), x_init.dtype))
    if out.shape != x_init.shape:
        raise ValueError(
            f"score_fn(x, t) must return an array shaped like x {x_init.shape} for t of shape "
            f"({batch},), got {out.shape}"
        )

    x, info = sampler.run(score_fn, sde, x_init, key=key, t_start=t_start, t_end=t_end)
    if denoise:
        t = jnp.full((batch,), t_end, x.dtype)
        x = tweedie_x0(score_fn(x, t), x, t, sde)
        info = dict(info, nfe=info["nfe"] + 1)
    return x, info
