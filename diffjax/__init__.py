"""diffjax: diffusion models for image restoration, translation and segmentation in JAX.

The functional core (processes, conversions, samplers, likelihoods) is pure JAX
and knows nothing of Flax: any ``score_fn(x, t)`` drives it.
"""

from diffjax import degradations, guidance, parametrization, samplers, tasks
from diffjax.likelihood import bits_per_dim, log_likelihood
from diffjax.samplers import sample
from diffjax.sde import SDE, CosineVPSDE, DiscreteVPSDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "CosineVPSDE",
    "DiscreteVPSDE",
    "sample",
    "samplers",
    "parametrization",
    "degradations",
    "guidance",
    "tasks",
    "log_likelihood",
    "bits_per_dim",
]
