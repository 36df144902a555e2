"""Forward diffusion processes (score_sde conventions, T = 1).

Every process is a frozen dataclass registered as a pytree. Continuous
hyper-parameters (``beta_min``, ...) are static fields as well: they define the
process, are hashable, and let ``jax.jit`` treat a process as a compile-time
constant (changing them recompiles, which is what one wants for a schedule).

All processes share one description of the marginal ``q(x_t | x_0)``::

    x_t = alpha(t) * x_0 + sigma(t) * noise,     noise ~ N(0, I)

``alpha_sigma(t)`` returns that pair; the half log-SNR ``lambda(t) =
log(alpha / sigma)`` and its inverse ``t_from_log_snr`` are what DDIM, DPM-Solver
and the conversions in :mod:`diffjax.parametrization` work with, so those are
written once for every process.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.typing import Array, PRNGKey, Shape

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "CosineVPSDE",
    "DiscreteVPSDE",
    "broadcast_to_x",
]


def broadcast_to_x(v: Array, x: Array) -> Array:
    """Reshape a per-example array of shape ``(batch,)`` to broadcast against ``x``."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _static_dataclass(cls):
    """Frozen dataclass whose fields are all static pytree metadata.

    The process then flattens to no leaves, hashes by value, and can be closed
    over or passed through ``jax.jit`` without becoming a tracer.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=[], meta_fields=fields)


class SDE:
    """Base class: ``dx = f(x, t) dt + g(t) dW`` on ``[eps, T]``.

    Subclasses implement :meth:`alpha_sigma`, :meth:`sde`, :meth:`prior_sample`,
    :meth:`prior_logp` and :meth:`t_from_log_snr`.
    """

    T: float = 1.0
    eps: float = 1e-3

    # -- marginals ---------------------------------------------------------
    def alpha_sigma(self, t: Array) -> tuple[Array, Array]:
        """Signal and noise scales of ``q(x_t | x_0)``, each shaped like ``t``."""
        raise NotImplementedError

    def marginal_prob(self, x0: Array, t: Array) -> tuple[Array, Array]:
        """Mean and std of ``q(x_t | x_0)``: ``x_t = mean + std * noise``.

        Args:
          x0: clean data, shape ``(batch, *dims)``.
          t: times, shape ``(batch,)``.

        Returns:
          ``mean`` shaped like ``x0`` and ``std`` shaped ``(batch,)``.
        """
        alpha, sigma = self.alpha_sigma(t)
        return broadcast_to_x(alpha, x0) * x0, sigma

    def log_snr(self, t: Array) -> Array:
        """Half log signal-to-noise ratio ``lambda(t) = log(alpha(t) / sigma(t))``."""
        alpha, sigma = self.alpha_sigma(t)
        return jnp.log(alpha) - jnp.log(sigma)

    def t_from_log_snr(self, lam: Array) -> Array:
        """Inverse of :meth:`log_snr` (``lambda`` is strictly decreasing in t)."""
        raise NotImplementedError

    # -- dynamics ------------------------------------------------------------
    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Drift ``f(x, t)`` (shaped like ``x``) and diffusion ``g(t)`` (shape ``(batch,)``)."""
        raise NotImplementedError

    def reverse_drift(self, x: Array, t: Array, score: Array) -> Array:
        """Drift of the reverse-time SDE, ``f - g^2 * score`` (to be integrated backwards in t)."""
        drift, diffusion = self.sde(x, t)
        return drift - broadcast_to_x(diffusion**2, x) * score

    def probability_flow_drift(self, x: Array, t: Array, score: Array) -> Array:
        """Drift of the probability-flow ODE, ``f - g^2 * score / 2``."""
        drift, diffusion = self.sde(x, t)
        return drift - 0.5 * broadcast_to_x(diffusion**2, x) * score

    def discretize(self, x: Array, t: Array, dt: float | Array) -> tuple[Array, Array]:
        """One forward step from ``t - dt`` to ``t``, as ``x_t = x + f + G z``: returns ``(f, G)``.

        The step is the exact Gaussian transition ``q(x_t | x_{t-dt})`` of the
        process: ``f = (alpha_t / alpha_{t-dt} - 1) x`` and
        ``G^2 = sigma_t^2 - (alpha_t / alpha_{t-dt})^2 sigma_{t-dt}^2``. That is
        score_sde's discretisation for both of its families: DDPM's
        ``sqrt(1 - beta_i)`` step for VP and ``G^2 = sigma_i^2 - sigma_{i-1}^2`` for
        VE. ``G^2`` is written through the log-SNR gap so short steps keep float32
        precision.

        Args:
          x: state at time ``t`` (score_sde evaluates ``f`` there), ``(batch, *dims)``.
          t: times ``(batch,)``.
          dt: step length, positive.

        Returns:
          ``f`` shaped like ``x`` and ``G`` of shape ``(batch,)``.
        """
        t = jnp.asarray(t)
        alpha_t, sigma_t = self.alpha_sigma(t)
        alpha_s, _ = self.alpha_sigma(t - dt)
        log_snr_gap = 2.0 * (self.log_snr(t) - self.log_snr(t - dt))  # <= 0
        f = broadcast_to_x(alpha_t / alpha_s - 1.0, x) * x
        return f, sigma_t * jnp.sqrt(-jnp.expm1(log_snr_gap))

    # -- prior ---------------------------------------------------------------
    def prior_sample(self, key: PRNGKey, shape: Shape, dtype=jnp.float32) -> Array:
        """A draw from the prior ``p_T`` (the process's marginal at ``T``)."""
        raise NotImplementedError

    def prior_logp(self, z: Array) -> Array:
        """Log-density of the prior, summed over all but the batch axis (nats)."""
        raise NotImplementedError


