"""Full-size published UNet2DModel architectures (random weights) against diffusers: slow, needs PyTorch.

PyTorch runs in a subprocess: ``DIFFJAX_TORCH_PYTHON`` names a Python with torch + diffusers (the
``interop-test`` extra); by default the current interpreter. Without one the tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from diffjax.interop import read_safetensors, unet_from_diffusers
from diffjax.interop.published_configs import PUBLISHED_UNETS

pytestmark = pytest.mark.slow
WORKER = os.path.join(os.path.dirname(__file__), "interop_torch_worker.py")


def _torch_python():
    python = os.environ.get("DIFFJAX_TORCH_PYTHON", sys.executable)
    ok = subprocess.run([python, "-c", "import torch, diffusers"], capture_output=True).returncode == 0
    if not ok:
        pytest.skip(f"no PyTorch + diffusers in {python}; set DIFFJAX_TORCH_PYTHON (the interop-test extra)")
    return python


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("name", sorted(PUBLISHED_UNETS))
def test_published_architecture_matches_diffusers(tmp_path, name):
    python = _torch_python()
    config = PUBLISHED_UNETS[name]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    subprocess.run([python, WORKER, str(path), str(tmp_path)], check=True, timeout=3000)
    model = unet_from_diffusers(config, read_safetensors(str(tmp_path / "weights.safetensors")))
    io = np.load(tmp_path / "io.npz")
    out = nnx.jit(lambda m, x, t: m(x, t))(model, jnp.asarray(io["x"].transpose(0, 2, 3, 1)), jnp.asarray(io["t"]))
    want = io["y"].transpose(0, 2, 3, 1)
    err = np.abs(np.asarray(out) - want).max() / np.abs(want).max()
    print(f"{name}: max abs difference {np.abs(np.asarray(out) - want).max():.3e}, output scale "
          f"{np.abs(want).max():.3e}, relative {err:.3e}")
    assert err < 1e-4, f"{name}: max error {err:.2e} of the output scale"


_LOAD_EXPORT = """
import sys, numpy as np, torch
from diffusers import DDPMPipeline
pipe = DDPMPipeline.from_pretrained(sys.argv[1])
io = np.load(sys.argv[2])
with torch.no_grad():
    y = pipe.unet(torch.from_numpy(io["x"]), torch.from_numpy(io["t"])).sample.numpy()
np.save(sys.argv[3], y)
"""


def test_exported_folder_loads_in_diffusers(tmp_path):
    """save_diffusers_folder writes what DDPMPipeline.from_pretrained loads, with the same outputs."""
    from diffjax.interop import load_diffusers_run, save_diffusers_folder

    python = _torch_python()
    fix = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers")
    run = load_diffusers_run(os.path.join(fix, "ddpm_pipeline"))
    save_diffusers_folder(run, str(tmp_path / "export"))
    ref = np.load(os.path.join(fix, "reference.npz"))
    np.savez(tmp_path / "io.npz", x=ref["ddpm_tiny/x"], t=ref["ddpm_tiny/t"])
    subprocess.run([python, "-c", _LOAD_EXPORT, str(tmp_path / "export"), str(tmp_path / "io.npz"),
                    str(tmp_path / "y.npy")], check=True, timeout=600)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref["ddpm_tiny/out"], atol=1e-5, rtol=1e-5)


_DDPM_PIPELINE = """
import sys, numpy as np, torch
import diffusers.pipelines.ddpm.pipeline_ddpm as pipeline_ddpm
import diffusers.schedulers.scheduling_ddpm as scheduling_ddpm
from diffusers import DDPMPipeline
io = np.load(sys.argv[2])
noises = [torch.from_numpy(n) for n in io["noise"]]
pipeline_ddpm.randn_tensor = lambda *a, **k: torch.from_numpy(io["x_T"].copy())
scheduling_ddpm.randn_tensor = lambda *a, **k: noises.pop(0)
pipe = DDPMPipeline.from_pretrained(sys.argv[1])
np.save(sys.argv[3], pipe(batch_size=len(io["x_T"]), output_type="np").images)
"""


def test_ddpm_pipeline_chain_matches_with_the_same_noise(tmp_path):
    """run.sampler of a DDPMPipeline folder (1000 ancestral steps) = DDPMPipeline's loop given diffjax's noise draws."""
    import jax

    import diffjax as dj
    from diffjax.interop import load_diffusers_run

    python = _torch_python()
    pipe = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers", "ddpm_pipeline")
    run = load_diffusers_run(pipe)
    key = jax.random.key(3)
    x_T = jax.random.normal(jax.random.key(4), (2, 8, 8, 3))
    x0, _ = jax.jit(lambda x: dj.sample(run.score_fn, run.sde, x, key=key, sampler=run.sampler))(x_T)
    # Ancestral's step i draws normal(fold_in(key, i)); the last step (timestep 0) draws none.
    noise = np.stack([np.asarray(jax.random.normal(jax.random.fold_in(key, i), x_T.shape)).transpose(0, 3, 1, 2)
                      for i in range(999)])
    np.savez(tmp_path / "io.npz", x_T=np.asarray(x_T).transpose(0, 3, 1, 2), noise=noise)
    subprocess.run([python, "-c", _DDPM_PIPELINE, pipe, str(tmp_path / "io.npz"), str(tmp_path / "out.npy")],
                   check=True, timeout=1800)
    np.testing.assert_allclose(np.clip(np.asarray(x0) / 2 + 0.5, 0, 1), np.load(tmp_path / "out.npy"), atol=1e-3)
