"""Run in a Python with PyTorch + diffusers: build UNet2DModel(**config) with seeded random weights, write its
safetensors, an input and its output. Used by the slow tests of tests/test_interop_fullsize.py.

    python tests/interop_torch_worker.py CONFIG_JSON OUT_DIR
"""

import json
import os
import sys

import numpy as np
import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file


def main(config_path, out):
    with open(config_path) as f:
        config = json.load(f)
    torch.manual_seed(0)
    model = UNet2DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():  # every layer non-trivial (default init zeroes some outputs)
            p.copy_(torch.randn_like(p) * 0.02)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "weights.safetensors"))
    size = config["sample_size"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, config.get("in_channels", 3), size, size)).astype(np.float32)
    t = np.array([0.3], np.float32) if config.get("time_embedding_type") == "fourier" else np.array([421], np.int64)
    with torch.no_grad():
        y = model(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    np.savez(os.path.join(out, "io.npz"), x=x, t=t, y=y)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