def _std_normal_logp(z: Array, scale: float | Array = 1.0) -> Array:
    dims = math.prod(z.shape[1:])
    sq = jnp.sum(jnp.reshape(z, (z.shape[0], -1)) ** 2, axis=-1)
    return -0.5 * dims * jnp.log(2 * jnp.pi * scale**2) - 0.5 * sq / scale**2


class _UnitPrior:
    """Prior N(0, I), shared by the variance-preserving family."""

    def prior_sample(self, key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype)

    def prior_logp(self, z):
        return _std_normal_logp(z)


class _LinearBeta:
    """``beta(t) = beta_min + t (beta_max - beta_min)``, shared by VP and sub-VP."""

    def __post_init__(self):
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(
                f"{type(self).__name__} needs 0 <= beta_min < beta_max, got "
                f"beta_min={self.beta_min}, beta_max={self.beta_max}"
            )
        _check_interval(self)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_mean_coeff(self, t):
        """``log alpha(t) = -int_0^t beta / 2``."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min


@_static_dataclass
class VPSDE(_LinearBeta, _UnitPrior, SDE):
    """Variance-preserving SDE (DDPM in continuous time), linear ``beta(t)``.

    ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW`` with
    ``beta(t) = beta_min + t (beta_max - beta_min)``. The defaults match the
    discrete DDPM schedule (betas 1e-4..0.02 over 1000 steps) as ``N -> inf``.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0
    eps: float = 1e-3

    def alpha_sigma(self, t):
        t = jnp.asarray(t)
        log_alpha = self._log_mean_coeff(t)
        return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

    def sde(self, x, t):
        beta = self.beta(jnp.asarray(t))
        return -0.5 * broadcast_to_x(beta, x) * x, jnp.sqrt(beta)

    def t_from_log_snr(self, lam):
        # log alpha = -softplus(-2 lam) / 2, then solve the quadratic in t.
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * jnp.asarray(lam))
        return _vp_t_from_log_alpha(log_alpha, self.beta_min, self.beta_max)


def _vp_t_from_log_alpha(log_alpha, beta_min, beta_max):
    delta = beta_max - beta_min
    # 0.25 delta t^2 + 0.5 beta_min t + log_alpha = 0, positive root; written in
    # the cancellation-free form 2c / (-b - sqrt(b^2 - 4ac)).
    b = 0.5 * beta_min
    disc = jnp.sqrt(b**2 - delta * log_alpha)
    return -2.0 * log_alpha / (b + disc)


