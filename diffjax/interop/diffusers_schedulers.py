"""diffusers scheduler configs -> a diffjax process, sampler and network parametrisation.

DDPM / DDIM schedulers become a :class:`~diffjax.sde.DiscreteVPSDE` (timestep
``k`` at ``t = (k + 1) / N``, network input ``k = t N - 1``) and a
:class:`~diffjax.samplers.DDIM` or :class:`~diffjax.samplers.Ancestral` sampler
on diffusers' own integer timesteps, so that ``dj.sample(score_fn, sde, x_T,
sampler=...)`` walks the same chain as the pipeline's loop.
"""

from __future__ import annotations

import dataclasses

from diffjax import samplers as samplers_lib
from diffjax.sde import SDE, DiscreteVPSDE, VESDE

__all__ = ["Schedule", "schedule_from_diffusers", "PREDICTIONS"]

# diffusers prediction_type -> diffjax prediction kind
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
_DISCRETE = ("DDPMScheduler", "DDIMScheduler")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """What a scheduler config means in diffjax.

    Attributes:
      sde: the forward process.
      sampler: the pipeline's own loop as a diffjax sampler.
      prediction: what the network outputs (``"eps"``, ``"v"``, ``"x0"``, ``"score"``).
      time_input: what the network is fed (``"index"``: diffusers' integer timestep; ``"sigma"``: VE noise level).
      learned_variance: the network outputs ``[prediction, variance]`` channels (only the first half is used).
      centered: the model's data lie in ``[-1, 1]`` (images are ``x / 2 + 0.5``); False: in ``[0, 1]``
        (score_sde's VE models: ``ScoreSdeVePipeline`` clamps its sample to ``[0, 1]`` as it is).
    """

    sde: SDE
    sampler: samplers_lib.Sampler
    prediction: str
    time_input: str
    learned_variance: bool = False
    centered: bool = True


def _refuse(cond, msg):
    if cond:
        raise ValueError(f"scheduler config: {msg}")


def schedule_from_diffusers(config: dict, pipeline: str | None = None, *, steps: int | None = None,
                            eta: float = 0.0) -> Schedule:
    """Map a diffusers ``scheduler_config.json`` dict (and its pipeline class) to a :class:`Schedule`.

    Args:
      config: the scheduler's config dict (``_class_name`` DDPMScheduler, DDIMScheduler or ScoreSdeVeScheduler).
      pipeline: the pipeline class of ``model_index.json``: ``"DDIMPipeline"`` samples with
        DDIM (50 steps, ``eta`` 0, as its ``__call__`` defaults), ``"DDPMPipeline"`` with
        DDPM's ancestral chain (1000 steps), ``"ScoreSdeVePipeline"`` with the
        predictor-corrector sampler (2000 steps); ``None``: by scheduler class.
      steps: override the number of sampling steps.
      eta: DDIM's ``eta`` (DDIM only).

    Raises:
      ValueError: an unknown scheduler or an option this mapping does not reproduce.
    """
    name = config.get("_class_name")
    if name == "ScoreSdeVeScheduler":
        sde = VESDE(sigma_min=float(config.get("sigma_min", 0.01)), sigma_max=float(config.get("sigma_max", 1348.0)),
                    eps=float(config.get("sampling_eps", 1e-5)))
        # ScoreSdeVePipeline.__call__: 2000 steps by default, correct_steps Langevin steps, score_sde's loop.
        sampler = samplers_lib.PredictorCorrector(steps or 2000, snr=float(config.get("snr", 0.15)),
                                                  corrector_steps=int(config.get("correct_steps", 1)),
                                                  discrete_sigmas=True)
        return Schedule(sde, sampler, "score", "sigma", centered=False)
    _refuse(name not in _DISCRETE, f"_class_name {name!r} is not supported; expected one of "
                                   f"{list(_DISCRETE) + ['ScoreSdeVeScheduler']}")
    _refuse(config.get("trained_betas") is not None, "trained_betas is not supported")
    _refuse(bool(config.get("thresholding", False)), "thresholding (dynamic thresholding) is not supported")
    _refuse(bool(config.get("rescale_betas_zero_snr", False)),
            "rescale_betas_zero_snr gives alpha_bar = 0 at the last step; a VP process cannot hold it")
    prediction = config.get("prediction_type", "epsilon")
    _refuse(prediction not in PREDICTIONS, f"prediction_type {prediction!r}; expected one of {list(PREDICTIONS)}")
    variance = config.get("variance_type", "fixed_small")
    _refuse(variance not in ("fixed_small", "fixed_small_log", "learned", "learned_range", None),
            f"variance_type {variance!r} is not supported")
    n = int(config.get("num_train_timesteps", 1000))
    sde = DiscreteVPSDE(num_steps=n, beta_start=float(config.get("beta_start", 1e-4)),
                        beta_end=float(config.get("beta_end", 0.02)), beta_schedule=config.get("beta_schedule", "linear"),
                        float32_betas=True, eps=1.0 / n)
    kind = pipeline or ("DDIMPipeline" if name == "DDIMScheduler" else "DDPMPipeline")
    _refuse(kind not in ("DDIMPipeline", "DDPMPipeline"), f"pipeline {kind!r} with a {name}")
    spacing = config.get("timestep_spacing", "leading")
    _refuse(spacing not in samplers_lib.DISCRETE_SPACINGS, f"timestep_spacing {spacing!r}")
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", True) else 0.0
    offset = int(config.get("steps_offset", 0))
    if spacing != "leading":
        offset = 0  # diffusers adds steps_offset only to leading timesteps
    if kind == "DDIMPipeline":
        # DDIMPipeline re-reads any scheduler config as a DDIMScheduler: set_alpha_to_one defaults to True.
        sampler = samplers_lib.DDIM(steps or 50, eta=eta, spacing=spacing, steps_offset=offset, clip_x0=clip,
                                    final_alpha_one=bool(config.get("set_alpha_to_one", True)))
    else:
        # DDPMScheduler ends at alpha = 1 (its `one`), whatever set_alpha_to_one says.
        sampler = samplers_lib.Ancestral(steps or n, spacing=spacing, steps_offset=offset, clip_x0=clip)
    return Schedule(sde, sampler, PREDICTIONS[prediction], "index",
                    learned_variance=variance in ("learned", "learned_range"))
