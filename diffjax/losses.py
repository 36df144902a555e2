"""Denoising score-matching losses, written for one example and vmapped.

Two families:

* ``kind="continuous"`` (score_sde): ``t ~ U[eps, T]`` (or importance-sampled),
  the network's output is turned into a score and compared with the score of
  the perturbation kernel. In eps-space the residual is ``sigma * s + z``;
  ``weighting="uniform"`` is ``lambda(t) = sigma(t)^2`` (the usual eps loss),
  ``weighting="likelihood"`` is ``lambda(t) = g(t)^2``, whose integral bounds
  the negative log-likelihood (Song et al., 2021).
* ``kind="discrete"`` (DDPM): ``t`` on the grid ``(n + 1) / N`` and the loss is
  taken in the network's own parametrization: eps, x0 or v, with L2 or L1.

The network enters as ``apply_fn(x_t, c) -> prediction``, a batched callable
(parameters, labels, conditioning images and the dropout key bound in a closure
by the caller) with ``c = network_time_input(sde, t, time_input)``, the same
scalar :func:`diffjax.parametrization.model_score_fn` feeds it at sampling time.
"""

from __future__ import annotations

from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.parametrization import PREDICTION_KINDS, TIME_INPUTS, convert, network_time_input
from diffjax.sde import SDE, DiscreteVPSDE, broadcast_to_x
from diffjax.typing import Array, PRNGKey

__all__ = [
    "make_loss_fn",
    "gaussian_kl",
    "make_autoencoder_loss_fn",
    "make_classifier_loss_fn",
    "make_conditional_loss_fn",
    "check_conditional_method",
    "condition_process",
    "CONDITIONAL_METHODS",
    "importance_sampler",
    "LOSS_KINDS",
    "NORMS",
    "WEIGHTINGS",
    "T_SAMPLINGS",
]

LOSS_KINDS = ("continuous", "discrete")
NORMS = ("l2", "l1")
WEIGHTINGS = ("uniform", "likelihood")
T_SAMPLINGS = ("uniform", "importance", "sr3")

LossFn = Callable[..., tuple[Array, dict]]

# Conditional score estimators (Batzolis et al.); see diffjax.tasks.conditional.
CONDITIONAL_METHODS = ("cde", "cdiffe", "cmde")
ConditionalMethod = Literal["cde", "cdiffe", "cmde"]


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")


def importance_sampler(sde: SDE, grid_size: int = 4096) -> tuple[Callable[[PRNGKey, int], Array], float]:
    """Sampler of ``t`` with density proportional to ``g(t)^2 / sigma(t)^2`` on ``[eps, T]``.

    That density makes the likelihood-weighted eps-loss ``g^2/sigma^2 ||eps_hat - z||^2``
    a constant-weight loss, which removes most of its variance (Song et al., 2021).
    The inverse CDF is tabulated once on a log-spaced grid (the density behaves
    like ``1/t`` near 0), so this works for every process.

    Returns:
      ``(sample_t, weight)``: ``sample_t(key, n)`` draws ``n`` times, and
      ``weight = Z / (T - eps)`` is the constant that turns the importance-sampled
      loss into an unbiased estimate of the uniform-``t`` objective.
    """
    with jax.ensure_compile_time_eval():
        ts = jnp.geomspace(sde.eps, sde.T, grid_size)
        _, g = sde.sde(jnp.zeros((grid_size, 1)), ts)
        _, sigma = sde.alpha_sigma(ts)
        density = np.asarray(g**2 / sigma**2, np.float64)
    ts = np.asarray(ts, np.float64)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(ts))])
    total = float(cdf[-1])
    cdf = cdf / total

    def sample_t(key: PRNGKey, n: int, dtype=jnp.float32) -> Array:
        u = jax.random.uniform(key, (n,), dtype)
        return jnp.interp(u, jnp.asarray(cdf, dtype), jnp.asarray(ts, dtype))

    return sample_t, total / (sde.T - sde.eps)


def _per_example_loss(residual: Array, weight: Array, loss_mask: Array, norm: str) -> Array:
    """One example: mean of ``|residual|^p`` over the counted pixels, times ``weight``."""
    err = residual**2 if norm == "l2" else jnp.abs(residual)
    counted = jnp.broadcast_to(loss_mask, err.shape)
    return weight * jnp.sum(err * counted) / jnp.maximum(jnp.sum(counted), 1.0)


