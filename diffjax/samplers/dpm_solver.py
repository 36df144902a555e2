"""Multistep DPM-Solver++ (Lu et al., 2022): orders 1, 2 (2M) and 3 (3M), ODE or SDE.

DPM-Solver++ integrates the probability-flow ODE written in the half log-SNR
``lambda = log(alpha / sigma)`` with the *data prediction* ``x0(x, t)``::

    x_t = (sigma_t / sigma_s) x_s + alpha_t * int_{lambda_s}^{lambda_t} e^{-lambda} x0(lambda) d lambda

The linear part is exact; only ``x0`` is approximated, by a polynomial in
``lambda`` through the last ``order`` predictions (multistep: one new score
evaluation per step). Everything is expressed through ``sde.alpha_sigma`` and
``sde.log_snr``, so one implementation serves VP, sub-VP, VE, cosine and
discrete schedules.

With ``eta > 0`` the same multistep scheme integrates the reverse SDE instead
(SDE-DPM-Solver++ of the same paper; ``eta = 1`` is the reverse SDE itself,
values between interpolate). With ``h = lambda_t - lambda_s`` and
``h_eta = (1 + eta) h`` the first-order step is::

    x_t = (sigma_t / sigma_s) e^{-eta h} x_s + alpha_t (1 - e^{-h_eta}) x0 + sigma_t sqrt(1 - e^{-2 eta h}) z

which at ``eta = 1`` is exactly the DDPM posterior ``q(x_t | x_s, x0)`` (ancestral
sampling), and the higher orders add the same divided-difference corrections
with ``h_eta`` in place of ``h``. Fresh noise at every step lets the sampler
correct part of the model's error, as ancestral sampling does, at the cost of
a key per step.

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
from diffjax.samplers._stepping import noise_like
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


def dpm_solver_coefficients(sde: SDE, ts: Array, orders: np.ndarray, eta: float = 0.0) -> Array:
    """Update coefficients ``(c_x, c_0, c_1, c_2, c_z)`` for every step of a grid.

    Step ``i`` goes from ``ts[i]`` to ``ts[i + 1]`` and uses the predictions
    ``m_0 = x0(ts[i])``, ``m_1 = x0(ts[i - 1])``, ``m_2 = x0(ts[i - 2])`` and,
    when ``eta > 0``, fresh standard normal noise ``z`` (``c_z = 0`` for the ODE).

    Args:
      sde: the forward process.
      ts: decreasing times, shape ``(steps + 1,)``.
      orders: per-step order from :func:`step_orders`, shape ``(steps,)``.
      eta: 0 for the probability-flow ODE, 1 for the reverse SDE.

    Returns:
      Array of shape ``(steps, 5)``.
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

    h_eta = (1.0 + eta) * h
    phi1 = jnp.expm1(-h_eta)  # e^{-h_eta} - 1
    phi2 = phi1 / h_eta + 1.0
    phi3 = phi2 / h_eta - 0.5
    a = alpha[1:]
    c_x = sigma[1:] / sigma[:-1] * jnp.exp(-eta * h)
    # The ODE draws no noise; written as zeros (not sqrt(0)) so the coefficients
    # stay differentiable in the grid (benchmarks/fit_schedule.py).
    c_z = sigma[1:] * jnp.sqrt(-jnp.expm1(-2.0 * eta * h)) if eta > 0 else jnp.zeros_like(h)

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
    return jnp.concatenate([col(c_x), coeffs, col(c_z)], axis=1)


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
      eta: 0 (default) integrates the probability-flow ODE (deterministic);
        1 the reverse SDE (SDE-DPM-Solver++; first order = ancestral DDPM);
        values in between interpolate. Stochastic runs draw ``fold_in(key, i)``
        at step ``i``.
    """

    steps: int
    order: int = 2
    spacing: Spacing = "logsnr"
    lower_order_final: bool = True
    eta: float = 0.0

    def validate(self) -> None:
        super().validate()
        if isinstance(self.order, bool) or self.order not in ORDERS:
            raise ValueError(f"DPMSolverPP order must be one of {ORDERS}, got order={self.order!r}")
        if not isinstance(self.lower_order_final, bool):
            raise ValueError(
                f"DPMSolverPP lower_order_final must be a bool, got {self.lower_order_final!r}"
            )
        eta_ok = isinstance(self.eta, (int, float)) and not isinstance(self.eta, bool)
        if not eta_ok or not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"DPMSolverPP eta must be a number in [0, 1] (0 = ODE, 1 = SDE), got eta={self.eta!r}")

    def run(
        self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start: Array, t_end: Array
    ) -> tuple[Array, dict]:
        """Integrate the probability flow from ``t_start`` to ``t_end``.

        Args:
          score_fn: ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.
          sde: the forward process.
          x: the state at ``t_start``, shape ``(batch, *dims)``.
          key: step ``i`` draws its noise from ``fold_in(key, i)`` when ``eta > 0``;
            unused by the ODE.
          t_start, t_end: scalar times, ``t_end < t_start``.

        Returns:
          ``(x, info)`` with ``info["nfe"] == steps``.
        """
        ts = time_grid(sde, t_start, t_end, self.steps, self.spacing, dtype=x.dtype, fitted_for=self._fitted_family)
        return self.run_on_times(score_fn, sde, x, ts, key=key), {"nfe": self.steps}

    @property
    def _fitted_family(self) -> str:
        return f"dpmpp{self.order}"

    def run_on_times(self, score_fn: ScoreFn, sde: SDE, x: Array, ts: Array, *, key: PRNGKey) -> Array:
        """The same integration on an explicit decreasing grid ``ts`` of shape ``(steps + 1,)``.

        Differentiable in ``ts``: ``benchmarks/fit_schedule.py`` fits grids through it.

        Args:
          score_fn: ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.
          sde: the forward process.
          x: the state at ``ts[0]``, shape ``(batch, *dims)``.
          ts: decreasing times in ``[sde.eps, sde.T]``.
          key: noise key when ``eta > 0``.

        Returns:
          The state at ``ts[-1]``.
        """
        orders = step_orders(self.steps, self.order, self.lower_order_final)
        coeffs = dpm_solver_coefficients(sde, ts, orders, float(self.eta)).astype(x.dtype)
        # Like every stochastic sampler here, return the noise-free mean of the last step.
        coeffs = coeffs.at[-1, 4].set(0.0)
        batch = x.shape[0]
        stochastic = self.eta > 0

        def step(carry, inputs):
            x, m1, m2 = carry
            i, t, c = inputs
            t_vec = jnp.full((batch,), t, x.dtype)
            m0 = tweedie_x0(score_fn(x, t_vec), x, t_vec, sde)
            x = c[0] * x + c[1] * m0 + c[2] * m1 + c[3] * m2
            if stochastic:  # static: the ODE's loop holds no random draws at all
                x = x + c[4] * noise_like(jax.random.fold_in(key, i), x)
            return (x, m0, m1), None

        zeros = jnp.zeros_like(x)
        (x, _, _), _ = jax.lax.scan(step, (x, zeros, zeros), (jnp.arange(self.steps), ts[:-1], coeffs))
        return x
