"""diffusers ``UNet2DModel`` weights <-> :class:`diffjax.nn.diffusers_unet.DiffusersUNet2D`.

The NNX module names its parameters as diffusers does and keeps PyTorch's
layouts, so a state-dict key is the module path joined with dots. Checkpoints
are read with ``safetensors``' NumPy API (no PyTorch, nothing unpickled).
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.nn.diffusers_unet import DiffusersUNet2D

__all__ = ["read_safetensors", "write_safetensors", "unet_from_diffusers", "load_unet_weights", "unet_state_dict"]

# Attention keys of diffusers' pre-0.14 ``AttentionBlock`` (still in old hub folders) -> today's names.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """``{key: float32 array}`` of a ``.safetensors`` file (half precision is widened).

    Raises:
      ValueError: a missing file or one that is not a safetensors file.
    """
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise ValueError(f"no safetensors file at {path}")
    try:
        state = load_file(path)
    except Exception as e:  # the library raises its own error types for bad headers / dtypes
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from e
    return {k: np.asarray(v, np.float32) if np.issubdtype(v.dtype, np.floating) else np.asarray(v)
            for k, v in state.items()}


def write_safetensors(state: dict[str, np.ndarray], path: str) -> None:
    """Write ``{key: array}`` as float32 safetensors."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in state.items()}, path)


def _modern_key(key: str) -> str:
    parts = key.split(".")
    if len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION and "attentions" in parts:
        return ".".join(parts[:-2] + [_LEGACY_ATTENTION[parts[-2]], parts[-1]])
    return key


def _flat_params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {".".join(str(p) for p in path): var for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def load_unet_weights(model: DiffusersUNet2D, state: dict[str, np.ndarray]) -> DiffusersUNet2D:
    """Copy a diffusers state dict into ``model`` in place (and return it).

    Legacy attention names (``query``/``key``/``value``/``proj_attn``) are renamed
    and 1x1-convolution attention weights squeezed to linear ones.

    Raises:
      ValueError: listing every missing key, unexpected key and shape mismatch.
    """
    params = _flat_params(model)
    given = {}
    for key, value in state.items():
        key = _modern_key(key)
        value = np.asarray(value)
        target = params.get(key)
        if target is not None and value.ndim == 4 and target.get_value().ndim == 2 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        given[key] = value
    missing = sorted(set(params) - set(given))
    unexpected = sorted(set(given) - set(params))
    mismatched = sorted(f"{k}: checkpoint {given[k].shape}, model {tuple(params[k].get_value().shape)}"
                        for k in set(given) & set(params) if tuple(given[k].shape) != tuple(params[k].get_value().shape))
    if missing or unexpected or mismatched:
        lines = []
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                lines.append(f"{title} ({len(items)}): " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise ValueError("the checkpoint does not fit the UNet2DModel its config describes:\n  " + "\n  ".join(lines))
    for key, var in params.items():
        var.set_value(jnp.asarray(given[key], jnp.float32))
    return model


def unet_from_diffusers(config: dict, state: dict[str, np.ndarray]) -> DiffusersUNet2D:
    """Build the NNX ``UNet2DModel`` of a diffusers ``config.json`` dict and load a flat state dict into it.

    Args:
      config: the UNet's ``config.json`` as a dict (``_class_name`` ``UNet2DModel``).
      state: ``{diffusers_key: array}`` (e.g. :func:`read_safetensors`), PyTorch layouts.

    Returns:
      A :class:`~diffjax.nn.diffusers_unet.DiffusersUNet2D`; ``model(x_nhwc, timesteps)`` equals
      ``UNet2DModel(**config)(x_nchw, timesteps).sample`` transposed to NHWC.

    Raises:
      ValueError: an unsupported config, or a state dict that does not fit it.
    """
    model = nnx.eval_shape(lambda: DiffusersUNet2D(config, rngs=nnx.Rngs(0)))
    return load_unet_weights(model, state)


def unet_state_dict(model: DiffusersUNet2D) -> dict[str, np.ndarray]:
    """The diffusers state dict of ``model`` (``{key: float32 numpy}``), ready for :func:`write_safetensors`."""
    return {k: np.asarray(v.get_value(), np.float32) for k, v in _flat_params(model).items()}
