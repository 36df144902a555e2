"""The fixed-grid loop shared by the samplers of pc.py, ancestral.py and heun.py.

Each of those samplers is one update rule ``x_t -> x_s`` on a decreasing time
grid; this module owns the grid, the per-step keys and the ``lax.scan``, so
every sampler runs as one compiled loop with ``fold_in(key, i)`` at step ``i``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.samplers.base import time_grid
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey

# step(x, t, s, key, is_last) -> x at s; t and s are scalars (the whole batch shares them).
StepFn = Callable[[Array, Array, Array, PRNGKey, Array], Array]


def check_positive(name: str, field: str, value, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} needs a number {field} {bound}, got {field}={value!r}")


def check_count(name: str, field: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} needs an integer {field} >= 0, got {field}={value!r}")


def run_on_grid(
    step: StepFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end, steps: int, spacing: str
) -> Array:
    """Apply ``step`` along ``time_grid(sde, t_start, t_end, steps, spacing)`` in one scan.

    Args:
      step: the update ``step(x, t, s, key, is_last) -> x_s`` from scalar ``t`` down to ``s``.
      sde: the forward process (for log-SNR spacing).
      x: state at ``t_start``, shape ``(batch, *dims)``.
      key: base key; step ``i`` gets ``fold_in(key, i)``.
      t_start, t_end: scalar end points of the grid.
      steps: number of updates.
      spacing: one of ``SPACINGS``.

    Returns:
      The state at ``t_end``.
    """
    ts = time_grid(sde, t_start, t_end, steps, spacing, dtype=x.dtype)

    def body(x, i):
        return step(x, ts[i], ts[i + 1], jax.random.fold_in(key, i), i == steps - 1), None

    x, _ = jax.lax.scan(body, x, jnp.arange(steps))
    return x


def per_example(t: Array, x: Array) -> Array:
    """A scalar time as the ``(batch,)`` vector a score function takes."""
    return jnp.full(x.shape[:1], t, x.dtype)


def noise_like(key: PRNGKey, x: Array) -> Array:
    return jax.random.normal(key, x.shape, x.dtype)


def run_on_discrete_steps(step: StepFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, steps: int, spacing: str,
                          steps_offset: int, final_alpha_one: bool) -> Array:
    """Apply ``step`` on diffusers' integer timesteps of a :class:`~diffjax.sde.DiscreteVPSDE` in one scan.

    Timestep ``k`` is the time ``(k + 1) / N``; a jump below ``k = 0`` lands on the
    chain's end: ``t = 0`` (``alpha = 1``) when ``final_alpha_one`` (diffusers'
    ``set_alpha_to_one``) else ``t = 1 / N`` (``alpha_bar_0``). Steps whose time
    exceeds ``t_start`` are skipped (SDEdit-style partial chains), without a
    network call.
    """
    from diffjax.samplers.base import discrete_timesteps
    from diffjax.sde import DiscreteVPSDE

    if not isinstance(sde, DiscreteVPSDE):
        raise ValueError(f"spacing={spacing!r} counts diffusers' integer timesteps: it needs a DiscreteVPSDE, "
                         f"got {type(sde).__name__}")
    n = sde.num_steps
    ks, prev = discrete_timesteps(spacing, n, steps, steps_offset)
    end = 0.0 if final_alpha_one else 1.0 / n
    t = jnp.asarray((ks + 1) / n, x.dtype)
    s = jnp.asarray(np.where(prev >= 0, (prev + 1) / n, end), x.dtype)
    tol = 0.5 / n

    def body(x, i):
        def go(x):
            return step(x, t[i], s[i], jax.random.fold_in(key, i), i == steps - 1)

        return jax.lax.cond(t[i] <= t_start + tol, go, lambda x: x, x), None

    x, _ = jax.lax.scan(body, x, jnp.arange(steps))
    return x
