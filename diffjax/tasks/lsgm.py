"""LSGM: a score-based prior on a VAE's latent space, trained end to end (Vahdat, Kreis and Kautz, 2021).

The generative model draws a latent ``z`` from a score-based prior under a VP
process and decodes it with ``p(x | z)``. Its objective is a variational bound
on the negative log-likelihood::

    -log p(x) <= E_q[-log p(x | z)] - H(q(z | x)) + CE(q(z | x) || p(z))

whose last term, the cross-entropy with the diffusion prior, is estimated by
denoising score matching. Everything here is pure JAX on arrays and callables.

Exact form used here (derived for a VP process, ``alpha^2 + sigma^2 = 1``).
The encoder gives ``q(z_0 | x) = N(mu, s^2)``; the latent the decoder reads is
``z_eps``, ``z_0`` diffused to the process's first time ``eps``, so
``q(z_eps | x) = N(alpha_eps mu, alpha_eps^2 s^2 + sigma_eps^2)`` is Gaussian and
the prior over ``z_eps`` is the diffusion model's marginal at ``eps`` (what
:func:`diffjax.log_likelihood` evaluates). For this pair the cross-entropy is::

    CE(q_eps || p_eps) = int_eps^T g(t)^2 / 2 E || grad log q(z_t | z_0) - s(z_t, t) ||^2 dt
                         + D/2 log(sigma_eps^2 / sigma_T^2) + CE(q_T || N(0, I))

exactly when ``s`` is the true score of the prior's marginals and ``p_T = N(0, I)``,
and an upper bound on the reverse-SDE model's cross-entropy for any ``s`` (the
paper's ``D/2 log(2 pi e sigma_0^2)`` is this constant with ``q_T ~ N(0, I)``).
With the eps-parametrisation ``s = -eps_hat / sigma`` the integrand is
``beta / (2 sigma^2) |n - eps_hat|^2``.

Variance reduction: drawing ``t`` with density proportional to the likelihood
weight ``beta / sigma^2`` (uniform in ``log(sigma^2 / alpha^2)``) makes the
importance weight a constant, ``(l_T - l_eps) / 2`` with ``l = log(sigma^2 / alpha^2)``.

Mixed score: ``eps_hat = sigma (1 - a) z_t + a eps'_net`` with a per-channel
``a = sigmoid(logit)``; ``a = 0`` is exactly the standard Normal prior's score.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from diffjax.likelihood import log_likelihood
from diffjax.sde import SDE, VPSDE
from diffjax.typing import Array, PRNGKey

__all__ = [
    "PRIORS",
    "PRIOR_WEIGHTINGS",
    "discretized_logistic_logp",
    "gaussian_entropy",
    "diffuse_posterior",
    "normal_cross_entropy",
    "mixed_eps",
    "mixed_score",
    "sample_t_likelihood",
    "sample_t_reweighted",
    "cross_entropy_constant",
    "dsm_cross_entropy",
    "lsgm_terms",
    "latent_log_prob",
    "nelbo_ode",
]

PRIORS = ("sde", "normal")
PRIOR_WEIGHTINGS = ("likelihood", "reweighted")

EpsFn = Callable[[Array, Array], Array]


def _sum_but_batch(x: Array) -> Array:
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


def _check_vp(sde: SDE) -> None:
    if not isinstance(sde, VPSDE):
        raise ValueError(f"LSGM's cross-entropy is derived for a VPSDE (alpha^2 + sigma^2 = 1, linear beta), "
                         f"got {type(sde).__name__}")


# -- decoder likelihood -----------------------------------------------------------


def discretized_logistic_logp(x: Array, mean: Array, log_scale: Array, num_bins: int = 256) -> Array:
    """Per-dimension log-probability of 8-bit values under a discretised logistic.

    The values ``k = 0 .. num_bins - 1`` sit at ``x = 2 k / (num_bins - 1) - 1`` in
    ``[-1, 1]``; bin ``k`` covers ``x +- 1 / (num_bins - 1)``, the two end bins
    extend to ``-inf`` and ``+inf``, so the probabilities of the ``num_bins``
    values sum to one and ``-sum(logp) / (D ln 2)`` is an honest bits/dim.

    Args:
      x: values on that grid (e.g. a batch in ``[-1, 1]`` from :mod:`diffjax.data`).
      mean: location of the logistic, broadcastable with ``x``.
      log_scale: log of its scale, broadcastable with ``x``.
      num_bins: number of levels (256 for 8-bit pixels).

    Returns:
      ``log P(x)`` per dimension, shaped like ``x``, in nats.

    Raises:
      ValueError: ``num_bins < 2``.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}")
    half = 1.0 / (num_bins - 1)
    centred = x - mean
    inv_scale = jnp.exp(-log_scale)
    upper = inv_scale * (centred + half)
    lower = inv_scale * (centred - half)
    log_cdf_upper = jax.nn.log_sigmoid(upper)  # log F(upper edge)
    log_sf_lower = jax.nn.log_sigmoid(-lower)  # log (1 - F(lower edge))
    # log(F(u) - F(l)) for an interior bin, computed on the side where it is stable:
    # F(u) - F(l) = sigmoid(u) - sigmoid(l) = exp(log_sig(u)) (1 - exp(log_sig(l) - log_sig(u))).
    log_sig_l = jax.nn.log_sigmoid(lower)
    log_mass_left = log_cdf_upper + jnp.log(-jnp.expm1(jnp.minimum(log_sig_l - log_cdf_upper, -1e-12)))
    # Mirrored: 1 - F(l) - (1 - F(u)), stable for bins on the right of the mean.
    log_sf_upper = jax.nn.log_sigmoid(-upper)
    log_mass_right = log_sf_lower + jnp.log(-jnp.expm1(jnp.minimum(log_sf_upper - log_sf_lower, -1e-12)))
    interior = jnp.where(centred < 0, log_mass_left, log_mass_right)
    edge = 1.0 - half / 2
    return jnp.where(x < -edge, log_cdf_upper, jnp.where(x > edge, log_sf_lower, interior))