def make_loss_fn(
    sde: SDE,
    *,
    prediction: Literal["eps", "x0", "v", "score"] = "eps",
    time_input: str = "t",
    kind: Literal["continuous", "discrete"] = "continuous",
    norm: Literal["l2", "l1"] = "l2",
    weighting: Literal["uniform", "likelihood"] = "uniform",
    t_sampling: Literal["uniform", "importance"] = "uniform",
    num_steps: int = 1000,
) -> LossFn:
    """Build ``loss_fn(apply_fn, x0, key, *, mask=None) -> (loss, aux)``.

    Args:
      sde: the forward process.
      prediction: what the network outputs (``"eps"``, ``"x0"``, ``"v"``, ``"score"``).
      time_input: the conditioning scalar the network takes (see
        :func:`diffjax.parametrization.network_time_input`).
      kind: ``"continuous"`` (score matching in eps-space, any prediction) or
        ``"discrete"`` (regression onto the prediction's own target on a grid of
        ``num_steps`` times).
      norm: ``"l2"`` or ``"l1"`` on the residual.
      weighting: ``"uniform"`` or ``"likelihood"`` (continuous only).
      t_sampling: ``"uniform"``; ``"importance"`` (continuous, likelihood weighting
        only); or ``"sr3"`` (discrete only): SR3's noise levels, ``gamma = alpha(t)``
        uniform between two adjacent grid levels, for networks conditioned on gamma.
      num_steps: grid size N for ``kind="discrete"``: step n sits at
        ``t = eps + (T - eps) n / (N - 1)`` (``= (n + 1) / N`` for N = 1000, eps = 1e-3).
        A :class:`~diffjax.sde.DiscreteVPSDE` always uses its own N steps at ``(n + 1) / N``.

    Returns:
      ``loss_fn(apply_fn, x0, key, *, mask=None)``: ``apply_fn(x_t, c)`` is the
      batched network, ``x0`` the clean batch, ``key`` a PRNG key, ``mask`` an
      optional array broadcastable to ``x0`` with 1 where the loss counts (e.g.
      the hole for inpainting). Returns the batch-mean loss and
      ``aux = {"per_example": (B,), "t": (B,)}``.
    """
    loss_at_times = _make_loss_at_times(
        sde, prediction=prediction, time_input=time_input, kind=kind, norm=norm, weighting=weighting,
        t_sampling=t_sampling, num_steps=num_steps,
    )

    def loss_fn(apply_fn, x0: Array, key: PRNGKey, *, mask: Array | None = None):
        net = lambda x_t, t: apply_fn(x_t, network_time_input(sde, t, time_input))
        return loss_at_times(net, x0, key, mask=mask)

    return loss_fn


