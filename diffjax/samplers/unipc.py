"""UniPC (Zhao et al., 2023): a unified predictor-corrector on multistep DPM-Solver++.

Like DPM-Solver++ (:mod:`diffjax.samplers.dpm_solver`) it integrates the
probability-flow ODE in the half log-SNR ``lambda`` with the data prediction
``x0``: with ``h = lambda_t - lambda_s`` and ``phi_1 = e^{-h} - 1``, the
first-order step is ``x_t = (sigma_t / sigma_s) x_s - alpha_t phi_1 m_0``
(deterministic DDIM), and order ``p`` adds ``-alpha_t B(h) sum_j rho_j D_j``
with the scaled differences ``D_j = (m_j - m_0) / r_j`` of the predictions at
the earlier points, ``r_j = (lambda_{s_j} - lambda_s) / h``.

* **UniP-p** (predictor) uses the ``p - 1`` earlier predictions; ``p = 2``
  with ``B(h) = e^{-h} - 1`` is exactly DPM-Solver++(2M).
* **UniC-p** (corrector) then evaluates the model at the predicted ``x_t`` and
  re-does the step with that new prediction as one more node (``r = 1``),
  raising the order to ``p + 1``. The evaluation is the one the next step needs
  anyway, so the corrector costs no extra score evaluation: ``nfe == steps``.
  The last step is not corrected (its evaluation would be an extra one).

The weights ``rho`` solve the small Vandermonde system
``sum_j rho_j r_j^(k-1) = k! h phi_{k+1}(-h) / B(h)``, k = 1..p (the "B(h)"
variants: ``"bh1"`` uses ``B(h) = -h``, ``"bh2"`` uses ``B(h) = e^{-h} - 1``;
the predictor of order 2 uses ``rho = 1/2`` and the corrector of order 1
``rho = 1/2``, as in the paper). All coefficients depend only on the time
grid, so they are computed for every step before the loop and the
``lax.scan`` body is one score call and two fused linear combinations.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from diffjax.parametrization import tweedie_x0
from diffjax.samplers.base import Sampler, Spacing, static_sampler, time_grid
from diffjax.samplers.dpm_solver import ORDERS, step_orders
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["UniPC", "unipc_coefficients", "VARIANTS"]

VARIANTS = ("bh1", "bh2")


def _phi(z: Array, k: int) -> Array:
    """``phi_k(z) = sum_n z^n / (n + k)!`` (``phi_0 = e^z``), stable for small ``z``.

    The recursion ``phi_k = (phi_{k-1} - 1/(k-1)!) / z`` cancels badly for small
    ``|z|``; below 1 the truncated series (error < 1e-13) is used instead.
    """
    direct = jnp.expm1(z) / jnp.where(z == 0, 1.0, z)  # phi_1
    for j in range(2, k + 1):
        direct = (direct - 1.0 / math.factorial(j - 1)) / jnp.where(z == 0, 1.0, z)
    series = jnp.zeros_like(z)
    for n in reversed(range(14)):  # Horner
        series = series * z + 1.0 / math.factorial(n + k)
    return jnp.where(jnp.abs(z) < 1.0, series, direct)


def _vandermonde_solve(nodes: list[Array], rhs: list[Array]) -> list[Array]:
    """Solve ``sum_j w_j nodes_j^k = rhs_k`` (k = 0..n-1) for n <= 3, elementwise.

    Lagrange form, so no LAPACK call enters the compiled program.
    """
    n = len(nodes)
    out = []
    for j in range(n):
        others = [nodes[m] for m in range(n) if m != j]
        den = 1.0
        for o in others:
            den = den * (nodes[j] - o)
        if n == 1:
            num = rhs[0]
        elif n == 2:
            num = rhs[1] - others[0] * rhs[0]
        else:
            a, b = others
            num = rhs[2] - (a + b) * rhs[1] + a * b * rhs[0]
        out.append(num / den)
    return out


def unipc_coefficients(sde: SDE, ts: Array, orders, variant: str = "bh2") -> tuple[Array, Array]:
    """Predictor and corrector coefficients for every step of a grid.

    Step ``i`` goes from ``ts[i]`` to ``ts[i + 1]`` from the state ``x`` at
    ``ts[i]`` and the predictions ``m_0, m_1, m_2`` at ``ts[i]``, ``ts[i - 1]``,
    ``ts[i - 2]``; the corrector also uses ``m_new``, the prediction at the
    predicted state at ``ts[i + 1]``.

    Args:
      sde: the forward process.
      ts: decreasing times, shape ``(steps + 1,)``.
      orders: per-step order (1-3) from :func:`step_orders`, shape ``(steps,)``.
      variant: ``"bh1"`` or ``"bh2"`` (the choice of ``B(h)``).

    Returns:
      ``(pred, corr)``: ``pred`` of shape ``(steps, 4)`` over ``(x, m_0, m_1, m_2)``
      and ``corr`` of shape ``(steps, 5)`` over ``(x, m_0, m_1, m_2, m_new)``.

    Raises:
      ValueError: on an unknown ``variant``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"UniPC variant must be one of {VARIANTS}, got {variant!r}")
    orders = jnp.asarray(orders)
    steps = orders.shape[0]
    alpha, sigma = sde.alpha_sigma(ts)
    lam = sde.log_snr(ts)
    i = jnp.arange(steps)
    lam_cur, lam_next = lam[:-1], lam[1:]
    h = lam_next - lam_cur
    # Nodes of the earlier predictions; placeholders (-1, -2) where a row does not use them.
    rk1 = jnp.where(orders >= 2, (lam[jnp.maximum(i - 1, 0)] - lam_cur) / h, -1.0)
    rk2 = jnp.where(orders >= 3, (lam[jnp.maximum(i - 2, 0)] - lam_cur) / h, -2.0)

    hh = -h
    phi1 = jnp.expm1(hh)
    bh = hh if variant == "bh1" else phi1
    # b_k = k! * hh * phi_{k+1}(hh) / B(h): the right-hand side of the order conditions.
    b = [math.factorial(k) * hh * _phi(hh, k + 1) / bh for k in (1, 2, 3)]
    a = alpha[1:]
    c_x = sigma[1:] / sigma[:-1]
    zero = jnp.zeros_like(h)
    half = jnp.full_like(h, 0.5)

    # Predictor weights on (D_1, D_2).
    p3 = _vandermonde_solve([rk1, rk2], b[:2])
    rho_p = [
        jnp.where(orders == 2, half, jnp.where(orders == 3, p3[0], zero)),
        jnp.where(orders == 3, p3[1], zero),
    ]
    # Corrector weights on (D_1, D_2, D_new), D_new at the node r = 1.
    one = jnp.ones_like(h)
    c2 = _vandermonde_solve([rk1, one], b[:2])
    c3 = _vandermonde_solve([rk1, rk2, one], b)
    rho_c = [
        jnp.where(orders == 2, c2[0], jnp.where(orders == 3, c3[0], zero)),
        jnp.where(orders == 3, c3[1], zero),
        jnp.where(orders == 1, half, jnp.where(orders == 2, c2[1], c3[2])),
    ]

    def combination(rho, with_new):
        # x_ - a B sum_j rho_j (m_j - m_0) / r_j  [- a B rho_new (m_new - m_0)]
        scale = -a * bh
        w1, w2 = scale * rho[0] / rk1, scale * rho[1] / rk2
        w0 = -a * phi1 - w1 - w2
        cols = [c_x, w0, w1, w2]
        if with_new:
            w_new = scale * rho[2]
            cols = [c_x, w0 - w_new, w1, w2, w_new]
        return jnp.stack(cols, axis=1)

    return combination(rho_p, False), combination(rho_c, True)