# -- Gaussian pieces ----------------------------------------------------------------


def gaussian_entropy(std: Array) -> Array:
    """Entropy in nats of a diagonal Gaussian with standard deviations ``std`` ``(batch, *dims)``.

    Returns:
      ``(batch,)``: ``sum log std + D/2 log(2 pi e)``.
    """
    d = math.prod(std.shape[1:])
    return _sum_but_batch(jnp.log(std)) + 0.5 * d * math.log(2 * math.pi * math.e)


def diffuse_posterior(sde: SDE, mean: Array, std: Array, t: float | None = None) -> tuple[Array, Array]:
    """``q(z_t | x)`` for ``q(z_0 | x) = N(mean, std^2)`` diffused to time ``t`` (default ``sde.eps``).

    Returns:
      ``(alpha_t mean, sqrt(alpha_t^2 std^2 + sigma_t^2))``.
    """
    alpha, sigma = sde.alpha_sigma(jnp.asarray(sde.eps if t is None else t, mean.dtype))
    return alpha * mean, jnp.sqrt(alpha**2 * std**2 + sigma**2)


def normal_cross_entropy(mean: Array, std: Array) -> Array:
    """``CE(N(mean, std^2) || N(0, I))`` in nats, per example (``(batch, *dims)`` -> ``(batch,)``)."""
    d = math.prod(mean.shape[1:])
    return 0.5 * d * math.log(2 * math.pi) + 0.5 * _sum_but_batch(mean**2 + std**2)


# -- mixed score ----------------------------------------------------------------------


def mixed_eps(net_eps: Array, z_t: Array, sigma: Array, mixing_logit: Array) -> Array:
    """LSGM's mixed noise prediction ``sigma (1 - a) z_t + a net_eps``, ``a = sigmoid(mixing_logit)``.

    ``sigma z_t`` is the noise a standard Normal prior implies (its marginals
    stay ``N(0, I)`` under a VP process), so the network only models the
    departure from it; ``a`` is learnt per latent channel.

    Args:
      net_eps: the network's output, ``(batch, ..., C)``.
      z_t: the noisy latent, same shape.
      sigma: noise scale per example, ``(batch,)``.
      mixing_logit: ``(C,)`` logits of the mixing coefficient.

    Returns:
      The mixed eps prediction, shaped like ``z_t``.
    """
    a = jax.nn.sigmoid(mixing_logit)
    s = sigma.reshape((-1,) + (1,) * (z_t.ndim - 1))
    return s * (1.0 - a) * z_t + a * net_eps


