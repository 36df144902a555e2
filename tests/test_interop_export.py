"""diffjax runs -> diffusers folders (``python -m diffjax.export``), and a converted run as a segmentation backbone.

The export is checked without PyTorch: a random diffjax UNet is written in
UNet2DModel's names and read back by :class:`DiffusersUNet2D`, which must compute the
same eps and the same per-block activations. ``test_diffusers_loads_the_export``
(slow, optional torch extra) loads the folder in diffusers itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.interop import unet_from_diffusers
from diffjax.interop.unet_export import export_problem, unet2d_config, unet2d_state_dict
from diffjax.nn import UNet, UNetConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPE = os.path.join(ROOT, "tests", "fixtures", "diffusers", "ddpm_pipeline")
# Exportable: sinusoidal step-index embedding, no residual rescale, one group count for every norm
# (diffjax picks min(32, channels // 2) groups: 32 everywhere once every norm has >= 64 channels).
TINY = dict(image_size=8, in_channels=3, base_channels=64, channel_mult=(1, 2), num_res_blocks=1,
            attn_resolutions=(4,), num_heads=2, time_embedding="sinusoidal", rescale_skip=False)
SDE = dj.DiscreteVPSDE(num_steps=50, beta_start=1e-3, beta_end=0.2)


def _random_unet(cfg: UNetConfig, seed: int = 0) -> UNet:
    """A UNet with every parameter drawn at random (the zero-initialised output layers too, so eps is not 0)."""
    model = UNet(cfg, rngs=nnx.Rngs(seed))
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    nnx.update(model, jax.tree_util.tree_unflatten(
        treedef, [leaf + 0.2 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]))
    return model


def _inputs(cfg, batch=2):
    x = jax.random.normal(jax.random.key(7), (batch, cfg.image_size, cfg.image_size, cfg.in_channels))
    return x, jnp.array([3.0, 41.0])[:batch]


def test_exported_weights_compute_the_same_eps_and_activations():
    cfg = UNetConfig(**TINY)
    assert export_problem(cfg, SDE, prediction="eps", time_input="index") is None
    model = _random_unet(cfg)
    theirs = unet_from_diffusers(unet2d_config(cfg), unet2d_state_dict(model))
    x, k = _inputs(cfg)
    forward = nnx.jit(lambda m, x, k: (m(x, k), m.activations(x, k)))
    (ours_eps, a), (their_eps, b) = forward(model, x, k), forward(theirs, x, k)
    assert np.abs(ours_eps).mean() > 0.1
    np.testing.assert_allclose(np.asarray(their_eps), np.asarray(ours_eps), atol=2e-5 * np.abs(ours_eps).max(),
                               rtol=1e-5)
    # The segmentation features read the same blocks under the same names (float32 tolerance at their scale).
    assert set(a) == set(b) == set(model.activation_names()) == set(theirs.activation_names())
    for name in a:
        scale = float(np.abs(a[name]).max())
        np.testing.assert_allclose(np.asarray(b[name]), np.asarray(a[name]), atol=1e-5 * scale, err_msg=name)


@pytest.mark.parametrize("change, option", [
    (dict(rescale_skip=True), "model.rescale_skip"),
    (dict(time_embedding="fourier"), "model.time_embedding"),
    (dict(time_scale=1000.0), "model.time_scale"),
    (dict(base_channels=16), "group counts"),  # 16 channels: 8 groups; 32: 16 groups
    (dict(attn_resolutions=(8, 4)), "model.num_heads"),  # heads over 64 and 128 channels
    (dict(resample_with_conv=False), "model.resample_with_conv"),
])
def test_inexpressible_options_are_named(change, option):
    cfg = UNetConfig(**{**TINY, **change})
    assert option in export_problem(cfg, SDE, prediction="eps", time_input="index")


def test_continuous_process_is_refused():
    cfg = UNetConfig(**TINY)
    assert "sde.name='discrete'" in export_problem(cfg, dj.VPSDE(), prediction="eps", time_input="t")
    assert "prediction" in export_problem(cfg, SDE, prediction="score", time_input="index")


def _write_trained_run(workdir: str, **model_overrides) -> UNet:
    """A run folder as train.py leaves one, holding a random exportable UNet (no training needed)."""
    from diffjax.convert import write_run_files
    from diffjax.run_config import get_base_config

    c = get_base_config()
    c.data.image_size, c.data.channels = 8, 3
    for key, value in {**TINY, **model_overrides}.items():
        if key not in ("image_size", "in_channels"):
            c.model[key] = value
    c.sde.name, c.sde.num_steps, c.sde.beta_start, c.sde.beta_end = "discrete", 50, 1e-3, 0.2
    c.loss.time_input = "index"
    c.sampling.sampler, c.sampling.steps = "ddim", 5
    cfg = UNetConfig(**{**TINY, **model_overrides})
    model = _random_unet(cfg)
    write_run_files(workdir, c, cfg, model)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model = _write_trained_run(str(root / "run"))
    proc = subprocess.run([sys.executable, "-m", "diffjax.export", str(root / "run"), "--output", str(root / "out")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return str(root / "run"), str(root / "out"), model


def test_export_command_writes_a_folder_that_loads_back(exported):
    workdir, out, model = exported
    assert sorted(os.listdir(out)) == ["model_index.json", "scheduler", "unet"]
    with open(os.path.join(out, "model_index.json")) as f:
        assert json.load(f)["_class_name"] == "DDIMPipeline"
    run, back = dj.load_run(workdir), dj.load_run(out)
    assert back.sde.num_steps == 50 and back.sde.beta_end == pytest.approx(0.2)
    x, _ = _inputs(model.config)
    t = jnp.array([0.3, 0.9])
    np.testing.assert_allclose(np.asarray(back.score_fn(x, t)), np.asarray(run.score_fn(x, t)), rtol=1e-4, atol=1e-4)


def test_export_refusals_are_one_line(tmp_path):
    _write_trained_run(str(tmp_path / "run"), rescale_skip=True)
    proc = subprocess.run([sys.executable, "-m", "diffjax.export", str(tmp_path / "run"), "--output",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=600, cwd=ROOT)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "model.rescale_skip" in lines[0], proc.stderr
    assert sorted(os.listdir(tmp_path)) == ["run"]  # nothing written


def test_converted_run_is_a_segmentation_backbone(tmp_path):
    """A converted diffusers model gives the DDPM features of a pixel classifier (smoke size)."""
    from configs.segmentation_ddpm_features import get_config as features_config
    from diffjax.convert import convert
    from diffjax.data.scenes import write_folder
    from diffjax.run_config import apply_overrides
    from diffjax.run_kinds import train_and_evaluate

    backbone = convert(PIPE, str(tmp_path / "backbone"))
    write_folder(str(tmp_path / "labelled"), 5, image_size=8)
    c = features_config("smoke")
    c.data.image_size = 8
    c = apply_overrides(c, {"segmentation.labelled_dir": str(tmp_path / "labelled"), "data.eval_fraction": 0.2,
                            "segmentation.num_labelled": 0, "segmentation.backbone_workdir": backbone,
                            "segmentation.blocks": ("up_0", "up_1"), "segmentation.times": (0.1,),
                            "segmentation.steps": 20, "segmentation.num_members": 2})
    summary = train_and_evaluate(c, str(tmp_path / "seg"))
    assert summary["num_labelled"] == 4 and 0.0 <= summary["miou"] <= 1.0
    # up_0, up_1: the resnets of the up block nearest the middle (block_out_channels[-1] channels each).
    channels = json.load(open(os.path.join(PIPE, "unet", "config.json")))["block_out_channels"][-1]
    assert summary["num_features"] == 2 * channels


_LOAD_IN_DIFFUSERS = """
import sys, numpy as np, torch
from diffusers import DDPMScheduler, DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained(sys.argv[1])
io = np.load(sys.argv[2])
with torch.no_grad():
    y = pipe.unet(torch.from_numpy(io["x"]), torch.from_numpy(io["t"])).sample.numpy()
