"""diffjax: diffusion models for image restoration, translation and segmentation in JAX.

The functional core (processes, conversions, samplers, likelihoods) is pure JAX
and knows nothing of Flax: any ``score_fn(x, t)`` drives it.
"""

from diffjax import degradations, guidance, parametrization, samplers, tasks, tiling
from diffjax.likelihood import bits_per_dim, log_likelihood
from diffjax.samplers import sample
from diffjax.sde import SDE, CosineVPSDE, DiscreteVPSDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"

# Runs (train / load_run / Run) pull in Flax, Optax and Orbax, and the networks,
# metrics and data sets are heavy too: imported on first use so that
# ``import diffjax`` stays light for code that only samples.
_LAZY = {"train": "diffjax.runs", "load_run": "diffjax.runs", "Run": "diffjax.runs"}
_LAZY_MODULES = ("metrics", "data", "nn")


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(f"diffjax.{name}")
    else:
        raise AttributeError(f"module 'diffjax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_LAZY_MODULES))

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
    "tiling",
    "log_likelihood",
    "bits_per_dim",
    "train",
    "load_run",
    "Run",
    "metrics",
    "data",
    "nn",
]
