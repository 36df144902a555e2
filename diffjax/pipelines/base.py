"""The pipeline interface, and the unconditional ``generate`` pipeline."""

from __future__ import annotations

import numpy as np

__all__ = ["Pipeline", "GeneratePipeline", "MODEL_INPUTS"]

# Batch keys that the training step feeds to the network, and the UNet keyword
# each one becomes. ``batch["image"]`` is the clean target x0 and
# ``batch["loss_mask"]`` (1 where the loss counts) goes to the loss.
# ``context`` / ``context_mask``: cross-attention tokens (batch, tokens, dim) from a
# pipeline's token encoder, when the UNet has ``context_dim > 0``.
MODEL_INPUTS = {"cond": "cond", "label": "labels", "aug_level": "aug_level",
                "context": "context", "context_mask": "context_mask"}


class Pipeline:
    """What a task adds around the generic training step and sampler.

    Subclasses override what they need; the base class is the unconditional
    task, whose batches pass through unchanged.
    """

    #: ``config.task.name`` of this pipeline.
    name: str = "generate"
    #: the network the task trains: ``"unet"`` (a score model) or ``"classifier"``.
    network: str = "unet"

    def cond_channels(self, image_shape: tuple[int, int, int]) -> int:
        """Channels of the condition image the network takes (0 = unconditional)."""
        return 0

    def model_fields(self) -> dict:
        """Extra ``UNetConfig`` fields the task needs (e.g. ``aug_level_embedding``); none by default."""
        return {}

    def prepare_batch(self, batch: dict, *, step: int, seed: int, rows: np.ndarray) -> dict:
        """Clean host batch -> training batch (numpy, on the host, before sharding).

        Args:
          batch: ``{"image": (L, H, W, C) float32 in [-1, 1], "label": (L,) int32}``,
            this host's rows of the global batch.
          step: the data step the batch belongs to.
          seed: the run's seed.
          rows: global row indices of this host's rows; draw per-row randomness
            from ``(seed, step, row)`` so the result does not depend on the number
            of hosts.

        Returns:
          The batch with any of ``"cond"`` (condition image), ``"loss_mask"``
          added; ``"image"`` stays the target the network learns to produce.
        """
        return batch

    def bind_condition(self, score_for_condition, cond, sde, sampler, key):
        """The whole-image ``score_fn(x, t)`` for condition ``cond``, and the key left for sampling.

        Args:
          score_for_condition: ``score_for_condition(c) -> score_fn(x, t)``, the
            network (tiled as needed) bound to a whole-image condition ``c``.
          cond: the condition batch (``None`` for an unconditional model).
          sde, sampler: the run's process and the sampler about to run.
          key: the sampling key.

        Returns:
          ``(score_fn, key)``. The default binds the clean condition and keeps the
          key; the conditional estimators (CDiffE, CMDE) draw ``y_t`` from part of it.
        """
        del sde, sampler
        return score_for_condition(cond), key


class GeneratePipeline(Pipeline):
    """Unconditional (or class-conditional) generation: batches pass through."""

    name = "generate"


def row_rng(seed: int, step: int, row: int, stream: int = 0) -> np.random.Generator:
    """A numpy generator for one global row of one step (host-count independent)."""
    return np.random.default_rng([int(seed), int(step), int(row), int(stream)])