def mixed_score(net_eps: Array, z_t: Array, sigma: Array, mixing_logit: Array) -> Array:
    """The score of :func:`mixed_eps`: ``-(1 - a) z_t - a net_eps / sigma``.

    Written without dividing ``sigma z_t`` by ``sigma`` so that ``a = 0`` gives
    the standard Normal score ``-z_t`` exactly.
    """
    a = jax.nn.sigmoid(mixing_logit)
    s = sigma.reshape((-1,) + (1,) * (z_t.ndim - 1))
    return -(1.0 - a) * z_t - a * net_eps / s


# -- time sampling ----------------------------------------------------------------------


def _ell(sde: SDE, t):
    """``log(sigma^2 / alpha^2)``, increasing in ``t``; its derivative is ``beta / sigma^2`` (VP)."""
    return -2.0 * sde.log_snr(jnp.asarray(t, jnp.float32))


def sample_t_likelihood(sde: SDE, key: PRNGKey, n: int) -> tuple[Array, Array]:
    """Times with density proportional to the likelihood weight ``beta / sigma^2`` on ``[eps, T]``.

    Args:
      sde: a VP process.
      key: random key.
      n: number of times.

    Returns:
      ``(t, w)``: ``t`` of shape ``(n,)`` and the importance weight ``w`` (same
      for all): ``E_t[w |n - eps_hat|^2]`` is ``int beta / (2 sigma^2) E|n - eps_hat|^2 dt``.

    Raises:
      ValueError: a process that is not a VPSDE.
    """
    _check_vp(sde)
    lo, hi = _ell(sde, sde.eps), _ell(sde, sde.T)
    ell = lo + (hi - lo) * jax.random.uniform(key, (n,))
    t = jnp.clip(sde.t_from_log_snr(-0.5 * ell), sde.eps, sde.T)
    return t, jnp.full((n,), 0.5 * (hi - lo))


def sample_t_reweighted(sde: SDE, key: PRNGKey, n: int) -> tuple[Array, Array]:
    """Times with density proportional to ``g^2 = beta(t)`` (the paper's reweighted objective).

    Returns:
      ``(t, w)`` with ``E_t[w |n - eps_hat|^2] = int beta / 2 E|n - eps_hat|^2 dt``.

    Raises:
      ValueError: a process that is not a VPSDE.
    """
    _check_vp(sde)
    b0, b1 = sde.beta_min, sde.beta_max

    def cum(t):  # int_0^t beta
        return b0 * t + 0.5 * (b1 - b0) * t**2

    lo, hi = cum(sde.eps), cum(sde.T)
    target = lo + (hi - lo) * jax.random.uniform(key, (n,))
    a = 0.5 * (b1 - b0)
    if a > 0:
        t = (-b0 + jnp.sqrt(b0**2 + 4 * a * target)) / (2 * a)
    else:
        t = target / b0
    return jnp.clip(t, sde.eps, sde.T), jnp.full((n,), 0.5 * (hi - lo))


# -- the cross-entropy with the diffusion prior --------------------------------------------


def cross_entropy_constant(sde: SDE, mean: Array, std: Array) -> Array:
    """``D/2 log(sigma_eps^2 / sigma_T^2) + CE(q_T || N(0, I))``, per example.

    The part of the cross-entropy that does not involve the score (see the
    module docstring); ``mean``, ``std`` are ``q(z_0 | x)``'s.
    """
    _check_vp(sde)
    d = math.prod(mean.shape[1:])
    _, sigma_eps = sde.alpha_sigma(jnp.asarray(sde.eps, jnp.float32))
    _, sigma_T = sde.alpha_sigma(jnp.asarray(sde.T, jnp.float32))
    mean_T, std_T = diffuse_posterior(sde, mean, std, sde.T)
    return d * (jnp.log(sigma_eps) - jnp.log(sigma_T)) + normal_cross_entropy(mean_T, std_T)