def _make_loss_at_times(
    sde: SDE,
    *,
    prediction: str,
    time_input: str,
    kind: str,
    norm: str,
    weighting: str,
    t_sampling: str,
    num_steps: int,
) -> LossFn:
    """:func:`make_loss_fn`'s checks and loss with the network called as ``net(x_t, t)`` (raw times)."""
    _choice("prediction kind", prediction, PREDICTION_KINDS)
    _choice("time input", time_input, TIME_INPUTS)
    _choice("loss kind", kind, LOSS_KINDS)
    _choice("norm", norm, NORMS)
    _choice("weighting", weighting, WEIGHTINGS)
    _choice("t_sampling", t_sampling, T_SAMPLINGS)
    if kind == "discrete" and (weighting != "uniform" or t_sampling == "importance"):
        raise ValueError(
            "kind='discrete' takes weighting='uniform' and t_sampling 'uniform' or 'sr3', got "
            f"weighting={weighting!r}, t_sampling={t_sampling!r}; use kind='continuous' for those"
        )
    if t_sampling == "sr3" and kind != "discrete":
        raise ValueError("t_sampling='sr3' draws noise levels between grid steps; it needs kind='discrete'")
    if t_sampling == "sr3" and float(sde.alpha_sigma(jnp.float32(sde.T))[0]) == 1.0:
        raise ValueError(
            f"t_sampling='sr3' needs a process whose signal scale alpha(t) decays; {type(sde).__name__} "
            "keeps alpha = 1 (use a VP-type process)"
        )
    if t_sampling == "importance" and weighting != "likelihood":
        raise ValueError(
            "t_sampling='importance' samples t proportional to the likelihood weight; it needs "
            f"weighting='likelihood', got weighting={weighting!r}"
        )
    if kind == "discrete" and (not isinstance(num_steps, int) or num_steps < 1):
        raise ValueError(f"num_steps must be a positive integer, got {num_steps!r}")
    if kind == "continuous" and prediction == "score" and norm == "l1":
        raise ValueError("an L1 score-matching loss has no density interpretation; use norm='l2'")

    importance = importance_sampler(sde) if t_sampling == "importance" else None
    # A discrete chain trains on its own steps; other processes on N points spanning [eps, T].
    grid_steps = sde.num_steps if isinstance(sde, DiscreteVPSDE) else num_steps

    def grid_time(steps: Array, dtype) -> Array:
        if isinstance(sde, DiscreteVPSDE):
            return (steps + 1).astype(dtype) / grid_steps  # the chain's own grid
        return sde.eps + (sde.T - sde.eps) * steps.astype(dtype) / max(grid_steps - 1, 1)

    def sr3_time(key: PRNGKey, steps: Array, t: Array, dtype) -> Array:
        """SR3's noise levels: gamma = alpha(t) uniform between two adjacent grid levels.

        Step 0's upper neighbour is t = 0 (gamma = 1). The network sees gamma
        itself (``time_input="alpha"``), so any schedule and step count work at
        sampling time.
        """
        t_prev = jnp.where(steps > 0, grid_time(steps - 1, dtype), 0.0)
        gamma_hi = sde.alpha_sigma(t_prev)[0]
        gamma_lo = sde.alpha_sigma(t)[0]
        gamma = gamma_lo + (gamma_hi - gamma_lo) * jax.random.uniform(key, t.shape, dtype)
        # gamma = 1 would mean sigma = 0; keep t away from 0.
        gamma = jnp.minimum(gamma, sde.alpha_sigma(jnp.asarray(1e-6 * sde.T, dtype))[0])
        return sde.t_from_log_snr(jnp.log(gamma) - 0.5 * jnp.log1p(-(gamma**2)))

    def draw_t(key: PRNGKey, n: int, dtype) -> tuple[Array, Array]:
        """Times and the per-example weight that makes the estimate unbiased."""
        if kind == "discrete":
            step_key, level_key = jax.random.split(key)
            steps = jax.random.randint(step_key, (n,), 0, grid_steps)
            t = grid_time(steps, dtype)
            if t_sampling == "sr3":
                t = sr3_time(level_key, steps, t, dtype)
            return t, jnp.ones((n,), dtype)
        if importance is not None:
            sample_t, weight = importance
            return sample_t(key, n, dtype), jnp.full((n,), weight, dtype)
        t = jax.random.uniform(key, (n,), dtype, sde.eps, sde.T)
        if weighting == "likelihood":
            _, g = sde.sde(jnp.zeros((n, 1), dtype), t)
            _, sigma = sde.alpha_sigma(t)
            return t, (g / sigma) ** 2
        return t, jnp.ones((n,), dtype)

    def loss_at_times(net, x0: Array, key: PRNGKey, *, mask: Array | None = None):
        if not jnp.issubdtype(x0.dtype, jnp.floating):
            raise ValueError(f"x0 must be floating point in the model's range, got dtype {x0.dtype}")
        n = x0.shape[0]
        t_key, noise_key = jax.random.split(key)
        t, weight = draw_t(t_key, n, x0.dtype)
        noise = jax.random.normal(noise_key, x0.shape, x0.dtype)
        mean, std = sde.marginal_prob(x0, t)
        x_t = mean + broadcast_to_x(std, x0) * noise
        pred = net(x_t, t).astype(x0.dtype)
        if pred.shape != x0.shape:
            raise ValueError(f"apply_fn returned shape {pred.shape}, expected the data's shape {x0.shape}")

        if kind == "continuous":
            # sigma * score + z: zero for the exact score of the perturbation kernel.
            residual = convert(pred, source=prediction, target="eps", x=x_t, t=t, sde=sde) - noise
        else:
            target = convert(noise, source="eps", target=prediction, x=x_t, t=t, sde=sde)
            residual = pred - target

        loss_mask = jnp.ones_like(x0) if mask is None else jnp.broadcast_to(jnp.asarray(mask, x0.dtype), x0.shape)
        per_example = jax.vmap(_per_example_loss, in_axes=(0, 0, 0, None))(residual, weight, loss_mask, norm)
        return jnp.mean(per_example), {"per_example": per_example, "t": t}

    return loss_at_times


