"""Palette: conditions, training batches, configs, and smoke train + restore per config."""

from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs.default import get_base_config
from diffjax import builders, degradations
from diffjax.degradations import LUMA_WEIGHTS
from diffjax.pipelines.palette import (
    PaletteColorization,
    PaletteInpainting,
    PaletteJPEG,
    PaletteMultitask,
    PaletteUncropping,
)
from diffjax.tasks import palette as palette_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PALETTE_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "palette_*.py"))
                         if not p.endswith("palette_common.py"))
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(-1, 1, size=(4, 16, 16, 3)).astype(np.float32)


def _load(path, arg=None):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _batch(images=IMAGES):
    return {"image": images, "label": np.zeros(len(images), np.int32)}


# -- conditions ------------------------------------------------------------------
def test_inpainting_condition_keeps_known_pixels_noise_in_hole_and_mask_last():
    masks = np.stack([degradations.box_mask((16, 16), i) for i in range(4)])
    noise = RNG.normal(size=IMAGES.shape).astype(np.float32)
    cond = palette_lib.inpainting_condition(IMAGES, masks, noise)
    assert cond.shape == (4, 16, 16, 4)
    known = masks[..., None].repeat(3, -1) > 0.5
    np.testing.assert_array_equal(cond[..., :3][known], IMAGES[known])
    np.testing.assert_array_equal(cond[..., :3][~known], noise[~known])
    np.testing.assert_array_equal(cond[..., 3], masks)


