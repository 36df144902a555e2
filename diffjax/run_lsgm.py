"""LSGM runs: the training state of the VAE and the latent score prior, its step, the restored run (docs/lsgm.md).

The math is :mod:`diffjax.tasks.lsgm`, the networks :mod:`diffjax.lsgm_model`; the loop is
:func:`diffjax.trainer.train_loop`, as for every kind.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from diffjax import builders, workdir_io
from diffjax.checkpoint import StopRequest, check_model_config, restore_latest, write_model_config
# make_lsgm_generate_fn and lsgm_bound_fn are looked up here (tests count their traces).
from diffjax.lsgm_model import LSGMModel, build_lsgm_model, lsgm_bound_fn, make_lsgm_generate_fn
from diffjax.run_checks import as_key, as_pixels, check_sampler, to_unit
from diffjax.run_base import Run
from diffjax.run_config import load_run_config, write_run_config
from diffjax.sharding import make_mesh, replicated
from diffjax.tasks import lsgm as lsgm_math
from diffjax.trainer import LoopTask, check_run_workdir, host_batches, prepare_run, train_loop
from diffjax.training import all_finite, ema_update, keep_finite

__all__ = ["LSGMState", "LSGMModel", "LSGMRun", "build_lsgm_model", "make_lsgm_train_step", "make_lsgm_generate_fn",
           "lsgm_bound_fn", "train_lsgm", "load_lsgm"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LSGMState:
    """The training state of an LSGM run: a pytree of arrays.

    Attributes:
      step: updates applied so far.
      vae_params, prior_params: the VAE's and the latent score model's parameters.
      vae_opt, prior_opt: their optimiser states (separate optimisers, as in the paper).
      vae_ema, prior_ema: exponential moving averages used for sampling and evaluation.
      nonfinite_steps, first_nonfinite_step: the non-finite guard's counters
        (:func:`diffjax.training.keep_finite`).
    """

    step: jax.Array
    vae_params: object
    prior_params: object
    vae_opt: object
    prior_opt: object
    vae_ema: object
    prior_ema: object
    nonfinite_steps: jax.Array = dataclasses.field(default_factory=lambda: jnp.zeros((), jnp.int32))
    first_nonfinite_step: jax.Array = dataclasses.field(default_factory=lambda: jnp.zeros((), jnp.int32))


def _optimizers(config):
    return tuple(builders.build_optimizer(config, lr=lr) for lr in (config.lsgm.vae_lr, config.lsgm.prior_lr))


def _initial_state(vae_params, prior_params, vae_opt, prior_opt) -> LSGMState:
    return LSGMState(step=jnp.zeros((), jnp.int32), vae_params=vae_params, prior_params=prior_params,
                     vae_opt=vae_opt.init(vae_params), prior_opt=prior_opt.init(prior_params),
                     vae_ema=jax.tree.map(jnp.copy, vae_params), prior_ema=jax.tree.map(jnp.copy, prior_params))


def make_lsgm_train_step(model: LSGMModel, vae_opt, prior_opt, ema_decay: float):
    """``train_step(state, images, base_key) -> (state, metrics)``: one joint update of VAE and prior.

    The VAE minimises the whole bound (reconstruction - entropy + cross-entropy
    with likelihood weighting); the prior minimises the cross-entropy with its
    own weighting (the same term for ``"likelihood"``, a separate reweighted
    draw on the detached latents for ``"reweighted"``). Each has its optimiser.
    """
    num_dims = math.prod(model.image_shape)

    def train_step(state: LSGMState, images, base_key):
        key = jax.random.fold_in(base_key, state.step)
        obj_key, prior_key = jax.random.split(key)

        def objective(vae_params, prior_params):
            eps_fn = None if model.prior == "normal" else model.eps_fn(
                prior_params if model.prior_weighting == "likelihood" else jax.lax.stop_gradient(prior_params))
            terms = lsgm_math.lsgm_terms(model.encode_fn(vae_params), model.decode_logp_fn(vae_params), eps_fn,
                                         model.sde, images, obj_key, prior=model.prior)
            nelbo = jnp.mean(terms["nelbo"])
            prior_loss = jnp.zeros(())
            if model.prior == "sde" and model.prior_weighting == "reweighted":
                dsm, _ = lsgm_math.dsm_cross_entropy(model.eps_fn(prior_params), model.sde,
                                                     jax.lax.stop_gradient(terms["z0"]), prior_key,
                                                     weighting="reweighted")
                prior_loss = jnp.mean(dsm)
            aux = {"reconstruction": jnp.mean(terms["reconstruction"]), "entropy": jnp.mean(terms["entropy"]),
                   "cross_entropy": jnp.mean(terms["cross_entropy"]), "nelbo": nelbo, "prior_loss": prior_loss}
            return nelbo + prior_loss, aux

        (total, aux), (g_vae, g_prior) = jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)(
            state.vae_params, state.prior_params)
        u_vae, vae_opt_state = vae_opt.update(g_vae, state.vae_opt, state.vae_params)
        vae_params = optax.apply_updates(state.vae_params, u_vae)
        prior_params, prior_opt_state = state.prior_params, state.prior_opt
        if model.prior == "sde":
            u_prior, prior_opt_state = prior_opt.update(g_prior, state.prior_opt, state.prior_params)
            prior_params = optax.apply_updates(state.prior_params, u_prior)
        new = dataclasses.replace(state, vae_params=vae_params, prior_params=prior_params, vae_opt=vae_opt_state,
                                  prior_opt=prior_opt_state,
                                  vae_ema=ema_update(state.vae_ema, vae_params, state.step, ema_decay),
                                  prior_ema=ema_update(state.prior_ema, prior_params, state.step, ema_decay))
        grad_norms = (optax.global_norm(g_vae), optax.global_norm(g_prior))
        finite = (jnp.isfinite(total) & jnp.isfinite(grad_norms[0]) & jnp.isfinite(grad_norms[1])
                  & all_finite((vae_params, prior_params)))
        new = keep_finite(state, new, finite)
        mixing = jax.nn.sigmoid(nnx.merge(model.prior_graphdef, prior_params).mixing_logit[...])
        metrics = dict(aux, loss=aux["nelbo"], bpd=aux["nelbo"] / (num_dims * math.log(2.0)),
                       mixing_mean=jnp.mean(mixing), grad_norm_vae=grad_norms[0], grad_norm_prior=grad_norms[1],
                       nonfinite_steps=new.nonfinite_steps)
        return new, metrics

    return train_step


def train_lsgm(config: ml_collections.ConfigDict, workdir: str, *, stop: StopRequest | None = None) -> dict:
    """Train an LSGM run (or its VAE alone with ``config.lsgm.prior = "normal"``), resuming if possible.

    Arguments and errors as :func:`diffjax.run_kinds.train_and_evaluate`'s.

    Returns:
      ``{"step", "final_loss", "final_bpd", "stopped_early", "train_seconds"}``.
    """
    tc = config.training
    mesh = prepare_run(config)
    dataset = builders.build_dataset(config, "train")
    model, vae_params, prior_params = build_lsgm_model(config, dataset.image_shape)
    vae_opt, prior_opt = _optimizers(config)
    check_run_workdir(workdir, model.model_config_dict())

    def write_files():
        write_model_config(workdir, model.model_config_dict())
        write_run_config(workdir, config)

    grid = jax.jit(make_lsgm_generate_fn(model, builders.build_sampler(config), tc.num_grid_samples))
    task = LoopTask(
        mesh, lambda: _initial_state(vae_params, prior_params, vae_opt, prior_opt),
        make_lsgm_train_step(model, vae_opt, prior_opt, tc.ema_decay),
        lambda start: host_batches(dataset, tc, start, lambda batch, _: np.asarray(batch["image"], np.float32)),
        tc.num_steps, tc.batch_size, write_files=write_files,
        grid_fn=lambda state, key: grid(state.vae_ema, state.prior_ema, key),
        desc="train lsgm" if model.prior == "sde" else "train vae", bar_metric="bpd",
        nonfinite_hint="a lower --config.lsgm.vae_lr / --config.lsgm.prior_lr or --config.optim.grad_clip")
    result = train_loop(task, workdir, config, stop=stop)
    return {"step": result.step, "final_loss": result.metrics.get("loss"), "final_bpd": result.metrics.get("bpd"),
            "stopped_early": result.stopped_early, "train_seconds": round(result.seconds, 1)}


def load_lsgm(workdir: str, config: ml_collections.ConfigDict | None = None):
    """Restore an LSGM run's EMA parameters: ``(model, vae_params, prior_params, step, config)``.

    ``config`` defaults to the stored ``config.json``; a ValueError for a workdir without config or
    checkpoint, or not an LSGM run.
    """
    config = load_run_config(workdir) if config is None else config
    if config.task.name != "lsgm":
        raise ValueError(f"{workdir} is a {config.task.name!r} run, not an LSGM run")
    model, vae_params, prior_params = build_lsgm_model(config, _image_shape(workdir, config))
    # model_config.json is the network the checkpoints hold: a config.json edited since is refused, not applied.
    check_model_config(workdir, model.model_config_dict())
    vae_opt, prior_opt = _optimizers(config)
    init = _initial_state(vae_params, prior_params, vae_opt, prior_opt)
    state = restore_latest(workdir, lambda: init, replicated(make_mesh()))
    return model, state.vae_ema, state.prior_ema, int(state.step), config


def _image_shape(workdir: str, config) -> tuple[int, int, int]:
    """The run's image shape from its ``model_config.json`` (else from the dataset)."""
    import json

    from diffjax.checkpoint import model_config_path

    path = model_config_path(workdir)
    if workdir_io.exists(path):
        vae = json.loads(workdir_io.read_text(path))["vae"]
        return (vae["image_size"], vae["image_size"], vae["in_channels"])
    return builders.build_dataset(config, "test").image_shape


