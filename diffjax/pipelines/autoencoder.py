"""The first stage of latent diffusion as a task: the autoencoder trains on clean batches (docs/ldm.md)."""

from __future__ import annotations

from diffjax.pipelines.base import Pipeline

__all__ = ["AutoencoderPipeline"]


class AutoencoderPipeline(Pipeline):
    """Train a KL autoencoder (:class:`diffjax.nn.Autoencoder`): batches pass through unchanged.

    The architecture and loss weights come from ``config.autoencoder``;
    ``sample.py --input IN --output OUT`` reconstructs every PNG of ``IN``.
    """

    name = "autoencoder"
    network = "autoencoder"