def check_conditional_method(method, sde: SDE, sde_y: SDE | None) -> None:
    """Validate an estimator name and its condition process.

    Args:
      method: ``"cde"``, ``"cdiffe"`` or ``"cmde"``.
      sde: the process of ``x``.
      sde_y: the process of ``y``; required for ``"cmde"`` and refused otherwise.

    Raises:
      ValueError: an unknown method, ``cmde`` without ``sde_y``, ``sde_y`` with
        another method, or an ``sde_y`` whose time interval ends elsewhere than ``sde``'s.
    """
    if method not in CONDITIONAL_METHODS:
        raise ValueError(f"unknown conditional estimator method={method!r}; expected one of {CONDITIONAL_METHODS}")
    if method == "cmde":
        if sde_y is None:
            raise ValueError(
                "method='cmde' diffuses y by its own process: pass sde_y (e.g. dj.VESDE(sigma_min=0.01, "
                "sigma_max=1.0), the paper's slow process), got sde_y=None"
            )
        if not isinstance(sde_y, SDE):
            raise ValueError(f"sde_y must be a diffjax process (dj.VPSDE, dj.VESDE, ...), got {type(sde_y).__name__}")
        if abs(float(sde_y.T) - float(sde.T)) > 1e-9:
            raise ValueError(f"sde_y must share the time interval's end T={sde.T} of sde, got sde_y.T={sde_y.T}")
    elif sde_y is not None:
        raise ValueError(
            f"sde_y is the condition's own process of method='cmde'; method={method!r} "
            + ("keeps y clean" if method == "cde" else "diffuses y by sde itself")
            + f", so pass sde_y=None (got {type(sde_y).__name__})"
        )


def condition_process(method: ConditionalMethod, sde: SDE, sde_y: SDE | None) -> SDE | None:
    """The process ``y`` is diffused by: ``None`` (cde), ``sde`` (cdiffe) or ``sde_y`` (cmde)."""
    check_conditional_method(method, sde, sde_y)
    return {"cde": None, "cdiffe": sde, "cmde": sde_y}[method]


def make_conditional_loss_fn(
    sde: SDE,
    *,
    method: str = "cde",
    sde_y: SDE | None = None,
    y_time_input: str = "sigma",
    prediction: Literal["eps", "x0", "v", "score"] = "eps",
    time_input: str = "t",
    kind: Literal["continuous", "discrete"] = "continuous",
    norm: Literal["l2", "l1"] = "l2",
    weighting: Literal["uniform", "likelihood"] = "uniform",
    t_sampling: Literal["uniform", "importance"] = "uniform",
    num_steps: int = 1000,
) -> LossFn:
    """Build the training loss of a conditional score estimator (Batzolis et al.).

    ``x_t`` is drawn and compared with the network's output exactly as in
    :func:`make_loss_fn`; what changes is what the network sees of the condition:

    * ``"cde"``: the clean ``y``. The minimiser is ``grad_x log p_t(x_t | y)``.
    * ``"cdiffe"``: ``y_t = alpha(t) y + sigma(t) z_y``, diffused by ``sde`` at the
      same ``t`` as ``x_t`` with independent noise. Denoising the x-part of the
      joint perturbation kernel, the minimiser is the x-part of the joint score,
      ``grad_x log p_t(x_t, y_t)``.
    * ``"cmde"``: ``y_t`` diffused by ``sde_y`` at the same ``t``; the network is
      also told the condition's noise level ``network_time_input(sde_y, t,
      y_time_input)``. The minimiser is ``grad_x log p_t(x_t, y_t)`` under the two processes.

    Args:
      sde: the process of ``x``.
      method: ``"cde"``, ``"cdiffe"`` or ``"cmde"``.
      sde_y: the condition's process (``cmde`` only).
      y_time_input: the scalar that tells a ``cmde`` network the level of ``y_t``
        (default ``"sigma"``: ``sigma_y(t)``, in ``[0, 1]`` for the paper's VE
        process with ``sigma_max_y = 1``).
      prediction, time_input, kind, norm, weighting, t_sampling, num_steps: as in
        :func:`make_loss_fn`.

    Returns:
      ``loss_fn(apply_fn, x0, key, *, cond, mask=None) -> (loss, aux)`` where
      ``apply_fn(x_t, c, y_in, c_y)`` is the batched network, ``cond`` the clean
      conditions ``y`` (batch first), ``c_y`` ``None`` except for ``cmde``; ``aux``
      as in :func:`make_loss_fn`. The function carries ``takes_condition = True``
      so a training step knows to hand it the condition.

    Raises:
      ValueError: as :func:`make_loss_fn`, an unknown method or a bad ``sde_y``.
    """
    process = condition_process(method, sde, sde_y)
    _choice("time input", y_time_input, TIME_INPUTS)
    loss_at_times = _make_loss_at_times(
        sde, prediction=prediction, time_input=time_input, kind=kind, norm=norm, weighting=weighting,
        t_sampling=t_sampling, num_steps=num_steps,
    )

    def loss_fn(apply_fn, x0: Array, key: PRNGKey, *, cond: Array, mask: Array | None = None):
        cond = jnp.asarray(cond)
        if cond.ndim < 1 or cond.shape[0] != x0.shape[0]:
            raise ValueError(f"cond must hold one condition per example (batch {x0.shape[0]}), got {cond.shape}")
        loss_key, y_key = jax.random.split(key)
        y_noise = None if process is None else jax.random.normal(y_key, cond.shape, x0.dtype)

        def net(x_t, t):
            c = network_time_input(sde, t, time_input)
            if process is None:
                return apply_fn(x_t, c, cond, None)
            mean, std = process.marginal_prob(cond.astype(x0.dtype), t)
            y_t = mean + broadcast_to_x(std, cond) * y_noise
            c_y = network_time_input(process, t, y_time_input) if method == "cmde" else None
            return apply_fn(x_t, c, y_t, c_y)

        return loss_at_times(net, x0, loss_key, mask=mask)

    loss_fn.takes_condition = True
    return loss_fn


