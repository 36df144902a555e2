"""Parity of diffjax's NNX VQModel / AutoencoderKL with diffusers at a published size.

The folder comes from ``benchmarks/make_interop_fixtures.py --ldm-sr-vq DIR`` (the
LDM super-resolution first stage, CompVis/ldm-super-resolution-4x-openimages'
vqvae configuration, random weights, with diffusers' outputs in reference.npz).
Prints one JSON line and a table::

    python benchmarks/vae_parity.py --folder DIR
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from diffjax.nn.diffusers_vae import VQModel, vae_from_pretrained


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True,
                        help="config.json + diffusion_pytorch_model.safetensors + reference.npz")
    args = parser.parse_args()
    start = time.perf_counter()
    model = vae_from_pretrained(args.folder)
    load_s = time.perf_counter() - start
    ref = dict(np.load(os.path.join(args.folder, "reference.npz")))
    params = sum(int(np.prod(v[...].shape)) for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    row = {"model": type(model).__name__, "params": params, "image": list(ref["images"].shape),
           "load_s": round(load_s, 2)}

    if isinstance(model, VQModel):
        @nnx.jit
        def outputs(m, images, latents):
            return {"latents": m.encode(images), "indices": m.quantize_indices(latents), "decoded": m.decode(latents),
                    "decoded_not_quantized": m.decode(latents, force_not_quantize=True)}
    else:
        @nnx.jit
        def outputs(m, images, latents):
            mean, logvar = m.encode(images)
            return {"mean": mean, "logvar": logvar, "decoded": m.decode(latents)}

    latents = jnp.asarray(ref["latents"] if "latents" in ref else ref["mean"])
    start = time.perf_counter()
    out = jax.block_until_ready(outputs(model, jnp.asarray(ref["images"]), latents))
    row["first_call_s"] = round(time.perf_counter() - start, 2)
    for name, value in out.items():
        value = np.asarray(value)
        if name == "indices":
            row["indices_differing"] = int((value != ref[name]).sum())
        else:
            row[f"max_abs_diff_{name}"] = float(np.abs(value - ref[name]).max())
            row[f"max_abs_{name}"] = float(np.abs(ref[name]).max())
    print(json.dumps(row))
    width = max(len(k) for k in row)
    for key, value in row.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
