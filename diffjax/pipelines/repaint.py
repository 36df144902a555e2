"""The RePaint pipeline: an unconditional model, inpainting at sampling time.

Training is plain unconditional training (batches pass through); ``sample.py
--input`` then completes ``x.png`` where ``x_mask.png`` is white with
:func:`diffjax.tasks.repaint` and the run's ``config.task.repaint`` schedule.
"""

from __future__ import annotations

import jax.numpy as jnp

from diffjax.pipelines.base import GeneratePipeline
from diffjax.tasks.repaint import repaint, repaint_schedule

__all__ = ["RepaintPipeline"]


class RepaintPipeline(GeneratePipeline):
    """Unconditional training; RePaint inpainting of input files.

    Args:
      steps, jump_length, jump_n_sample: RePaint's schedule (250 / 10 / 10 in the
        paper; see :func:`diffjax.tasks.repaint`).
    """

    name = "repaint"
    input_kinds = ("inpainting",)

    def __init__(self, steps: int = 250, jump_length: int = 10, jump_n_sample: int = 10):
        repaint_schedule(steps, jump_length, jump_n_sample)  # validates the integers
        self.steps, self.jump_length, self.jump_n_sample = int(steps), int(jump_length), int(jump_n_sample)

    def condition(self, kind, images, masks, seed):
        """RePaint's model is unconditional: no condition."""
        return None

    def restore(self, score_fn, sde, sampler, kind, shape, known, mask, key, denoise):
        """Pure JAX: RePaint with this pipeline's schedule (``sampler`` and ``denoise`` unused)."""
        del sampler, denoise, shape
        out = repaint(score_fn, sde, known, mask, key=key, steps=self.steps,
                      jump_length=self.jump_length, jump_n_sample=self.jump_n_sample)
        return jnp.clip(out, -1.0, 1.0)
