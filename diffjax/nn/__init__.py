"""Flax NNX networks. Imports none of the diffusion math (see DESIGN.md)."""

from diffjax.nn.embeddings import FixedFrequencies, GaussianFourierEmbedding, sinusoidal_embedding
from diffjax.nn.unet import UNet, UNetConfig, num_parameters

__all__ = [
    "UNet",
    "UNetConfig",
    "num_parameters",
    "FixedFrequencies",
    "GaussianFourierEmbedding",
    "sinusoidal_embedding",
]