def dsm_cross_entropy(eps_fn: EpsFn, sde: SDE, z0: Array, key: PRNGKey,
                      weighting: Literal["likelihood", "reweighted"] = "likelihood") -> tuple[Array, dict]:
    """One-sample estimate of the score-matching integral of the cross-entropy, per example.

    ``int_eps^T beta / (2 sigma^2) E |n - eps_fn(z_t, t)|^2 dt`` (``"likelihood"``,
    unbiased for the integral) or its reweighted form with ``beta / 2`` in place
    of ``beta / (2 sigma^2)`` (``"reweighted"``, a training objective for the
    score model only), each with importance-sampled ``t``.

    Args:
      eps_fn: ``eps_fn(z_t, t)`` -> predicted noise, batched; ``t`` is ``(batch,)``.
      sde: a VP process.
      z0: samples of ``q(z_0 | x)``, ``(batch, *dims)``.
      key: draws ``t`` and the noise.
      weighting: ``"likelihood"`` or ``"reweighted"``.

    Returns:
      ``(value, info)``: ``value`` of shape ``(batch,)``; ``info`` holds ``t``.

    Raises:
      ValueError: an unknown weighting or a non-VP process.
    """
    if weighting not in PRIOR_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {PRIOR_WEIGHTINGS}, got {weighting!r}")
    t_key, n_key = jax.random.split(key)
    draw = sample_t_likelihood if weighting == "likelihood" else sample_t_reweighted
    t, w = draw(sde, t_key, z0.shape[0])
    noise = jax.random.normal(n_key, z0.shape, z0.dtype)
    alpha, sigma = sde.alpha_sigma(t)
    shape = (-1,) + (1,) * (z0.ndim - 1)
    z_t = alpha.reshape(shape) * z0 + sigma.reshape(shape) * noise
    err = _sum_but_batch((noise - eps_fn(z_t, t)) ** 2)
    return w * err, {"t": t}


# -- the objective ------------------------------------------------------------------------


def lsgm_terms(
    encode_fn: Callable[[Array], tuple[Array, Array]],
    decode_logp_fn: Callable[[Array, Array], Array],
    eps_fn: EpsFn | None,
    sde: SDE,
    x: Array,
    key: PRNGKey,
    *,
    prior: Literal["sde", "normal"] = "sde",
) -> dict:
    """Per-example terms of the LSGM bound (nats); their sum ``nelbo`` is the VAE's loss.

    Args:
      encode_fn: ``x -> (mean, std)`` of ``q(z_0 | x)``, ``(batch, *latent)``.
      decode_logp_fn: ``(x, z) -> log p(x | z)`` per example, ``(batch,)``.
      eps_fn: the prior's (mixed) noise prediction ``eps_fn(z_t, t)``; unused
        with ``prior="normal"``.
      sde: the latent VP process.
      x: data batch.
      key: draws ``z_0``, its diffusion to ``eps``, and the score-matching sample.
      prior: ``"sde"`` (the score-based prior) or ``"normal"`` (a VAE with a
        standard Normal prior on ``z_eps``, the closed-form cross-entropy).

    Returns:
      ``{"reconstruction": -log p(x | z_eps), "entropy": H(q(z_eps | x)),
      "cross_entropy": CE estimate, "nelbo": reconstruction - entropy +
      cross_entropy, "z0": the latent sample}``, each ``(batch,)`` but ``z0``.

    Raises:
      ValueError: an unknown prior, or ``prior="sde"`` without ``eps_fn``.
    """
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if prior == "sde" and eps_fn is None:
        raise ValueError("prior='sde' needs eps_fn, the latent score model's noise prediction")
    _check_vp(sde)
    z_key, e_key, ce_key = jax.random.split(key, 3)
    mean, std = encode_fn(x)
    z0 = mean + std * jax.random.normal(z_key, mean.shape, mean.dtype)
    alpha_eps, sigma_eps = sde.alpha_sigma(jnp.asarray(sde.eps, mean.dtype))
    z_eps = alpha_eps * z0 + sigma_eps * jax.random.normal(e_key, mean.shape, mean.dtype)
    mean_eps, std_eps = diffuse_posterior(sde, mean, std)
    recon = -decode_logp_fn(x, z_eps)
    entropy = gaussian_entropy(std_eps)
    if prior == "normal":
        ce = normal_cross_entropy(mean_eps, std_eps)
    else:
        dsm, _ = dsm_cross_entropy(eps_fn, sde, z0, ce_key)
        ce = dsm + cross_entropy_constant(sde, mean, std)
    return {"reconstruction": recon, "entropy": entropy, "cross_entropy": ce,
            "nelbo": recon - entropy + ce, "z0": z0, "z_eps": z_eps}