def test_colorization_condition_is_bt601_luma():
    cond = palette_lib.colorization_condition(IMAGES)
    expected = 0.299 * IMAGES[..., 0] + 0.587 * IMAGES[..., 1] + 0.114 * IMAGES[..., 2]
    np.testing.assert_allclose(cond[..., 0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        palette_lib.colorization_condition(IMAGES[..., :1])


def test_jpeg_condition_is_the_codec_at_each_quality():
    cond = palette_lib.jpeg_condition(IMAGES[:2], [5, 30])
    np.testing.assert_array_equal(cond[0], degradations.jpeg_compress(IMAGES[0], 5))
    np.testing.assert_array_equal(cond[1], degradations.jpeg_compress(IMAGES[1], 30))
    assert np.abs(cond[0] - IMAGES[0]).mean() > np.abs(cond[1] - IMAGES[1]).mean()


# -- pipelines ---------------------------------------------------------------------
PIPELINES = [
    PaletteInpainting(),
    PaletteUncropping(),
    PaletteColorization(),
    PaletteJPEG(),
    PaletteMultitask(),
]


@pytest.mark.parametrize("pipeline", PIPELINES, ids=lambda p: p.name)
def test_prepare_batch_has_the_declared_layout_and_is_host_count_independent(pipeline):
    rows = np.arange(4)
    whole = pipeline.prepare_batch(_batch(), step=7, seed=3, rows=rows)
    assert whole["cond"].shape == (4, 16, 16, pipeline.cond_channels((16, 16, 3)))
    np.testing.assert_array_equal(whole["image"], IMAGES)
    # Two "hosts" with two rows each give the same rows.
    halves = [pipeline.prepare_batch(_batch(IMAGES[i : i + 2]), step=7, seed=3, rows=rows[i : i + 2])
              for i in (0, 2)]
    for key in whole:
        np.testing.assert_array_equal(whole[key], np.concatenate([h[key] for h in halves]))
    # Another step draws other degradations (colorization is deterministic).
    other = pipeline.prepare_batch(_batch(), step=8, seed=3, rows=rows)
    assert (pipeline.name == "palette_colorization") == np.array_equal(other["cond"], whole["cond"])


@pytest.mark.parametrize("pipeline", [PaletteInpainting(), PaletteUncropping()], ids=lambda p: p.name)
def test_mask_tasks_restrict_the_loss_to_the_hole(pipeline):
    out = pipeline.prepare_batch(_batch(), step=0, seed=0, rows=np.arange(4))
    mask_channel = out["cond"][..., -1:]
    np.testing.assert_array_equal(out["loss_mask"], 1.0 - mask_channel)
    assert 0 < out["loss_mask"].mean() < 1
    whole_image = type(pipeline)(hole_loss_only=False).prepare_batch(_batch(), step=0, seed=0, rows=np.arange(4))
    assert "loss_mask" not in whole_image


def test_uncropping_masks_are_halves_or_the_border():
    out = PaletteUncropping(directions=["all"]).prepare_batch(_batch(), step=0, seed=0, rows=np.arange(4))
    np.testing.assert_array_equal(out["cond"][0, ..., -1], degradations.uncrop_mask((16, 16), "all"))
    out = PaletteUncropping(directions=["left", "right"]).prepare_batch(_batch(), step=0, seed=0, rows=np.arange(4))
    for m in out["cond"][..., -1]:
        assert any(np.array_equal(m, degradations.half_mask((16, 16), s)) for s in ("left", "right"))


def test_jpeg_rows_use_a_quality_in_range():
    out = PaletteJPEG(quality_range=(5, 30)).prepare_batch(_batch(), step=0, seed=0, rows=np.arange(4))
    for image, cond in zip(IMAGES, out["cond"]):
        assert any(np.array_equal(cond, degradations.jpeg_compress(image, q)) for q in range(5, 31))


def test_multitask_rows_cover_every_task():
    pipeline = PaletteMultitask()
    images = np.repeat(IMAGES, 8, axis=0)
    out = pipeline.prepare_batch(_batch(images), step=0, seed=0, rows=np.arange(len(images)))
    assert out["cond"].shape[-1] == 4
    holes = out["cond"][..., -1].reshape(len(images), -1).min(axis=1) < 1
    gray = np.all(out["cond"][..., 0] == out["cond"][..., 1], axis=(1, 2)) & ~holes
    assert holes.any() and gray.any() and (~holes & ~gray).any()  # mask tasks, colorization, JPEG


def test_bad_pipeline_arguments_are_refused():
    with pytest.raises(ValueError, match="mask_kinds"):
        PaletteInpainting(mask_kinds=["squiggle"])
    with pytest.raises(ValueError, match="directions"):
        PaletteUncropping(directions=[])
    with pytest.raises(ValueError, match="quality_range"):
        PaletteJPEG(quality_range=(0, 30))
    with pytest.raises(ValueError, match="tasks"):
        PaletteMultitask(tasks=["deblur"])
    with pytest.raises(ValueError, match="RGB"):
        PaletteColorization().cond_channels((16, 16, 1))


# -- configs -----------------------------------------------------------------------
@pytest.mark.parametrize("arg", [None, "smoke"])
@pytest.mark.parametrize("path", PALETTE_CONFIGS + [os.path.join(ROOT, "configs", f"repaint_{d}.py")
                                                    for d in ("photos", "fashion_mnist")], ids=os.path.basename)
def test_config_loads_and_builds(path, arg):
    config = _load(path, arg)
    builders.validate_config(config, get_base_config())
    pipeline = builders.build_pipeline(config)
    assert pipeline.name == config.task.name
    dataset = builders.build_dataset(config, "train")
    model = nnx.eval_shape(lambda: builders.build_model(config, nnx.Rngs(0), dataset.image_shape)[0])
    assert model.config.cond_channels == pipeline.cond_channels(dataset.image_shape)
    if pipeline.name.startswith("palette"):
        assert not config.eval.enabled and config.training.sample_every == 0


# -- smoke train + restore -----------------------------------------------------------
def tiny(path):
    """A config file's smoke settings cut to 8x8 images and 2 steps (seconds on a CPU)."""
    c = _load(path, "smoke")
    c.data.image_size = 8
    c.model.channel_mult = (1,)
    c.training.num_steps = c.training.ckpt_every = 2
    c.training.log_every = 1
    c.training.progress_bar = False
    c.optim.warmup_steps = 1
    c.sampling.steps = 2
    c.sampling.batch_size = 2
    return c


def write_inputs(folder, kinds, channels=3, size=8):
    """One input file per kind: ``inp.png`` + mask, ``gray.png``, ``comp.jpg``."""
    os.makedirs(folder, exist_ok=True)
    rgb = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    img = rgb if channels == 3 else rgb[..., 0]
    if "inpainting" in kinds:
        Image.fromarray(img).save(os.path.join(folder, "inp.png"))
        mask = np.zeros((size, size), np.uint8)
        mask[2:5, 1:6] = 255
        Image.fromarray(mask).save(os.path.join(folder, "inp_mask.png"))
    if "colorization" in kinds:
        Image.fromarray(rgb[..., 1]).save(os.path.join(folder, "gray.png"))
    if "jpeg" in kinds:
        Image.fromarray(img).save(os.path.join(folder, "comp.jpg"), quality=10)
    return rgb


# The multi-task run covers every input kind; the single-task runs are slow-marked.
FAST = {"palette_multitask.py"}


@pytest.mark.parametrize(
    "path",
    [p if os.path.basename(p) in FAST else pytest.param(p, marks=pytest.mark.slow) for p in PALETTE_CONFIGS],
    ids=os.path.basename,
)
def test_smoke_train_then_restore(path, tmp_path):
    from sample import load_run_config, sample_from_workdir
    from train import train_and_evaluate

    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(tiny(path), workdir)
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"])
    config = load_run_config(workdir)
    kinds = builders.build_pipeline(config).input_kinds
    rgb = write_inputs(str(tmp_path / "in"), kinds)
    out = str(tmp_path / "out")
    info = sample_from_workdir(config, workdir, output=out, input_dir=str(tmp_path / "in"))
    import diffjax as dj

    assert isinstance(dj.load_run(workdir), dj.Run)  # a Palette run is a dj.Run
    expected = {"inpainting": "inp.png", "colorization": "gray.png", "jpeg": "comp.png"}
    assert sorted(os.listdir(out)) == sorted(expected[k] for k in kinds) and info["num"] == len(kinds)
    for name in os.listdir(out):
        restored = np.asarray(Image.open(os.path.join(out, name)))
        assert restored.shape == (8, 8, 3) and restored.dtype == np.uint8
    if "colorization" in kinds:  # the input's luma comes back, up to the 8-bit rounding of each channel
        restored = np.asarray(Image.open(os.path.join(out, "gray.png")), np.float64)
        luma = restored @ np.asarray(LUMA_WEIGHTS)
        assert np.abs(luma - rgb[..., 1]).max() <= 1.0
    if "inpainting" in kinds:  # known pixels come back exactly
        restored = np.asarray(Image.open(os.path.join(out, "inp.png")))
        keep = np.ones((8, 8), bool)
        keep[2:5, 1:6] = False
        np.testing.assert_array_equal(restored[keep], rgb[keep])