def make_classifier_loss_fn(sde: SDE, *, time_input: str = "t") -> LossFn:
    """Cross-entropy of a time-dependent classifier on images noised to a random time.

    ``t ~ U[eps, T]`` per example, ``x_t = alpha(t) x0 + sigma(t) z``, and the
    classifier ``apply_fn(x_t, c) -> (B, K)`` logits (``c`` the network time
    input, as for the score networks) is scored against the integer class
    ``target``. This trains EGSDE's domain classifier and classifier guidance.

    Args:
      sde: the forward process whose noise levels the classifier must handle.
      time_input: the conditioning scalar the network takes (see
        :func:`diffjax.parametrization.network_time_input`).

    Returns:
      ``loss_fn(apply_fn, x0, key, *, mask=None, target) -> (loss, aux)`` with
      ``aux = {"accuracy", "per_example", "t"}``; ``mask`` is ignored (there is
      no per-pixel loss).

    Raises:
      ValueError: on an unknown time input; at trace time, on a missing or
        mis-shaped target or logits that are not ``(B, K)``.
    """
    _choice("time input", time_input, TIME_INPUTS)

    def loss_fn(apply_fn, x0: Array, key: PRNGKey, *, mask: Array | None = None, target: Array | None = None):
        del mask
        n = x0.shape[0]
        if target is None or jnp.shape(target) != (n,):
            got = None if target is None else jnp.shape(target)
            raise ValueError(f"the classifier loss needs integer targets of shape ({n},), got {got}")
        t_key, noise_key = jax.random.split(key)
        t = jax.random.uniform(t_key, (n,), x0.dtype, sde.eps, sde.T)
        mean, std = sde.marginal_prob(x0, t)
        x_t = mean + broadcast_to_x(std, x0) * jax.random.normal(noise_key, x0.shape, x0.dtype)
        logits = apply_fn(x_t, network_time_input(sde, t, time_input)).astype(jnp.float32)
        if logits.ndim != 2 or logits.shape[0] != n:
            raise ValueError(f"the classifier must return (batch, classes) logits, got shape {logits.shape}")
        log_probs = jax.nn.log_softmax(logits)
        per_example = -jnp.take_along_axis(log_probs, target.astype(jnp.int32)[:, None], axis=1)[:, 0]
        accuracy = jnp.mean((jnp.argmax(logits, axis=1) == target).astype(jnp.float32))
        return jnp.mean(per_example), {"per_example": per_example, "t": t, "accuracy": accuracy}

    return loss_fn


# -- the first stage of latent diffusion ------------------------------------------


