"""An SR stage of a cascaded diffusion model (CDM): SR3 training plus where its input comes from.

Training is :class:`~diffjax.pipelines.sr3.SR3Pipeline` with conditioning
augmentation; the extra fields say how ``sample.py`` feeds the stage at
inference: which run is the stage below, and which augmentation variant to use.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffjax.pipelines.sr3 import SR3Pipeline
from diffjax.tasks.cascade import noise_augment, truncated_condition, truncation_time
from diffjax.tasks.sr3 import clip_denoised, upsample

__all__ = ["CascadePipeline", "Stage", "sample_cascade"]


class CascadePipeline(SR3Pipeline):
    """One SR stage of a cascade.

    Args:
      previous_workdir: the ``--workdir`` of the stage below (a class-conditional
        ``generate`` run, or another ``cascade`` stage).
      truncated: ``True``: stop the stage below at the noise level
        ``sample_aug_level`` and condition on its latent (truncated conditioning
        augmentation); ``False``: run it to the end and noise its output to
        ``sample_aug_level`` (non-truncated).
      sample_aug_level: the level ``s`` used at sampling time.
      scale, noise_aug_max, blur_prob, blur_sigma_min, blur_sigma_max: as for
        :class:`SR3Pipeline` (``noise_aug_max`` defaults to 0.5 here).
    """

    name = "cascade"

    def __init__(self, previous_workdir: str = "", truncated: bool = False, sample_aug_level: float = 0.1,
                 scale: int = 2, noise_aug_max: float = 0.5, **kwargs):
        super().__init__(scale=scale, noise_aug_max=noise_aug_max, **kwargs)
        if not 0.0 <= sample_aug_level < 1.0:
            raise ValueError(f"sample_aug_level must lie in [0, 1), got {sample_aug_level}")
        if truncated and sample_aug_level == 0.0:
            raise ValueError("truncated augmentation needs sample_aug_level > 0 (where the stage below stops)")
        if sample_aug_level > self.noise_aug_max:
            raise ValueError(f"sample_aug_level={sample_aug_level} exceeds the training range "
                             f"[0, noise_aug_max={self.noise_aug_max}] the stage was trained on")
        self.previous_workdir = previous_workdir
        self.truncated = bool(truncated)
        self.sample_aug_level = float(sample_aug_level)


# -- inference: class label -> base -> SR stages -------------------------------


@dataclasses.dataclass(frozen=True)
class Stage:
    """One trained stage of a cascade, restored, with how to sample it.

    Attributes:
      graphdef, params, model_state: the network (EMA parameters).
      sde, sampler: its process and its own sampler.
      image_shape: ``(H, W, C)`` the stage outputs.
      prediction, time_input, denoise: how it was trained / is finished.
      pipeline: ``None`` for the base (a class-conditional ``generate`` run), the
        :class:`CascadePipeline` for an SR stage.
      num_classes: label classes of the base (0 = unconditional).
    """

    graphdef: Any
    params: Any
    model_state: Any
    sde: Any
    sampler: Any
    image_shape: tuple
    prediction: str = "eps"
    time_input: str = "t"
    denoise: bool = True
    pipeline: CascadePipeline | None = None
    num_classes: int = 0


def _stage_fn(stage: Stage, t_end: float | None):
    """``run(params, cond, labels, key) -> (x, view)``: sample the stage down to ``t_end`` (None = to the end).

    ``x`` is what the next stage takes (the final image, or the latent at
    ``t_end`` when the next stage is truncated); ``view`` the image to write.
    """
    from diffjax.parametrization import model_score_fn, tweedie_x0
    from diffjax.samplers.base import sample
    from diffjax.training import model_from_state

    pipeline = stage.pipeline

    def run(params, cond, labels, key):
        model = model_from_state(stage.graphdef, params, stage.model_state)

        def apply_fn(x, c):
            extra = {}
            if pipeline is not None:
                extra["cond"] = cond
                extra["aug_level"] = jnp.full(x.shape[:1], pipeline.sample_aug_level, jnp.float32)
            elif stage.num_classes > 0:
                extra["labels"] = labels
            return model(x, c, **extra)

        score_fn = model_score = model_score_fn(apply_fn, stage.sde, prediction=stage.prediction,
                                                time_input=stage.time_input)
        if pipeline is not None and pipeline.clip_denoised:
            clipped = clip_denoised(lambda x, t, _: model_score(x, t), stage.sde)
            score_fn = lambda x, t: clipped(x, t, None)
        prior_key, sample_key = jax.random.split(key)
        x = stage.sde.prior_sample(prior_key, (labels.shape[0], *stage.image_shape))
        if t_end is None:
            x, _ = sample(score_fn, stage.sde, x, key=sample_key, sampler=stage.sampler, denoise=stage.denoise)
            x = jnp.clip(x, -1.0, 1.0)
            return x, x
        x, _ = sample(score_fn, stage.sde, x, key=sample_key, sampler=stage.sampler, t_end=t_end)
        t = jnp.full(x.shape[:1], t_end, x.dtype)
        return x, jnp.clip(tweedie_x0(score_fn(x, t), x, t, stage.sde), -1.0, 1.0)

    return run


def sample_cascade(stages: list[Stage], labels: np.ndarray, key, progress=None) -> list[np.ndarray]:
    """Run a cascade from class labels to the final resolution.

    Args:
      stages: the base first, then the SR stages in order.
      labels: ``(B,)`` class labels for the base.
      key: base random key; stage ``i`` uses ``fold_in(key, i)``.
      progress: optional ``progress(stage_index)`` called after each stage.

    Returns:
      Each stage's images, ``(B, H_i, W_i, C)`` numpy arrays in ``[-1, 1]``.
    """
    if not stages or stages[0].pipeline is not None or any(s.pipeline is None for s in stages[1:]):
        raise ValueError("a cascade is one base stage (a generate run) followed by SR stages (cascade runs)")
    labels = jnp.asarray(labels, jnp.int32)
    outputs, x, t_prev = [], None, None
    for i, stage in enumerate(stages):
        nxt = stages[i + 1].pipeline if i + 1 < len(stages) else None
        t_end = truncation_time(stage.sde, nxt.sample_aug_level) if nxt is not None and nxt.truncated else None
        cond = None
        stage_key = jax.random.fold_in(key, i)
        if stage.pipeline is not None:
            p = stage.pipeline
            s = p.sample_aug_level
            if p.truncated:
                low = truncated_condition(x, stages[i - 1].sde, t_prev, s)
            else:
                noise = jax.random.normal(jax.random.fold_in(stage_key, 1), x.shape, x.dtype)
                low = noise_augment(x, jnp.full(x.shape[:1], s, x.dtype), noise)
            cond = upsample(low, p.scale)
            if tuple(cond.shape[1:3]) != tuple(stage.image_shape[:2]):
                raise ValueError(f"stage {i} takes {stage.image_shape[0]}x{stage.image_shape[1]} outputs but the "
                                 f"stage below gives {x.shape[1]}x{x.shape[2]} at scale {p.scale}")
        run = jax.jit(_stage_fn(stage, t_end))
        x, view = run(stage.params, cond, labels, stage_key)
        t_prev = t_end
        outputs.append(np.asarray(view))
        if progress is not None:
            progress(i)
    return outputs