scheduler = DDPMScheduler.from_pretrained(sys.argv[1], subfolder="scheduler")
np.savez(sys.argv[3], y=y, alphas_cumprod=scheduler.alphas_cumprod.numpy(), pipeline=type(pipe).__name__)
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_diffusers_loads_the_export(exported, tmp_path):
    """diffusers' own UNet2DModel (PyTorch) loads the exported folder and computes the diffjax UNet's eps."""
    from test_interop_fullsize import _torch_python

    python = _torch_python()
    _, out, model = exported
    x, k = _inputs(model.config)
    np.savez(tmp_path / "io.npz", x=np.asarray(x).transpose(0, 3, 1, 2), t=np.asarray(k, np.int64))
    subprocess.run([python, "-c", _LOAD_IN_DIFFUSERS, out, str(tmp_path / "io.npz"), str(tmp_path / "y.npz")],
                   check=True, timeout=1500)
    got = np.load(tmp_path / "y.npz")
    assert str(got["pipeline"]) == "DDIMPipeline"
    want = np.asarray(nnx.jit(lambda m, x, k: m(x, k))(model, x, k))
    err = np.abs(got["y"].transpose(0, 2, 3, 1) - want).max() / np.abs(want).max()
    assert err < 1e-5, f"max error {err:.2e} of the output scale"
    alpha, _ = SDE.alpha_sigma((jnp.arange(50) + 1.0) / 50)
    np.testing.assert_allclose(got["alphas_cumprod"], np.asarray(alpha) ** 2, rtol=1e-5)
