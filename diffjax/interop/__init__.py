"""Published diffusers checkpoints in diffjax: networks, schedulers and whole pipelines.

Nothing here imports PyTorch or diffusers: weights are read with safetensors'
NumPy API and configs are plain JSON.
"""

from diffjax.interop.diffusers_weights import (
    load_unet_weights,
    read_safetensors,
    unet_from_diffusers,
    unet_state_dict,
    write_safetensors,
)

from diffjax.interop.diffusers_schedulers import Schedule, schedule_from_diffusers

from diffjax.interop.diffusers_run import (
    DiffusersRun,
    is_diffusers_folder,
    load_diffusers_run,
    read_diffusers_folder,
    save_diffusers_folder,
)

from diffjax.interop.diffusers_latent import LatentDiffusersRun, is_latent_pipeline, load_latent_run

__all__ = ["LatentDiffusersRun", "load_latent_run", "is_latent_pipeline", "Schedule", "schedule_from_diffusers", "DiffusersRun", "load_diffusers_run", "is_diffusers_folder",
           "read_diffusers_folder", "save_diffusers_folder", "read_safetensors", "write_safetensors",
           "unet_from_diffusers", "load_unet_weights", "unet_state_dict"]