def gaussian_kl(mean: Array, logvar: Array) -> Array:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per example, summed over every non-batch axis.

    ``0.5 * sum(mean^2 + exp(logvar) - 1 - logvar)``: the closed form for a
    diagonal Gaussian posterior against the standard normal prior.

    Args:
      mean, logvar: ``(B, ...)`` posterior means and log-variances, same shape.

    Returns:
      ``(B,)`` float32 divergences in nats.

    Raises:
      ValueError: shapes that differ.
    """
    if jnp.shape(mean) != jnp.shape(logvar):
        raise ValueError(f"gaussian_kl: mean and logvar must have one shape, got {jnp.shape(mean)} and "
                         f"{jnp.shape(logvar)}")
    terms = jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar
    return 0.5 * jnp.sum(terms.reshape(terms.shape[0], -1).astype(jnp.float32), axis=1)


def make_autoencoder_loss_fn(
    perceptual_fn: Callable[[Array, Array], Array] | None = None,
    *,
    perceptual_weight: float = 1.0,
    kl_weight: float = 1e-6,
    disc_weight: float = 0.5,
    disc_start: int = -1,
) -> Callable:
    """The first-stage loss of latent diffusion: L1 + perceptual + small KL (+ optional hinge GAN).

    Per example ``mean|x - x_rec| + w_p * perceptual(x, x_rec) + w_kl * KL / (H W C)``:
    the reconstruction terms are per-pixel means, so the KL is divided by the
    pixel count to keep the paper's ratio (its losses are sums over pixels with
    ``w_kl = 1e-6``). With a discriminator (``disc_start >= 0``), from step
    ``disc_start`` on the generator adds ``-w_d * mean(D(x_rec))`` (the
    discriminator's parameters frozen for that term) and the discriminator's
    hinge loss ``mean(relu(1 - D(x))) + mean(relu(1 + D(sg(x_rec))))`` (the
    reconstruction frozen), so one optimizer trains both with the right
    gradients. The paper's adaptive adversarial weight is replaced by the fixed ``w_d``.

    Args:
      perceptual_fn: ``(a, b) -> (B,)`` differentiable perceptual distance
        (:func:`diffjax.metrics.lpips_loss_fn`); ``None`` = no perceptual term.
      perceptual_weight: ``w_p``.
      kl_weight: ``w_kl`` (relative to a pixel-summed reconstruction loss, as the paper's).
      disc_weight: ``w_d``.
      disc_start: first step with the adversarial terms; ``< 0`` = no discriminator.

    Returns:
      ``loss_fn(apply_fn, x0, key, mask=None, step=0) -> (loss, aux)`` for the
      training step; ``apply_fn(x, c, noise_key=...)`` is the autoencoder
      (``{"recon", "mean", "logvar"}``); ``aux`` holds ``l1``, ``perceptual``,
      ``kl`` (nats per image) and, with a discriminator, ``g_adv`` and ``d_loss``.

    Raises:
      ValueError: a negative weight.
    """
    for name, value in (("perceptual_weight", perceptual_weight), ("kl_weight", kl_weight),
                        ("disc_weight", disc_weight)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    use_disc = disc_start >= 0

    def loss_fn(apply_fn, x0, key, mask=None, step=0, **unused):
        del mask, unused
        out = apply_fn(x0, None, noise_key=key)
        recon = out["recon"]
        l1 = jnp.mean(jnp.abs(x0 - recon).reshape(x0.shape[0], -1), axis=1)
        perceptual = (perceptual_fn(x0, recon) if perceptual_fn is not None and perceptual_weight > 0
                      else jnp.zeros_like(l1))
        kl = gaussian_kl(out["mean"], out["logvar"])
        per_example = l1 + perceptual_weight * perceptual + kl_weight * kl / np.prod(x0.shape[1:])
        loss = jnp.mean(per_example)
        aux = {"l1": jnp.mean(l1), "perceptual": jnp.mean(perceptual), "kl": jnp.mean(kl)}
        if use_disc:
            on = (jnp.asarray(step) >= disc_start).astype(jnp.float32)
            g_adv = -jnp.mean(apply_fn(recon, None, discriminate=True, frozen=True))
            d_loss = (jnp.mean(jax.nn.relu(1.0 - apply_fn(x0, None, discriminate=True)))
                      + jnp.mean(jax.nn.relu(1.0 + apply_fn(jax.lax.stop_gradient(recon), None, discriminate=True))))
            loss = loss + on * (disc_weight * g_adv + d_loss)
            aux.update(g_adv=g_adv, d_loss=d_loss)
        return loss, aux

    loss_fn.takes_step = True
    return loss_fn