@static_sampler
class UniPC(Sampler):
    """UniPC: multistep DPM-Solver++ predictor + the UniC corrector, one score call per step.

    Args:
      steps: number of steps (= number of score evaluations), ``>= 1``.
      order: predictor order 1, 2 (default) or 3 (the corrector raises each
        step's order by one). The first steps warm up with lower order.
      spacing: the time grid (see :func:`time_grid`); ``"fitted"`` (default)
        reads the schedule fitted for UniPC of this order on the exact-score
        problem (orders 2 and 3; order 1 needs another spacing).
      lower_order_final: when ``steps < 15``, use order ``<= steps - i`` at step ``i``.
      variant: ``"bh2"`` (``B(h) = e^{-h} - 1``, the paper's choice for few
        steps) or ``"bh1"`` (``B(h) = -h``).

    Raises:
      ValueError: on bad hyper-parameters.
    """

    steps: int
    order: int = 2
    spacing: Spacing = "fitted"
    lower_order_final: bool = True
    variant: str = "bh2"

    @property
    def _fitted_family(self) -> str:
        return f"unipc{self.order}"

    def validate(self) -> None:
        # The order first: the base check of spacing="fitted" reads the family it names.
        if isinstance(self.order, bool) or self.order not in ORDERS:
            raise ValueError(f"UniPC order must be one of {ORDERS}, got order={self.order!r}")
        super().validate()
        if not isinstance(self.lower_order_final, bool):
            raise ValueError(f"UniPC lower_order_final must be a bool, got {self.lower_order_final!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"UniPC variant must be one of {VARIANTS}, got variant={self.variant!r}")

    def run(
        self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start: Array, t_end: Array
    ) -> tuple[Array, dict]:
        """Integrate the probability flow from ``t_start`` to ``t_end`` (deterministic).

        Args:
          score_fn: ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.
          sde: the forward process.
          x: the state at ``t_start``, shape ``(batch, *dims)``.
          key: unused (the method is deterministic).
          t_start, t_end: scalar times, ``t_end < t_start``.

        Returns:
          ``(x, info)`` with ``info["nfe"] == steps``.
        """
        del key
        ts = time_grid(sde, t_start, t_end, self.steps, self.spacing, dtype=x.dtype, fitted_for=self._fitted_family)
        return self.run_on_times(score_fn, sde, x, ts), {"nfe": self.steps}

    def run_on_times(self, score_fn: ScoreFn, sde: SDE, x: Array, ts: Array, *, key: PRNGKey | None = None) -> Array:
        """The same integration on an explicit decreasing grid ``ts`` of shape ``(steps + 1,)``.

        Differentiable in ``ts``: ``benchmarks/fit_schedule.py`` fits grids through it.

        Args:
          score_fn: ``score_fn(x, t)``, ``t`` of shape ``(batch,)``.
          sde: the forward process.
          x: the state at ``ts[0]``, shape ``(batch, *dims)``.
          ts: decreasing times in ``[sde.eps, sde.T]``.
          key: unused (accepted so every ``run_on_times`` takes the same arguments).

        Returns:
          The state at ``ts[-1]``.
        """
        del key
        orders = step_orders(self.steps, self.order, self.lower_order_final)
        pred, corr = unipc_coefficients(sde, ts, orders, self.variant)
        pred = pred.astype(x.dtype)
        # Row i of `corr_in` corrects the state at ts[i] (made by step i - 1); row 0 keeps x_T.
        corr_in = jnp.concatenate([jnp.zeros((1, 5), x.dtype), corr[:-1].astype(x.dtype)], axis=0)
        first = (jnp.arange(self.steps) == 0).astype(x.dtype)
        batch = x.shape[0]

        def step(carry, inputs):
            x_pred, x_prev, m1, m2, m3 = carry
            t, c, p, keep = inputs
            t_vec = jnp.full((batch,), t, x.dtype)
            m0 = tweedie_x0(score_fn(x_pred, t_vec), x_pred, t_vec, sde)
            # UniC: redo the previous step with m0 as its new node (x_T itself at i = 0).
            x_cur = keep * x_pred + c[0] * x_prev + c[1] * m1 + c[2] * m2 + c[3] * m3 + c[4] * m0
            x_next = p[0] * x_cur + p[1] * m0 + p[2] * m1 + p[3] * m2
            return (x_next, x_cur, m0, m1, m2), None

        zeros = jnp.zeros_like(x)
        carry = (x, zeros, zeros, zeros, zeros)
        (x, *_), _ = jax.lax.scan(step, carry, (ts[:-1], corr_in, pred, first))
        return x
