"""Flax NNX networks. Imports none of the diffusion math (see DESIGN.md)."""

from diffjax.nn.embeddings import FixedFrequencies, GaussianFourierEmbedding, LabelTokens, sinusoidal_embedding
from diffjax.nn.unet import UNet, UNetConfig, num_parameters
from diffjax.nn.classifier import Classifier, ClassifierConfig
from diffjax.nn.autoencoder import Autoencoder, AutoencoderConfig, PatchDiscriminator
from diffjax.nn.vae import VAE, LatentPrior, VAEConfig

__all__ = [
    "UNet",
    "UNetConfig",
    "num_parameters",
    "Classifier",
    "ClassifierConfig",
    "Autoencoder",
    "AutoencoderConfig",
    "PatchDiscriminator",
    "VAE",
    "VAEConfig",
    "LatentPrior",
    "FixedFrequencies",
    "GaussianFourierEmbedding",
    "LabelTokens",
    "sinusoidal_embedding",
]
