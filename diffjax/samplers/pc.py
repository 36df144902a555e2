"""Reverse-SDE samplers of score_sde: Euler-Maruyama, reverse diffusion, predictor-corrector.

All three integrate the reverse-time SDE ``dx = [f - g^2 score] dt + g dW-bar``
from ``t_start`` down to ``t_end`` through the process's own ``sde.sde`` /
``sde.discretize``, so they work unchanged for every process in
:mod:`diffjax.sde`. Following score_sde, the last step adds no noise: the output
is the mean of the final update.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diffjax.samplers._stepping import check_count, check_positive, noise_like, per_example, run_on_grid
from diffjax.samplers.base import Sampler, static_sampler
from diffjax.sde import SDE, VESDE, broadcast_to_x
from diffjax.typing import Array, PRNGKey, ScoreFn

__all__ = ["EulerMaruyama", "ReverseDiffusion", "PredictorCorrector", "langevin_correct", "STEP_NORMS"]

STEP_NORMS = ("batch", "example")


@static_sampler
class EulerMaruyama(Sampler):
    """Euler-Maruyama on the reverse SDE; one score evaluation per step.

    Args:
      steps: number of steps (``nfe = steps``).
      spacing: time grid, ``"uniform"``, ``"quadratic"`` or ``"logsnr"`` (see ``time_grid``).
    """

    steps: int
    spacing: str = "uniform"

    def run(self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end):
        def step(x, t, s, key, is_last):
            dt = s - t  # negative: integrating backwards
            t = per_example(t, x)
            drift = sde.reverse_drift(x, t, score_fn(x, t))
            _, diffusion = sde.sde(x, t)
            mean = x + drift * dt
            noisy = mean + broadcast_to_x(diffusion * jnp.sqrt(-dt), x) * noise_like(key, x)
            return jnp.where(is_last, mean, noisy)

        x = run_on_grid(step, sde, x, key=key, t_start=t_start, t_end=t_end, steps=self.steps, spacing=self.spacing)
        return x, {"nfe": self.steps}


def _reverse_diffusion_step(score_fn, sde, x, t, s, key, is_last):
    """score_sde's reverse-diffusion predictor from ``t`` down to ``s``.

    The forward update over ``[s, t]`` is ``x_t = x_s + f + G z`` (``sde.discretize``);
    the reverse one mirrors it with ``f_rev = f - G^2 score`` and the same ``G``.
    """
    dt = t - s
    t = per_example(t, x)
    f, g = sde.discretize(x, t, dt)
    g = broadcast_to_x(g, x)
    mean = x - (f - g**2 * score_fn(x, t))
    return jnp.where(is_last, mean, mean + g * noise_like(key, x))


@static_sampler
class ReverseDiffusion(Sampler):
    """Reverse-diffusion predictor: the forward discretisation run backwards.

    Args:
      steps: number of steps (``nfe = steps``).
      spacing: time grid (see ``time_grid``).
    """

    steps: int
    spacing: str = "uniform"

    def run(self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end):
        def step(x, t, s, key, is_last):
            return _reverse_diffusion_step(score_fn, sde, x, t, s, key, is_last)

        x = run_on_grid(step, sde, x, key=key, t_start=t_start, t_end=t_end, steps=self.steps, spacing=self.spacing)
        return x, {"nfe": self.steps}


def langevin_correct(
    score_fn: ScoreFn,
    x: Array,
    t: Array,
    *,
    key: PRNGKey,
    snr: float,
    n_steps: int,
    alpha: Array,
    step_norm: str = "batch",
) -> Array:
    """``n_steps`` Langevin MCMC steps at fixed ``t`` with score_sde's step-size rule.

    Each step is ``x <- x + eps * score + sqrt(2 eps) z`` with
    ``eps = 2 alpha (snr ||z|| / ||score||)^2``.

    ``step_norm="batch"`` (score_sde's rule, the default) averages the two norms
    over the batch, so the step is one number for the whole batch and the chain
    leaves ``p_t`` invariant up to the usual Langevin discretisation error. Under
    a sharded batch the average is a global mean, so the result does not depend
    on the number of devices. ``step_norm="example"`` takes the norms per
    example, which decouples the examples but makes the step depend on
    ``||score(x)||``: the chain's invariant law is then ``p_t`` reweighted by that
    norm, a bias of order ``1 / dimension`` (tiny for images, large in a few
    dimensions).

    Args:
      score_fn: the score.
      x: current state, ``(batch, *dims)``.
      t: times ``(batch,)``.
      key: randomness; step ``j`` uses ``fold_in(key, j)``.
      snr: target signal-to-noise ratio of the update.
      n_steps: number of Langevin steps (``n_steps`` score evaluations).
      alpha: per-example step scale ``(batch,)``.
      step_norm: ``"batch"`` or ``"example"``, see above.

    Returns:
      The corrected state.
    """
    if step_norm not in STEP_NORMS:
        raise ValueError(f"step_norm must be one of {STEP_NORMS}, got {step_norm!r}")

    def norm(v):
        per_example_norm = jnp.sqrt(jnp.sum(jnp.reshape(v, (v.shape[0], -1)) ** 2, axis=-1))
        if step_norm == "batch":
            return jnp.broadcast_to(jnp.mean(per_example_norm), per_example_norm.shape)
        return per_example_norm

    def body(j, x):
        grad = score_fn(x, t)
        z = noise_like(jax.random.fold_in(key, j), x)
        # The floor only guards an exactly-zero score (x sitting on a mode).
        grad_norm = jnp.maximum(norm(grad), jnp.finfo(x.dtype).tiny)
        step_size = broadcast_to_x(2.0 * alpha * (snr * norm(z) / grad_norm) ** 2, x)
        return x + step_size * grad + jnp.sqrt(2.0 * step_size) * z

    return jax.lax.fori_loop(0, n_steps, body, x)


@static_sampler
class PredictorCorrector(Sampler):
    """Langevin corrector then reverse-diffusion predictor at every grid time (score_sde's PC).

    The corrector's step scale ``alpha_i`` is score_sde's ``1 - beta_i`` for VP
    processes and ``1`` for VE. Both are the squared signal decay of one grid
    step, ``alpha_i = (alpha(t_i) / alpha(t_{i+1}))^2``: for a discrete DDPM chain
    that ratio is exactly ``alpha_bar_n / alpha_bar_{n-1} = 1 - beta_n``, and VE has
    ``alpha = 1`` throughout. The ratio form therefore covers every process here
    (sub-VP, cosine, discrete) and any time grid without a per-process branch.

    Args:
      steps: number of predictor steps.
      snr: the corrector's signal-to-noise ratio (0.16 for CIFAR-10 VE in score_sde).
      corrector_steps: Langevin steps per grid time (``nfe = steps * (1 + corrector_steps)``).
      spacing: time grid (see ``time_grid``).
      step_norm: ``"batch"`` (score_sde, unbiased) or ``"example"`` (examples
        independent of each other, biased in low dimension); see :func:`langevin_correct`.
      discrete_sigmas: score_sde's own VE loop (its ``pc_sampler`` with ``VESDE.discretize``,
        which diffusers' ``ScoreSdeVeScheduler`` / ``ScoreSdeVePipeline`` copy): ``steps``
        times ``linspace(t_start, t_end, steps)``, every one evaluated (the last one too),
        and the predictor steps between the discrete noise levels
        ``sigma_k = sigma_min (sigma_max / sigma_min)^(k / (steps - 1))``,
        ``k = floor(t (steps - 1) / T)``, from ``sigma_k`` to ``sigma_(k-1)`` (to 0 after
        ``k = 0``), while the network sees the continuous ``sigma(t)``. ``VESDE`` only;
        ``spacing`` is then unused. Default False: ``steps`` intervals of the grid, the
        predictor between the continuous ``sigma`` of their ends.
    """

    steps: int
    snr: float = 0.16
    corrector_steps: int = 1
    spacing: str = "uniform"
    step_norm: str = "batch"
    discrete_sigmas: bool = False

    def validate(self):
        super().validate()
        name = type(self).__name__
        check_positive(name, "snr", self.snr)
        check_count(name, "corrector_steps", self.corrector_steps)
        if self.step_norm not in STEP_NORMS:
            raise ValueError(f"{name} needs step_norm in {STEP_NORMS}, got step_norm={self.step_norm!r}")

    def run(self, score_fn: ScoreFn, sde: SDE, x: Array, *, key: PRNGKey, t_start, t_end):
        if self.discrete_sigmas:
            return self._run_discrete_sigmas(score_fn, sde, x, key=key, t_start=t_start, t_end=t_end)

        def step(x, t, s, key, is_last):
            alpha_t, _ = sde.alpha_sigma(per_example(t, x))
            alpha_s, _ = sde.alpha_sigma(per_example(s, x))
            x = langevin_correct(
                score_fn,
                x,
                per_example(t, x),
                key=jax.random.fold_in(key, 0),
                snr=self.snr,
                n_steps=self.corrector_steps,
                alpha=(alpha_t / alpha_s) ** 2,
                step_norm=self.step_norm,
            )
            return _reverse_diffusion_step(score_fn, sde, x, t, s, jax.random.fold_in(key, 1), is_last)

        x = run_on_grid(step, sde, x, key=key, t_start=t_start, t_end=t_end, steps=self.steps, spacing=self.spacing)
        return x, {"nfe": self.steps * (1 + self.corrector_steps)}

    def _run_discrete_sigmas(self, score_fn, sde, x, *, key, t_start, t_end):
        """score_sde's VE predictor-corrector loop (see ``discrete_sigmas``); step ``i`` uses ``fold_in(key, i)``."""
        if not isinstance(sde, VESDE):
            raise ValueError(f"PredictorCorrector(discrete_sigmas=True) is score_sde's VE loop; got a {type(sde).__name__}")
        n = self.steps
        ts = jnp.linspace(jnp.asarray(t_start, x.dtype), jnp.asarray(t_end, x.dtype), n)
        sigmas = jnp.exp(jnp.linspace(jnp.log(sde.sigma_min), jnp.log(sde.sigma_max), n)).astype(x.dtype)
        ones = jnp.ones(x.shape[:1], x.dtype)

        def body(x, i):
            t, k = per_example(ts[i], x), jax.random.fold_in(key, i)
            x = langevin_correct(score_fn, x, t, key=jax.random.fold_in(k, 0), snr=self.snr,
                                 n_steps=self.corrector_steps, alpha=ones, step_norm=self.step_norm)
            # score_sde truncates t (N - 1) / T; the margin keeps float32 rounding of the grid from
            # dropping a level (t_i (N - 1) is an integer up to i * eps).
            level = jnp.clip(jnp.floor(ts[i] * (n - 1) / sde.T + 1e-3).astype(jnp.int32), 0, n - 1)
            below = jnp.where(level == 0, 0.0, sigmas[jnp.maximum(level - 1, 0)])
            g2 = sigmas[level] ** 2 - below**2
            mean = x + g2 * score_fn(x, t)
            noisy = mean + jnp.sqrt(g2) * noise_like(jax.random.fold_in(k, 1), x)
            return jnp.where(i == n - 1, mean, noisy), None

        x, _ = jax.lax.scan(body, x, jnp.arange(n))
        return x, {"nfe": n * (1 + self.corrector_steps)}
