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


def __getattr__(name):
    # The run layer (Flax, Orbax) loads only when a run is asked for.
    if name in ("DiffusersRun", "load_diffusers_run", "is_diffusers_folder", "read_diffusers_folder",
                "save_diffusers_folder"):
        from diffjax.interop import diffusers_run

        return getattr(diffusers_run, name)
    raise AttributeError(f"module 'diffjax.interop' has no attribute {name!r}")


__all__ = ["Schedule", "schedule_from_diffusers", "DiffusersRun", "load_diffusers_run", "is_diffusers_folder",
           "read_diffusers_folder", "save_diffusers_folder", "read_safetensors", "write_safetensors", "unet_from_diffusers", "load_unet_weights", "unet_state_dict"]