class LSGMRun(Run):
    """An LSGM (or VAE-alone) run restored for use from Python; :func:`diffjax.load_run` returns one.

    A :class:`diffjax.Run` whose capabilities are :meth:`generate`, :meth:`nll_bound`,
    :attr:`score_fn` (the latent prior's), :attr:`sde` and :attr:`sampler`.

    Attributes:
      config: the run's config.
      workdir: the run's directory.
      task: ``"lsgm"``.
      step: the restored checkpoint's training step.
      model: the :class:`LSGMModel` (VAE, latent prior and process).
      image_shape: ``(H, W, C)`` of its images.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict | None = None):
        """Restore ``workdir``'s EMA parameters (see :func:`load_lsgm`)."""
        self.model, self._vae, self._prior, self.step, self.config = load_lsgm(workdir, config)
        self.workdir, self.task = workdir, "lsgm"
        self.image_shape = tuple(self.model.image_shape)
        self._compiled = {}

    def __repr__(self) -> str:
        return (f"LSGMRun(workdir={self.workdir!r}, prior={self.model.prior!r}, step={self.step}, "
                f"image_shape={self.image_shape})")

    @property
    def capabilities(self) -> tuple[str, ...]:
        return ("generate", "nll_bound", "score_fn", "sde", "sampler")

    @property
    def sde(self):
        """The latent prior's forward process (``model.sde``)."""
        return self.model.sde

    @property
    def score_fn(self):
        """The latent prior's score ``score_fn(z, t)`` under ``model.sde`` (the Normal's for the VAE alone)."""
        if self.model.prior != "sde":
            return lambda z, t: -z
        return self.model.score_fn(self._prior)

    def generate(self, n: int, *, key=None, sampler=None, batch_size: int | None = None) -> np.ndarray:
        """``n`` decoded samples: latents from the prior (any core sampler), then the decoder.

        ``key`` and ``sampler`` (the latent prior's) as in :meth:`diffjax.Run.generate`, batch ``i`` from
        ``fold_in(key, i)``; ``batch_size`` images per compiled call (default ``config.sampling.batch_size``).
        Returns ``(n, H, W, C)`` float32 numpy in ``[0, 1]``; a ValueError for ``n`` or ``batch_size`` not a
        positive integer, a bad key or sampler.
        """
        for name, value in (("n", n), ("batch_size", batch_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        images = self._generate(int(n), as_key(key, self.config.sampling.seed), check_sampler(sampler),
                                batch_size=batch_size)
        return to_unit(images, single=False)

    def _generate(self, n: int, key, sampler=None, progress=None, batch_size: int | None = None) -> np.ndarray:
        """``(n, H, W, C)`` images in ``[-1, 1]``, batch ``i`` from ``fold_in(key, i)`` (``sample.py``'s path)."""
        sampler = sampler or builders.build_sampler(self.config)
        batch = min(int(batch_size or self.config.sampling.batch_size), n)
        if ("generate", batch, sampler) not in self._compiled:
            self._compiled[("generate", batch, sampler)] = jax.jit(make_lsgm_generate_fn(self.model, sampler, batch))
        fn, out = self._compiled[("generate", batch, sampler)], []
        for i in range(-(-n // batch)):
            out.append(np.asarray(fn(self._vae, self._prior, jax.random.fold_in(key, i))))
            if progress is not None:
                progress(i + 1)
        return np.concatenate(out)[:n]

    GENERATORS = {"lsgm": _generate}

    def nll_bound(self, images, *, key=None, exact_divergence: bool = False) -> np.ndarray:
        """Per-image one-sample bound on the negative log-likelihood, in bits per dimension.

        ``images``: ``uint8`` or floats in ``[0, 1]`` (read as 8-bit values) of the run's image shape, one or a
        batch; ``key`` (default ``0``) draws the latent and the trace probe; ``exact_divergence`` takes the exact
        trace in the ODE likelihood (slower) instead of Hutchinson's. Returns an ``(N,)`` float array (see
        :func:`lsgm_bound_fn`); a ValueError for images of another dtype, range or shape than the run's.
        """
        pixels, _ = as_pixels(images)
        if tuple(pixels.shape[1:]) != self.image_shape:
            raise ValueError(f"images must be (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(np.shape(images))}")
        x = jnp.asarray(np.round(pixels) / 127.5 - 1.0)  # the bound is over 8-bit values
        cache_key = ("bound", bool(exact_divergence))
        if cache_key not in self._compiled:
            self._compiled[cache_key] = jax.jit(lsgm_bound_fn(self.model, exact_divergence=exact_divergence))
        return np.asarray(self._compiled[cache_key](self._vae, self._prior, x, as_key(key, 0)))
