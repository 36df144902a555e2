"""DDPM ancestral sampling and DDIM, written once for every process.

Between grid times ``s < t`` the forward process satisfies
``x_t | x_s ~ N(alpha_{t|s} x_s, sigma_{t|s}^2 I)`` with ``alpha_{t|s} = alpha_t / alpha_s``
and ``sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``. With ``h = lambda_s - lambda_t > 0``
(the half log-SNR gained by the step) that variance is ``sigma_t^2 (1 - e^{-2h})``, which
is how it is computed here: the difference form cancels catastrophically for short steps.
The posterior ``q(x_s | x_t, x_0)`` then has

    mean = e^{-h} (sigma_s / sigma_t) x_t + alpha_s (1 - e^{-2h}) x_0
    std  = sigma_s sqrt(1 - e^{-2h})

and both samplers plug the network's ``x_0`` estimate (Tweedie) into it.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from diffjax.parametrization import convert
from diffjax.samplers._stepping import check_positive, noise_like, per_example, run_on_discrete_steps, run_on_grid
from diffjax.samplers.base import DISCRETE_SPACINGS, Sampler, static_sampler
from diffjax.sde import SDE
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["Ancestral", "DDIM"]


def _step_scales(sde: SDE, t, s):
    """``alpha_s``, ``sigma_s``, ``sigma_t``, ``h`` and ``1 - e^{-2h}`` for the step ``t -> s`` (scalars)."""
    alpha_s, sigma_s = sde.alpha_sigma(s)
    _, sigma_t = sde.alpha_sigma(t)
    h = sde.log_snr(s) - sde.log_snr(t)
    return alpha_s, sigma_s, sigma_t, h, -jnp.expm1(-2.0 * h)


def _eps_and_x0(score_fn, sde, x, t, clip_x0=0.0):
    tv = per_example(t, x)
    score = score_fn(x, tv)
    eps = convert(score, source="score", target="eps", x=x, t=tv, sde=sde)
    x0 = convert(score, source="score", target="x0", x=x, t=tv, sde=sde)
    if clip_x0:
        # diffusers' clip_sample: clip the x0 estimate only; eps stays the network's.
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
    return eps, x0


#: The Args text of the options both samplers share (appended to each one's docstring).
_OPTIONS_DOC = """
      spacing: time grid (see ``time_grid``), or one of diffusers' integer spacings
        ``"leading"``, ``"trailing"``, ``"linspace"`` on a :class:`~diffjax.sde.DiscreteVPSDE`
        (timestep ``k`` at ``t = (k + 1) / N``, each step jumping ``N // steps``
        timesteps as diffusers' DDIM / DDPM schedulers do; ``t_end`` is then unused:
        the chain ends at ``alpha = 1``, or at ``alpha_bar_0`` without ``final_alpha_one``).
      steps_offset: diffusers' ``steps_offset`` (``"leading"`` only).
      clip_x0: clip the ``x0`` estimate to ``[-clip_x0, clip_x0]`` (diffusers'
        ``clip_sample`` with ``clip_sample_range``); 0 = no clipping.
      final_alpha_one: diffusers' ``set_alpha_to_one`` (discrete spacings only).
    """


@dataclasses.dataclass(frozen=True)
class _PosteriorSampler(Sampler):
    """The grid and x0 options of :class:`Ancestral` and :class:`DDIM` (keyword-only, after each one's own fields)."""

    _: dataclasses.KW_ONLY
    spacing: str = "uniform"
    steps_offset: int = 0
    clip_x0: float = 0.0
    final_alpha_one: bool = True
    _discrete_ok = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__doc__ = cls.__doc__.rstrip() + _OPTIONS_DOC

    def validate(self):
        super().validate()
        check_positive(type(self).__name__, "clip_x0", self.clip_x0, allow_zero=True)
        if isinstance(self.steps_offset, bool) or not isinstance(self.steps_offset, int) or self.steps_offset < 0:
            raise ValueError(f"{type(self).__name__} needs an integer steps_offset >= 0, got {self.steps_offset!r}")
        if self.steps_offset and self.spacing != "leading":
            raise ValueError(f"steps_offset only applies to spacing='leading', got spacing={self.spacing!r}")

    def _run(self, step, sde, x, key, t_start, t_end):
        if self.spacing in DISCRETE_SPACINGS:
            return run_on_discrete_steps(step, sde, x, key=key, t_start=t_start, steps=self.steps, spacing=self.spacing,
                                         steps_offset=self.steps_offset, final_alpha_one=self.final_alpha_one)
        return run_on_grid(step, sde, x, key=key, t_start=t_start, t_end=t_end, steps=self.steps, spacing=self.spacing)


@static_sampler
class Ancestral(_PosteriorSampler):
    """DDPM ancestral sampling: draw ``x_s ~ q(x_s | x_t, x0_hat)`` with Tweedie's ``x0_hat``.

    On the grid ``t_n = (n + 1) / N`` of a :class:`~diffjax.sde.DiscreteVPSDE` with
    ``steps = N - 1`` this is DDPM's sampler with the posterior variance
    ``beta-tilde``. The last step returns the posterior mean (no noise).

    Args:
      steps: number of steps (``nfe = steps``).
    """

    steps: int

    def run(self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end):
        def step(x, t, s, key, is_last):
            alpha_s, sigma_s, sigma_t, h, one_minus = _step_scales(sde, t, s)
            _, x0 = _eps_and_x0(score_fn, sde, x, t, self.clip_x0)
            mean = jnp.exp(-h) * (sigma_s / sigma_t) * x + alpha_s * one_minus * x0
            std = sigma_s * jnp.sqrt(one_minus)
            return jnp.where(is_last, mean, mean + std * noise_like(key, x))

        return self._run(step, sde, x, key, t_start, t_end), {"nfe": self.steps}


@static_sampler
class DDIM(_PosteriorSampler):
    """DDIM: ``x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z``.

    ``c = eta * sigma_s sqrt(1 - e^{-2h})`` is ``eta`` times the ancestral posterior
    std, so ``eta = 0`` is the deterministic DDIM (a first-order solver of the
    probability-flow ODE) and ``eta = 1`` coincides with :class:`Ancestral`. The last
    step adds no noise.

    Args:
      steps: number of steps (``nfe = steps``).
      eta: stochasticity, ``>= 0``.
    """

    steps: int
    eta: float = 0.0

    def validate(self):
        super().validate()
        check_positive(type(self).__name__, "eta", self.eta, allow_zero=True)

    def run(self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end):
        def step(x, t, s, key, is_last):
            alpha_s, sigma_s, _, _, one_minus = _step_scales(sde, t, s)
            eps, x0 = _eps_and_x0(score_fn, sde, x, t, self.clip_x0)
            if self.eta == 0:
                return alpha_s * x0 + sigma_s * eps
            c = self.eta * sigma_s * jnp.sqrt(one_minus)
            # eta > 1 would ask for more noise than sigma_s holds: clip the eps share at 0.
            mean = alpha_s * x0 + jnp.sqrt(jnp.maximum(sigma_s**2 - c**2, 0.0)) * eps
            return jnp.where(is_last, mean, mean + c * noise_like(key, x))

        return self._run(step, sde, x, key, t_start, t_end), {"nfe": self.steps}
