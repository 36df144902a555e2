"""Multistep DPM-Solver++ (Lu et al., 2022): orders 1, 2 (2M) and 3 (3M).

DPM-Solver++ integrates the probability-flow ODE written in the half log-SNR
``lambda = log(alpha / sigma)`` with the *data prediction* ``x0(x, t)``::

    x_t = (sigma_t / sigma_s) x_s + alpha_t * int_{lambda_s}^{lambda_t} e^{-lambda} x0(lambda) d lambda

The linear part is exact; only ``x0`` is approximated, by a polynomial in
``lambda`` through the last ``order`` predictions (multistep: one new score
evaluation per step). Everything is expressed through ``sde.alpha_sigma`` and
``sde.log_snr``, so one implementation serves VP, sub-VP, VE, cosine and
discrete schedules.

Each update is a linear combination ``x' = c_x x + c_0 m_0 + c_1 m_1 + c_2 m_2``
of the state and the last three predictions ``m_0, m_1, m_2``. The
coefficients depend only on the time grid, so they are computed for every step
before the loop; the ``lax.scan`` body then does one score call and one fused
update, and warm-up / final lower-order steps are just different rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.parametrization import tweedie_x0
from diffjax.samplers.base import Sampler, Spacing, static_sampler, time_grid
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["DPMSolverPP", "dpm_solver_coefficients", "step_orders"]

ORDERS = (1, 2, 3)

# Below this many steps the last steps drop to lower order: high-order
# extrapolation through the few, widely spaced, low-noise predictions is what
# makes very short multistep runs unstable (the reference method's rule).
_LOWER_ORDER_FINAL_BELOW = 15


def step_orders(steps: int, order: int, lower_order_final: bool) -> np.ndarray:
    """Order used at each step: warm up from 1, optionally wind down at the end.

    Args:
      steps: number of steps.
      order: the target order (1, 2 or 3).
      lower_order_final: drop to lower order on the last steps when
        ``steps < 15``.

    Returns:
      Integer array of shape ``(steps,)``.
    """
    i = np.arange(steps)
    # Step i has only i + 1 predictions available.
    orders = np.minimum(order, i + 1)
    if lower_order_final and steps < _LOWER_ORDER_FINAL_BELOW:
        orders = np.minimum(orders, steps - i)
    return orders


def dpm_solver_coefficients(sde: SDE, ts: Array, orders: np.ndarray) -> Array:
    """Update coefficients ``(c_x, c_0, c_1, c_2)`` for every step of a grid.

    Step ``i`` goes from ``ts[i]`` to ``ts[i + 1]`` and uses the predictions
    ``m_0 = x0(ts[i])``, ``m_1 = x0(ts[i - 1])``, ``m_2 = x0(ts[i - 2])``.

    Args:
      sde: the forward process.
      ts: decreasing times, shape ``(steps + 1,)``.
      orders: per-step order from :func:`step_orders`, shape ``(steps,)``.

    Returns:
      Array of shape ``(steps, 4)``.
    """
    alpha, sigma = sde.alpha_sigma(ts)
    lam = sde.log_snr(ts)
    i = np.arange(len(orders))
    # lambda_{i-1}, lambda_{i-2}, clamped at the start (those rows are masked below).
    lam_prev1 = lam[np.maximum(i - 1, 0)]
    lam_prev2 = lam[np.maximum(i - 2, 0)]
    lam_cur, lam_next = lam[:-1], lam[1:]

    h = lam_next - lam_cur
    # Step sizes of the previous steps; 1.0 where they do not exist yet, so the
    # rows that are never used stay finite (they are masked by `orders`).
    h0 = jnp.where(orders >= 2, lam_cur - lam_prev1, 1.0)
    h1 = jnp.where(orders >= 3, lam_prev1 - lam_prev2, 1.0)
    r0, r1 = h0 / h, h1 / h

    phi1 = jnp.expm1(-h)  # e^{-h} - 1
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    a = alpha[1:]
    c_x = sigma[1:] / sigma[:-1]

    # Coefficient vectors over (m_0, m_1, m_2).
    e0 = jnp.array([1.0, 0.0, 0.0], ts.dtype)
    e1 = jnp.array([0.0, 1.0, 0.0], ts.dtype)
    e2 = jnp.array([0.0, 0.0, 1.0], ts.dtype)
    col = lambda v: v[:, None]  # noqa: E731

    # Order 1 (DDIM in data prediction): x0 held constant over the step.
    first = -col(a * phi1) * e0
    # 2M: x0 extrapolated linearly in lambda through m_0, m_1.
    d1_0 = (e0 - e1) / col(r0)
    second = first - 0.5 * col(a * phi1) * d1_0
    # 3M: quadratic through m_0, m_1, m_2 (first and second divided differences).
    d1_1 = (e1 - e2) / col(r1)
    d1 = d1_0 + col(r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / col(r0 + r1)
    third = first + col(a * phi2) * d1 - col(a * phi3) * d2

    o = col(jnp.asarray(orders))
    coeffs = jnp.where(o == 1, first, jnp.where(o == 2, second, third))
    return jnp.concatenate([col(c_x), coeffs], axis=1)


@static_sampler
class DPMSolverPP(Sampler):
    """Multistep DPM-Solver++ in data prediction, one score evaluation per step.

    Args:
      steps: number of steps (= number of score evaluations), ``>= 1``.
      order: 1 (equals deterministic DDIM), 2 (2M) or 3 (3M). The first steps
        warm up with lower order, as a multistep method must.
      spacing: the time grid: ``"logsnr"`` (uniform in ``lambda``),
        ``"uniform"`` or ``"quadratic"`` in t (see :func:`time_grid`).
      lower_order_final: when ``steps < 15``, use order ``<= steps - i`` at step
        ``i`` so the last step is first order; this avoids the instability of
        high-order extrapolation on very short runs.
    """

    steps: int
    order: int = 2
    spacing: Spacing = "logsnr"
    lower_order_final: bool = True

    def validate(self) -> None:
        super().validate()
        if isinstance(self.order, bool) or self.order not in ORDERS:
            raise ValueError(f"DPMSolverPP order must be one of {ORDERS}, got order={self.order!r}")
        if not isinstance(self.lower_order_final, bool):
            raise ValueError(
                f"DPMSolverPP lower_order_final must be a bool, got {self.lower_order_final!r}"
            )

    def run(
        self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start: Array, t_end: Array
    ) -> tuple[Array, dict]:
        """Integrate the probability flow from ``t_start`` to ``t_end``.

        Args:
          score_fn: ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.
          sde: the forward process.
          x: the state at ``t_start``, shape ``(batch, *dims)``.
          key: unused (the method is deterministic); kept for the common signature.
          t_start, t_end: scalar times, ``t_end < t_start``.

        Returns:
          ``(x, info)`` with ``info["nfe"] == steps``.
        """
        del key
        ts = time_grid(sde, t_start, t_end, self.steps, self.spacing, dtype=x.dtype)
        orders = step_orders(self.steps, self.order, self.lower_order_final)
        coeffs = dpm_solver_coefficients(sde, ts, orders).astype(x.dtype)
        batch = x.shape[0]

        def step(carry, inputs):
            x, m1, m2 = carry
            t, c = inputs
            t_vec = jnp.full((batch,), t, x.dtype)
            m0 = tweedie_x0(score_fn(x, t_vec), x, t_vec, sde)
            x = c[0] * x + c[1] * m0 + c[2] * m1 + c[3] * m2
            return (x, m0, m1), None

        zeros = jnp.zeros_like(x)
        (x, _, _), _ = jax.lax.scan(step, (x, zeros, zeros), (ts[:-1], coeffs))
        return x, {"nfe": self.steps}
