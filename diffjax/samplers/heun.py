"""Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1).

In the scaled variables ``y = x / alpha`` and ``rho = sigma / alpha = e^{-lambda}`` the
probability-flow ODE of every process ``x_t = alpha x_0 + sigma eps`` is simply

    dy / d rho = eps_hat(x, t),

the form EDM integrates. Its Euler step is exactly deterministic DDIM; the Heun
step adds the trapezoidal correction, giving global order 2 in the step size.
"""

from __future__ import annotations

from diffjax.parametrization import convert
from diffjax.samplers._stepping import per_example, run_on_grid
from diffjax.samplers.base import Sampler, static_sampler
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["Heun"]


@static_sampler
class Heun(Sampler):
    """Deterministic Heun (trapezoidal predictor-corrector) steps of the probability flow.

    Every step, the last included, takes two score evaluations: ``t_end = sde.eps > 0``
    leaves ``sigma`` positive, so the final correction is well defined.

    Args:
      steps: number of steps (``nfe = 2 * steps``).
      spacing: time grid (see ``time_grid``).
    """

    steps: int
    spacing: str = "uniform"

    def run(self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end):
        def eps_at(x, t):
            tv = per_example(t, x)
            return convert(score_fn(x, tv), source="score", target="eps", x=x, t=tv, sde=sde)

        def step(x, t, s, key, is_last):
            alpha_t, sigma_t = sde.alpha_sigma(t)
            alpha_s, sigma_s = sde.alpha_sigma(s)
            d_rho = sigma_s / alpha_s - sigma_t / alpha_t
            y = x / alpha_t
            d1 = eps_at(x, t)
            d2 = eps_at(alpha_s * (y + d_rho * d1), s)
            return alpha_s * (y + 0.5 * d_rho * (d1 + d2))

        # Deterministic: the key only feeds the shared loop's per-step keys, unused here.
        x = run_on_grid(step, sde, x, key=key, t_start=t_start, t_end=t_end, steps=self.steps, spacing=self.spacing)
        return x, {"nfe": 2 * self.steps}