@_static_dataclass
class SubVPSDE(_LinearBeta, _UnitPrior, SDE):
    """Sub-VP SDE (Song et al. 2021): VP drift, diffusion ``sqrt(beta (1 - e^{-2 int beta}))``.

    Its marginal std ``1 - alpha(t)^2`` is below the VP one at every t.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0
    eps: float = 1e-3

    def alpha_sigma(self, t):
        log_alpha = self._log_mean_coeff(jnp.asarray(t))
        return jnp.exp(log_alpha), -jnp.expm1(2.0 * log_alpha)

    def sde(self, x, t):
        t = jnp.asarray(t)
        beta = self.beta(t)
        discount = -jnp.expm1(-2 * self.beta_min * t - (self.beta_max - self.beta_min) * t**2)
        return -0.5 * broadcast_to_x(beta, x) * x, jnp.sqrt(beta * discount)

    def t_from_log_snr(self, lam):
        # alpha / (1 - alpha^2) = e^lam  =>  alpha = 2 / (e^-lam + sqrt(e^-2lam + 4)).
        e = jnp.exp(-jnp.asarray(lam))
        alpha = 2.0 / (e + jnp.sqrt(e**2 + 4.0))
        return _vp_t_from_log_alpha(jnp.log(alpha), self.beta_min, self.beta_max)


@_static_dataclass
class VESDE(SDE):
    """Variance-exploding SDE (SMLD / NCSN++): ``sigma(t) = sigma_min (sigma_max/sigma_min)^t``.

    ``dx = sigma(t) sqrt(2 log(sigma_max / sigma_min)) dW``; ``alpha = 1``. As in
    score_sde, the marginal std is ``sigma(t)`` itself, i.e. the data is taken to
    carry noise of scale ``sigma_min`` already.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0
    eps: float = 1e-5

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )
        _check_interval(self)

    def sigma(self, t):
        """Noise scale ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` (broadcasts over ``t``)."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** jnp.asarray(t)

    def alpha_sigma(self, t):
        sigma = self.sigma(t)
        return jnp.ones_like(sigma), sigma

    def sde(self, x, t):
        sigma = self.sigma(t)
        diffusion = sigma * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))
        return jnp.zeros_like(x), diffusion

    def t_from_log_snr(self, lam):
        return (-jnp.asarray(lam) - math.log(self.sigma_min)) / (
            math.log(self.sigma_max) - math.log(self.sigma_min)
        )

    def prior_sample(self, key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * self.sigma_max

    def prior_logp(self, z):
        return _std_normal_logp(z, self.sigma_max)


@_static_dataclass
class CosineVPSDE(_UnitPrior, SDE):
    """VP process with the cosine schedule of Nichol & Dhariwal (2021).

    ``alpha(t)^2 = cos^2(pi/2 (t+s)/(1+s)) / cos^2(pi/2 s/(1+s))``. ``beta(t)``
    diverges at t = 1, so ``T`` defaults to 0.9946, where ``log_snr ~ -5``: the
    prior N(0, I) is then as accurate as the linear schedule's at t = 1.
    """

    s: float = 0.008
    T: float = 0.9946
    eps: float = 1e-3

    def __post_init__(self):
        if not 0 < self.T < 1:
            raise ValueError(f"CosineVPSDE needs 0 < T < 1 (beta diverges at 1), got T={self.T}")
        _check_interval(self)

    def _angle(self, t):
        return 0.5 * jnp.pi * (jnp.asarray(t) + self.s) / (1 + self.s)

    def _log_alpha(self, t):
        return jnp.log(jnp.cos(self._angle(t))) - math.log(math.cos(0.5 * math.pi * self.s / (1 + self.s)))

    def alpha_sigma(self, t):
        log_alpha = self._log_alpha(t)
        return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

    def beta(self, t):
        """Noise rate ``beta(t) = -d log alpha(t)^2 / dt`` of the cosine schedule (broadcasts over ``t``)."""
        # beta = -d log alpha^2 / dt
        return jnp.pi / (1 + self.s) * jnp.tan(self._angle(t))

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * broadcast_to_x(beta, x) * x, jnp.sqrt(beta)

    def t_from_log_snr(self, lam):
        log_alpha = -0.5 * jnp.logaddexp(0.0, -2.0 * jnp.asarray(lam))
        c0 = math.log(math.cos(0.5 * math.pi * self.s / (1 + self.s)))
        angle = jnp.arccos(jnp.exp(log_alpha + c0))
        return 2.0 * (1 + self.s) * angle / jnp.pi - self.s


@_static_dataclass
class DiscreteVPSDE(_UnitPrior, SDE):
    """A discrete DDPM schedule exposed as the matching continuous VP process.

    Step ``n = 0..N-1`` of the discrete chain (``alpha_bar_n = prod_{i<=n} (1 - beta_i)``)
    sits at ``t_n = (n + 1) / N``; between grid points ``log alpha(t)`` is
    interpolated linearly (as in DPM-Solver's discrete schedule), so ``alpha(t_n)``
    is exactly ``sqrt(alpha_bar_n)``. A network trained on integer steps takes
    ``timestep(t) = t N - 1``. ``eps`` defaults to 1e-3, the first step for N = 1000.

    Args:
      num_steps: N (1000 in DDPM).
      beta_start, beta_end: the beta range (1e-4, 0.02 in DDPM).
      beta_schedule: ``"linear"`` (DDPM), ``"scaled_linear"`` (linear in
        ``sqrt(beta)``, latent diffusion) or ``"squaredcos_cap_v2"`` (the cosine
        ``alpha_bar`` of improved DDPM, betas capped at 0.999; ignores the range),
        named as diffusers' schedulers name them.
      float32_betas: compute the betas in float32 and round each ``alpha_bar_n``
        to float32, as diffusers' PyTorch schedulers do (for exact parity with
        their checkpoints); default float64 throughout.
    """

    num_steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    T: float = 1.0
    eps: float = 1e-3
    beta_schedule: str = "linear"
    float32_betas: bool = False

    def __post_init__(self):
        if self.num_steps < 2:
            raise ValueError(f"DiscreteVPSDE needs num_steps >= 2, got {self.num_steps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"DiscreteVPSDE needs beta_schedule in {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.beta_schedule != "squaredcos_cap_v2" and not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError(
                f"DiscreteVPSDE needs 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}"
            )
        _check_interval(self)

    @property
    def betas(self) -> np.ndarray:
        """The ``num_steps`` betas of ``beta_schedule`` (float64 values; float32-rounded if ``float32_betas``)."""
        n = self.num_steps
        if self.beta_schedule == "squaredcos_cap_v2":
            f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
            betas = np.array([min(1 - f((i + 1) / n) / f(i / n), 0.999) for i in range(n)], np.float64)
            return betas.astype(np.float32).astype(np.float64) if self.float32_betas else betas
        lo, hi = self.beta_start, self.beta_end
        if self.beta_schedule == "scaled_linear":
            lo, hi = math.sqrt(lo), math.sqrt(hi)
        ramp = _torch_linspace32(lo, hi, n) if self.float32_betas else np.linspace(lo, hi, n, dtype=np.float64)
        if self.beta_schedule == "scaled_linear":
            ramp = (ramp * ramp).astype(ramp.dtype)
        return np.asarray(ramp, np.float64)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """DDPM's ``alpha_bar_n = prod_{i <= n} (1 - beta_i)`` (float64; float32-rounded if ``float32_betas``)."""
        if self.float32_betas:
            # PyTorch: alphas = 1 - betas in float32; cumprod accumulates in double, rounds each output.
            alphas = (np.float32(1.0) - self.betas.astype(np.float32)).astype(np.float64)
            return np.cumprod(alphas).astype(np.float32).astype(np.float64)
        return np.cumprod(1.0 - self.betas)

    def _grid(self):
        t = np.arange(1, self.num_steps + 1, dtype=np.float64) / self.num_steps
        log_alpha = 0.5 * np.log(self.alphas_cumprod)
        # Extend to t = 0 with log alpha = 0 so times in [0, 1/N) interpolate too.
        return np.concatenate([[0.0], t]), np.concatenate([[0.0], log_alpha])

    def _log_alpha(self, t):
        ts, log_alpha = self._grid()
        t = jnp.asarray(t)
        return jnp.interp(t, jnp.asarray(ts, t.dtype), jnp.asarray(log_alpha, t.dtype))

    def alpha_sigma(self, t):
        log_alpha = self._log_alpha(t)
        return jnp.exp(log_alpha), jnp.sqrt(-jnp.expm1(2.0 * log_alpha))

    def beta(self, t):
        """Piecewise-constant ``beta(t) = -2 d log alpha / dt``."""
        ts, log_alpha = self._grid()
        slopes = -2.0 * np.diff(log_alpha) / np.diff(ts)
        t = jnp.asarray(t)
        idx = jnp.clip(jnp.ceil(t * self.num_steps).astype(jnp.int32) - 1, 0, self.num_steps - 1)
        return jnp.asarray(slopes, t.dtype)[idx]

    def sde(self, x, t):
        beta = self.beta(t)
        return -0.5 * broadcast_to_x(beta, x) * x, jnp.sqrt(beta)

    def t_from_log_snr(self, lam):
        # log alpha is piecewise linear in t, so invert through it exactly.
        ts, log_alpha = self._grid()
        lam = jnp.asarray(lam)
        target = -0.5 * jnp.logaddexp(0.0, -2.0 * lam)
        # jnp.interp needs increasing abscissae; log alpha decreases in t.
        return jnp.interp(-target, jnp.asarray(-log_alpha, lam.dtype), jnp.asarray(ts, lam.dtype))

    def timestep(self, t: Array) -> Array:
        """Continuous step index ``t N - 1`` for a network trained on ``n = 0..N-1``."""
        return jnp.asarray(t) * self.num_steps - 1.0


BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


def _torch_linspace32(start: float, end: float, n: int) -> np.ndarray:
    """``torch.linspace(start, end, n, dtype=float32)`` on CPU, bit for bit: float32 step, the first half
    counted up from ``start`` and the second half down from ``end``."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float32((end32 - start32) / np.float32(n - 1))
    i = np.arange(n)
    up = start32 + step * i.astype(np.float32)
    down = end32 - step * (n - 1 - i).astype(np.float32)
    return np.where(i < n // 2, up, down).astype(np.float32)


def _check_interval(sde) -> None:
    if not 0 < sde.eps < sde.T:
        raise ValueError(f"{type(sde).__name__} needs 0 < eps < T, got eps={sde.eps}, T={sde.T}")