# -- evaluation: the bound with the probability-flow likelihood of the latent ---------------


def latent_log_prob(score_fn, sde: SDE, z: Array, *, key: PRNGKey, exact_divergence: bool = False,
                    prior: Literal["sde", "normal"] = "sde", **ode_kwargs) -> Array:
    """``log p(z)`` of latents at time ``sde.eps``: the probability-flow ODE's (``"sde"``) or ``N(0, I)``'s.

    Args:
      score_fn: the prior's score ``score_fn(z, t)`` (e.g. from :func:`mixed_score`).
      sde: the latent process.
      z: latents ``(batch, *dims)``.
      key: Hutchinson probes (unused with ``exact_divergence``).
      exact_divergence: exact Jacobian trace (one jvp per latent dimension).
      prior: ``"normal"`` returns the standard Normal log-density, no ODE.
      **ode_kwargs: passed to :func:`diffjax.log_likelihood` (``rtol``, ``atol``, ...).

    Returns:
      ``(batch,)`` log-densities in nats.
    """
    if prior == "normal":
        d = math.prod(z.shape[1:])
        return -0.5 * _sum_but_batch(z**2) - 0.5 * d * math.log(2 * math.pi)
    logp, _ = log_likelihood(score_fn, sde, z, key=key, exact_divergence=exact_divergence, **ode_kwargs)
    return logp


def nelbo_ode(encode_fn, decode_logp_fn, score_fn, sde: SDE, x: Array, key: PRNGKey, *,
              prior: Literal["sde", "normal"] = "sde", exact_divergence: bool = False,
              **ode_kwargs) -> dict:
    """One-sample bound on ``-log p(x)`` with the ODE likelihood of the latent, per example (nats).

    ``-log p(x | z) - log p_ODE(z) + log q(z | x)`` with ``z ~ q(z_eps | x)``:
    its expectation bounds the negative log-likelihood of the model that draws
    ``z`` from the probability-flow ODE and decodes it.

    Args:
      encode_fn, decode_logp_fn: as in :func:`lsgm_terms`.
      score_fn: the prior's score ``score_fn(z, t)`` (ignored with ``prior="normal"``).
      sde: the latent process.
      x: data batch.
      key: draws the latent and the Hutchinson probe.
      prior: ``"sde"`` or ``"normal"``.
      exact_divergence: exact trace in the ODE likelihood.
      **ode_kwargs: passed to :func:`diffjax.log_likelihood`.

    Returns:
      ``{"nelbo", "reconstruction", "log_q", "log_prior"}``, each ``(batch,)``.
    """
    z_key, p_key = jax.random.split(key)
    mean, std = encode_fn(x)
    mean_eps, std_eps = diffuse_posterior(sde, mean, std)
    noise = jax.random.normal(z_key, mean.shape, mean.dtype)
    z = mean_eps + std_eps * noise
    d = math.prod(z.shape[1:])
    log_q = -0.5 * _sum_but_batch(noise**2) - _sum_but_batch(jnp.log(std_eps)) - 0.5 * d * math.log(2 * math.pi)
    recon = -decode_logp_fn(x, z)
    log_prior = latent_log_prob(score_fn, sde, z, key=p_key, exact_divergence=exact_divergence, prior=prior,
                                **ode_kwargs)
    return {"nelbo": recon + log_q - log_prior, "reconstruction": recon, "log_q": log_q, "log_prior": log_prior}
