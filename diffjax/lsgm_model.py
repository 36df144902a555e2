"""LSGM's networks built from a config, and the pure programs over their parameters (docs/lsgm.md)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from diffjax import builders
from diffjax.parametrization import network_time_input
from diffjax.samplers import sample
from diffjax.tasks import lsgm as lsgm_math

__all__ = ["LSGMModel", "build_lsgm_model", "make_lsgm_generate_fn", "lsgm_bound_fn"]


@dataclasses.dataclass(frozen=True)
class LSGMModel:
    """What an LSGM run is made of, built from its config (no parameters).

    Attributes:
      vae_graphdef, prior_graphdef: the networks' NNX graph definitions.
      vae_config: the :class:`diffjax.nn.vae.VAEConfig`.
      prior_config: the latent UNet's :class:`diffjax.nn.UNetConfig`.
      sde: the latent VP process.
      prior: ``"sde"`` or ``"normal"`` (the VAE alone).
      prior_weighting: ``"likelihood"`` or ``"reweighted"`` (the score model's objective).
      time_input: the conditioning scalar the prior network sees.
    """

    vae_graphdef: object
    prior_graphdef: object
    vae_config: object
    prior_config: object
    sde: object
    prior: str
    prior_weighting: str
    time_input: str

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(h, w, c)`` of one latent."""
        return self.vae_config.latent_shape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        c = self.vae_config
        return (c.image_size, c.image_size, c.in_channels)

    def model_config_dict(self) -> dict:
        """The hyper-parameters stored as ``model_config.json``."""
        return {"vae": dataclasses.asdict(self.vae_config), "prior": dataclasses.asdict(self.prior_config)}

    def encode_fn(self, vae_params):
        """``x -> (mean, std)`` of ``q(z_0 | x)``."""
        return lambda x: nnx.merge(self.vae_graphdef, vae_params).encode(x)

    def decode_logp_fn(self, vae_params):
        """``(x, z) -> log p(x | z)`` per example (discretised logistic over 8-bit values)."""

        def logp(x, z):
            mean, log_scale = nnx.merge(self.vae_graphdef, vae_params).decode(z)
            per_dim = lsgm_math.discretized_logistic_logp(x, mean, log_scale)
            return jnp.sum(per_dim, axis=tuple(range(1, x.ndim)))

        return logp

    def decode_mean_fn(self, vae_params):
        """``z -> `` the decoder's location, the image shown as a sample (in ``[-1, 1]``)."""
        return lambda z: nnx.merge(self.vae_graphdef, vae_params).decode(z)[0]

    def _mixed(self, prior_params, mix):
        """``(z_t, t) -> mix(network output, z_t, sigma(t), mixing logit)`` of the latent prior."""

        def fn(z_t, t):
            prior = nnx.merge(self.prior_graphdef, prior_params)
            net = prior(z_t, network_time_input(self.sde, t, self.time_input))
            return mix(net, z_t, self.sde.alpha_sigma(t)[1], prior.mixing_logit[...])

        return fn

    def eps_fn(self, prior_params):
        """The mixed noise prediction ``eps(z_t, t)`` of the latent prior."""
        return self._mixed(prior_params, lsgm_math.mixed_eps)

    def score_fn(self, prior_params):
        """The mixed score ``score(z_t, t)`` of the latent prior (for :func:`diffjax.sample`)."""
        return self._mixed(prior_params, lsgm_math.mixed_score)


def build_lsgm_model(config: ml_collections.ConfigDict, image_shape, *, seed: int | None = None):
    """The networks of an LSGM config: ``(LSGMModel, vae_params, prior_params)``.

    The latent UNet takes its hyper-parameters from ``config.model`` (its size
    and channels from the latent); the VAE from ``config.lsgm``.

    Args:
      config: the run config (``task.name = "lsgm"``).
      image_shape: ``(H, W, C)`` of the data.
      seed: initialisation seed; default ``config.training.seed``.

    Raises:
      ValueError: an unknown prior or weighting, a non-VP process, or shapes the networks reject.
    """
    from diffjax.nn import UNetConfig
    from diffjax.nn.vae import VAE, LatentPrior, VAEConfig

    lc = config.lsgm
    if lc.prior not in lsgm_math.PRIORS:
        raise ValueError(f"config.lsgm.prior must be one of {lsgm_math.PRIORS}, got {lc.prior!r}")
    if lc.prior_weighting not in lsgm_math.PRIOR_WEIGHTINGS:
        raise ValueError(f"config.lsgm.prior_weighting must be one of {lsgm_math.PRIOR_WEIGHTINGS}, "
                         f"got {lc.prior_weighting!r}")
    sde = builders.build_sde(config)
    if config.sde.name != "vp":
        raise ValueError(f"LSGM needs config.sde.name='vp' (its cross-entropy is derived for VP), got {config.sde.name!r}")
    vae_config = VAEConfig(image_size=image_shape[0], in_channels=image_shape[2], latent_channels=lc.latent_channels,
                           channels=tuple(lc.vae_channels), num_res_blocks=lc.vae_res_blocks)
    h, _, c = vae_config.latent_shape
    kwargs = builders.unet_model_keys(config)
    kwargs.update(image_size=h, in_channels=c, num_classes=0)
    prior_config = UNetConfig(**kwargs)
    rngs = nnx.Rngs(params=config.training.seed if seed is None else seed)
    vae = VAE(vae_config, rngs=rngs)
    prior = LatentPrior(prior_config, mixing_logit_init=float(lc.mixing_logit_init), rngs=rngs)
    vae_graphdef, vae_params = nnx.split(vae)
    prior_graphdef, prior_params = nnx.split(prior)
    model = LSGMModel(vae_graphdef, prior_graphdef, vae_config, prior_config, sde, lc.prior, lc.prior_weighting,
                      config.loss.time_input)
    return model, vae_params, prior_params


def make_lsgm_generate_fn(model: LSGMModel, sampler, batch_size: int):
    """``generate(vae_params, prior_params, key) -> (batch_size, H, W, C)`` images in ``[-1, 1]``.

    Latents ``z`` are drawn from the prior (the score model with ``sampler`` from
    ``sde.T`` to ``sde.eps``, or ``N(0, I)`` for the VAE alone) and decoded to the
    decoder's location. The whole program is one jit-able function.
    """
    shape = (batch_size,) + tuple(model.latent_shape)

    def generate(vae_params, prior_params, key):
        init_key, sample_key = jax.random.split(key)
        z = model.sde.prior_sample(init_key, shape)
        if model.prior == "sde":
            z, _ = sample(model.score_fn(prior_params), model.sde, z, key=sample_key, sampler=sampler)
        return jnp.clip(model.decode_mean_fn(vae_params)(z), -1.0, 1.0)

    return generate


def lsgm_bound_fn(model: LSGMModel, *, exact_divergence: bool = False, rtol: float = 1e-5, atol: float = 1e-5):
    """``bound(vae_params, prior_params, x, key) -> (batch,)`` one-sample NLL bound in bits/dim.

    The bound of :func:`diffjax.tasks.lsgm.nelbo_ode`: the decoder's discretised
    likelihood of the 8-bit pixels, ``log q(z | x)`` and the probability-flow
    ODE's ``log p(z)`` (Hutchinson's trace unless ``exact_divergence``), over
    ``H * W * C`` pixel dimensions.
    """
    num_dims = math.prod(model.image_shape)

    def bound(vae_params, prior_params, x, key):
        out = lsgm_math.nelbo_ode(model.encode_fn(vae_params), model.decode_logp_fn(vae_params),
                                  model.score_fn(prior_params), model.sde, x, key, prior=model.prior,
                                  exact_divergence=exact_divergence, rtol=rtol, atol=atol)
        return out["nelbo"] / (num_dims * math.log(2.0))

    return bound
