"""Runs from Python: ``dj.train``, ``dj.load_run``, ``run.generate`` / ``run.restore`` / ``run.score_fn``.

The array API and ``sample.py`` share one code path, so for the same seed they
give the same images: checked against the PNG files ``sample.py`` writes (up to
8-bit rounding). Restoring images larger than the network samples them whole
with the score blended over overlapping tiles: checked to leave no seam.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import diffjax as dj
from diffjax import builders
from diffjax.pipelines.palette import PaletteColorization
from diffjax.pipelines.repaint import RepaintPipeline
from diffjax.pipelines.restoration import RestorationInput, restore_inputs
from diffjax.tiling import tile_offsets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tests/train_fixtures.tiny_config as dotted overrides of the digits smoke config.
TINY = {
    "data.image_size": 8, "model.base_channels": 8, "model.channel_mult": (1,), "model.attn_resolutions": (),
    "training.num_steps": 2, "training.batch_size": 8, "training.log_every": 1, "training.ckpt_every": 2,
    "training.sample_every": 0, "training.progress_bar": False, "optim.warmup_steps": 1, "eval.enabled": False,
    "sampling.steps": 2, "sampling.num_samples": 3, "sampling.batch_size": 2,
}


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _close_to_png(array01: np.ndarray, png: np.ndarray) -> None:
    """The API's float output and sample.py's PNG agree up to the PNG's 8-bit rounding."""
    png = png[..., None] if png.ndim == 2 else png
    assert array01.dtype == np.float32 and array01.shape == png.shape
    np.testing.assert_allclose(array01 * 255.0, png.astype(np.float32), atol=0.5 + 1e-3)


# -- one run for both APIs: RePaint's unconditional model on the digits --------------------
# Trained from a config file + overrides (the digits instead of Fashion-MNIST keep it
# seconds long); its task both generates (run.generate) and inpaints (run.restore).
REPAINT = {**TINY, "data.name": "digits", "task.repaint.steps": 4, "task.repaint.jump_length": 1,
           "task.repaint.jump_n_sample": 2}


@pytest.fixture(scope="module")
def repaint_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "repaint")
    summary = dj.train(os.path.join(ROOT, "configs", "repaint_fashion_mnist.py") + ":smoke", workdir,
                       overrides=REPAINT)
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"])
    return workdir


@pytest.fixture(scope="module")
def run(repaint_run):
    return dj.load_run(repaint_run)


def test_generate_matches_sample_py_and_score_fn_drives_dj_sample(repaint_run, run, tmp_path):
    from sample import load_run_config, sample_from_workdir

    assert run.step == 2 and run.task == "repaint" and run.image_shape == (8, 8, 1)
    images = run.generate(3)  # key=None: config.sampling.seed, as sample.py
    assert images.shape == (3, 8, 8, 1) and images.dtype == np.float32
    out = tmp_path / "out"
    sample_from_workdir(load_run_config(repaint_run), repaint_run, output=str(out), num=3)
    for i in range(3):
        _close_to_png(images[i], _png(out / f"{i:06d}.png"))
    # Another key gives other images; an int seed is the same as its key.
    other = run.generate(3, key=jax.random.key(7))
    assert np.abs(other - images).max() > 0.05
    np.testing.assert_array_equal(other, run.generate(3, key=7))
    # run.score_fn in dj.sample reproduces the first batch (2 images) exactly: batch 0 uses fold_in(key, 0).
    prior_key, sample_key = jax.random.split(jax.random.fold_in(jax.random.key(run.config.sampling.seed), 0))
    x_init = run.sde.prior_sample(prior_key, (2, *run.image_shape))
    sample = jax.jit(functools.partial(dj.sample, run.score_fn, run.sde, sampler=builders.build_sampler(run.config),
                                       denoise=run.config.sampling.denoise))
    x0, _ = sample(x_init, key=sample_key)
    np.testing.assert_allclose((np.clip(np.asarray(x0), -1, 1) + 1) / 2, images[:2], atol=1e-5)


def test_restore_matches_sample_py_and_keeps_known_pixels(repaint_run, run, tmp_path):
    from sample import load_run_config, sample_from_workdir

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = np.random.default_rng(1).integers(0, 256, (8, 8), dtype=np.uint8)
    fill = np.zeros((8, 8), np.uint8)
    fill[2:5, 1:6] = 255
    Image.fromarray(image).save(inputs / "inp.png")
    Image.fromarray(fill).save(inputs / "inp_mask.png")
    sample_from_workdir(load_run_config(repaint_run), repaint_run, output=str(out), input_dir=str(inputs))
    keep = fill == 0
    restored = run.restore(image[..., None], masks=keep)  # uint8 HWC in, 1 = keep
    _close_to_png(restored, _png(out / "inp.png"))
    np.testing.assert_allclose(restored[keep] * 255, image[keep][:, None], atol=0.5 + 1e-3)
    # Floats in [0, 1], a batch axis and a jax array give the same result.
    batch = run.restore(jnp.asarray(image[None, ..., None] / 255.0, jnp.float32), masks=keep[None, ..., None])
    np.testing.assert_allclose(batch[0], restored, atol=1e-5)


def test_restore_takes_images_larger_than_the_model(run):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (13, 18, 1), dtype=np.uint8)  # 8x8 model: 2 x 3 tiles
    keep = np.ones((13, 18), bool)
    keep[4:9, 5:14] = False
    restored = run.restore(image, masks=keep)
    assert restored.shape == (13, 18, 1) and np.isfinite(restored).all()
    np.testing.assert_allclose(restored[keep] * 255, image[keep], atol=0.5 + 1e-3)
    with pytest.raises(ValueError, match=r"images\[0\] is 6x7 \(WxH\), smaller than the model's 8x8"):
        run.restore(image[:7, :6], masks=keep[:7, :6])


def test_a_run_lists_its_capabilities_and_refuses_the_others(run):
    assert isinstance(run, dj.Run)
    assert {"generate", "restore", "translate", "score_fn", "sde", "sampler"} <= set(run.capabilities)
    assert isinstance(run.sampler, dj.samplers.Sampler)
    image = np.zeros((8, 8, 1), np.uint8)
    for call, name in ((lambda: run.nll_bound(image), "nll_bound"), (lambda: run.encode(image), "encode"),
                       (lambda: run.decode(np.zeros((2, 2, 4), np.float32)), "decode"),
                       (lambda: run.predict(image), "predict"), (lambda: run.log_probs(image), "log_probs")):
        with pytest.raises(ValueError, match=rf"run\.{name}: .*'repaint' run .*it can: \['generate', 'restore'"):
            call()
    with pytest.raises(ValueError, match="context needs a 'generate' run with cross-attention"):
        run.generate(2, context=np.zeros((2, 1, 4), np.float32))


def test_translate_takes_images_larger_than_the_model(run):
    # SDEdit on a 13x18 guide with an 8x8 network: the score is blended over tiles, as restore does.
    guide = np.random.default_rng(1).uniform(0, 1, (13, 18, 1)).astype(np.float32)
    out = run.translate(guide, method="sdedit", t0=0.3, key=0)
    assert out.shape == guide.shape and np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="sides of at least 8"):
        run.translate(guide[:7], method="sdedit")
    with pytest.raises(ValueError, match="EGSDE's domain classifier sees whole images"):
        run.translate(guide, method="egsde")


@pytest.mark.parametrize("call,message", [
    (lambda: dj.load_run("/nonexistent/run"), "does not exist"),
    (lambda: dj.train(os.path.join(ROOT, "configs", "nope.py"), "/tmp/x"), "does not exist"),
    (lambda: dj.train(42, "/tmp/x"), "ConfigDict or a 'path/to/config.py"),
    (lambda: dj.train(os.path.join(ROOT, "configs", "ddpm_digits.py:smoke"), "/tmp/x",
                      overrides={"training.bacth_size": 4}), "unknown config key 'bacth_size'.*'batch_size'"),
    (lambda: dj.train(os.path.join(ROOT, "configs", "ddpm_digits.py:smoke"), "/tmp/x",
                      overrides={"training.num_steps": "many"}), "training.num_steps='many'.*int"),
    (lambda: dj.train(os.path.join(ROOT, "configs", "ddpm_digits.py:smoke"), "/tmp/x",
                      overrides={"training": 3}), "whole section"),
], ids=["missing-workdir", "missing-config", "config-type", "override-typo", "override-type", "override-section"])
def test_bad_run_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bad_load_and_generate_arguments(repaint_run, run):
    assert dj.load_run(repaint_run, overrides={"sampling.steps": 3}).config.sampling.steps == 3
    with pytest.raises(ValueError, match="unknown config key 'stepz'.*Did you mean 'steps'"):
        dj.load_run(repaint_run, overrides={"sampling.stepz": 3})
    with pytest.raises(ValueError, match="n must be an integer >= 1, got 0"):
        run.generate(0)
    with pytest.raises(ValueError, match="key must be"):
        run.generate(2, key="seven")
    with pytest.raises(ValueError, match="sampler must be a diffjax.samplers sampler"):
        run.generate(2, sampler="ddim")
    with pytest.raises(ValueError, match="labels need a class-conditional generation run"):
        run.generate(2, labels=[0, 1])


def test_class_conditional_generate_takes_labels_and_sample_py_writes_each_class(tmp_path):
    workdir = str(tmp_path / "labelled")
    dj.train(os.path.join(ROOT, "configs", "ddpm_digits.py:smoke"), workdir,
             overrides={**TINY, "data.use_labels": True, "sampling.batch_size": 4, "training.num_steps": 6,
                       "training.ckpt_every": 6, "training.ema_decay": 0.0})  # EMA = the trained weights
    run = dj.load_run(workdir)
    ones, twos = run.generate(4, key=3, labels=np.full(4, 1)), run.generate(4, key=3, labels=np.full(4, 2))
    assert np.abs(ones - twos).max() > 1e-3  # the labels reach the network
    np.testing.assert_array_equal(run.generate(4, key=3, labels=np.full(4, 1)), ones)
    # Per image, not per batch: image j depends only on its own label.
    mixed = run.generate(4, key=3, labels=np.array([1, 2, 1, 2]))
    np.testing.assert_allclose(mixed[0], ones[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], twos[1], atol=1e-5)
    for labels, message in [(np.zeros(3, np.int32), r"shape \(4,\)"), (np.zeros(4), "integers"),
                            (np.full(4, 11), r"\[0, 10\]")]:
        with pytest.raises(ValueError, match=message):
            run.generate(4, labels=labels)
    # sample.py: --num images per class, named by class, equal to run.generate's default labels.
    from sample import load_run_config, sample_from_workdir

    out = str(tmp_path / "per_class")
    assert sample_from_workdir(load_run_config(workdir), workdir, output=out, num=1)["num"] == 10
    names = sorted(n for n in os.listdir(out) if n != "grid.png")
    assert names == [f"{k:06d}_class{k}.png" for k in range(10)]
    default = run.generate(10)  # arange(10) % 10: the same labels, batches and keys
    for k, name in enumerate(names):
        _close_to_png(default[k], _png(os.path.join(out, name)))


@pytest.mark.parametrize("kwargs,message", [
    ({"images": np.zeros((8, 8, 1), np.int32)}, "uint8 or floating point in \\[0, 1\\], got dtype int32"),
    ({"images": np.full((8, 8, 1), 2.0)}, "floats in \\[0, 1\\] or uint8.*got floats in \\[2, 2\\]"),
    ({"images": np.full((8, 8, 1), np.nan)}, "NaN"),
    ({"images": np.zeros((8, 8))}, "one image \\(H, W, C\\) or a batch"),
    ({"images": np.zeros((8, 8, 4))}, "1 \\(grayscale\\) or 3 \\(RGB\\) channels"),
    ({"images": np.random.default_rng(0).random((8, 8, 3)), "masks": np.eye(8) == 0},
     "images\\[0\\] is a colour image; this model takes grayscale"),
    ({"images": np.zeros((8, 8, 1))}, "needs masks \\(1 = keep, 0 = fill\\)"),
    ({"images": np.zeros((8, 8, 1)), "masks": np.full((8, 8), 255, np.uint8)}, "1 = keep and 0 = fill"),
    ({"images": np.zeros((8, 8, 1)), "masks": np.ones((8, 8))}, "masks\\[0\\] is empty: there is nothing to fill"),
    ({"images": np.zeros((8, 8, 1)), "masks": np.zeros((8, 8))}, "covers the whole image: there is no known pixel"),
    ({"images": np.zeros((8, 8, 1)), "masks": np.ones((9, 8))}, "must be \\(H, W\\) or \\(N, H, W\\)"),
    ({"images": np.zeros((8, 8, 1)), "masks": np.eye(8) == 0, "sampler": dj.samplers.DDIM(3)},
     "RePaint walks its own schedule"),
], ids=["dtype", "range", "nan", "rank", "channels", "colour-to-gray-model", "no-masks", "mask-255",
        "mask-nothing-to-fill", "mask-nothing-known", "mask-shape", "sampler-for-repaint"])
def test_restore_refuses_bad_arrays(run, kwargs, message):
    kwargs = dict(kwargs)
    with pytest.raises(ValueError, match=message):
        run.restore(kwargs.pop("images"), **kwargs)


# -- Palette: task kinds through the array API (slow: a conditional run of its own) -------
@pytest.fixture(scope="module")
def palette_run(tmp_path_factory):
    from test_palette import tiny

    config = tiny(os.path.join(ROOT, "configs", "palette_multitask.py"))
    workdir = str(tmp_path_factory.mktemp("runs") / "palette")
    dj.train(config, workdir)
    return workdir


@pytest.mark.slow
def test_palette_restore_matches_sample_py_for_each_kind(palette_run, tmp_path):
    from sample import load_run_config, sample_from_workdir
    from test_palette import write_inputs

    inputs, out = tmp_path / "in", tmp_path / "out"
    write_inputs(str(inputs), ("inpainting", "colorization", "jpeg"))
    sample_from_workdir(load_run_config(palette_run), palette_run, output=str(out), input_dir=str(inputs))
    run = dj.load_run(palette_run)
    assert isinstance(run, dj.Run)
    image = _png(inputs / "inp.png")
    keep = _png(inputs / "inp_mask.png") == 0
    _close_to_png(run.restore(image, masks=keep), _png(out / "inp.png"))
    _close_to_png(run.restore(_png(inputs / "gray.png")[..., None], kind="colorization"), _png(out / "gray.png"))
    _close_to_png(run.restore(_png(inputs / "comp.jpg"), kind="jpeg"), _png(out / "comp.png"))
    for kwargs, message in [
        ({}, "needs kind= one of \\['colorization', 'jpeg'\\] or masks"),
        ({"kind": "colorization"}, "colour image; colorization takes grayscale"),
        ({"masks": keep, "kind": "jpeg"}, "masks go with kind='inpainting'"),
    ]:
        with pytest.raises(ValueError, match=message):
            run.restore(image, **kwargs)
    with pytest.raises(ValueError, match="restores images: use run.restore"):
        run.generate(2)


# -- tiles: no seams --------------------------------------------------------------------
def _gaussian_score(mean_fn, s2=1e-5):
    """Exact score of ``x0 ~ N(mean, s2 I)`` under a VP process: ``-(x - alpha m) / (alpha^2 s2 + sigma^2)``."""
    sde = dj.VPSDE()

    def make(params, cond, tile=8):
        def score_fn(x, t):
            # The network takes tile x tile inputs only: the tiler must cut them.
            assert x.shape[1:3] == (tile, tile), x.shape
            alpha, sigma = sde.alpha_sigma(t)
            alpha, sigma = alpha[:, None, None, None], sigma[:, None, None, None]
            return -(x - alpha * mean_fn(x, cond)) / (alpha**2 * s2 + sigma**2)

        return score_fn

    return sde, make


def _seam_jumps(image: np.ndarray, tile: int, overlap: int, axis: int) -> tuple[float, float]:
    """Largest step between neighbouring pixels across a tile edge, and inside tiles, along ``axis``."""
    steps = np.abs(np.diff(image, axis=axis)).max(axis=(0, 3, 2 if axis == 1 else 1))
    edges = set()
    for start in tile_offsets(image.shape[axis], tile, overlap):
        edges |= {start - 1, start + tile - 1}  # step from pixel e to e + 1 crosses a tile edge
    edges = sorted(e for e in edges if 0 <= e < len(steps))
    inside = [s for i, s in enumerate(steps) if i not in edges]
    return float(steps[edges].max()), float(np.max(inside))


@pytest.mark.parametrize("task", ["colorization", "repaint"])
def test_tiled_restoration_of_a_smooth_image_shows_no_seam(task):
    """A smooth image restored by an 8x8 'network' in 3 x 3 overlapping tiles comes out smooth.

    The analytic model is a near-deterministic Gaussian posterior: colorization's
    mean is its condition (the luma, a ramp), RePaint's prior mean a constant
    that equals the known pixels. The exact answer is that smooth image; a
    misaligned crop of the condition, a blend not normalised to one or a hard
    window puts steps at the tile edges.
    """
    h, w, tile, overlap = 20, 19, 8, 2
    if task == "colorization":
        ramp = (np.linspace(-0.8, 0.8, w, dtype=np.float32)[None, :]
                + np.linspace(-0.1, 0.1, h, dtype=np.float32)[:, None])
        pipeline, channels = PaletteColorization(), 3
        sde, make = _gaussian_score(lambda x, cond: jnp.repeat(cond, 3, axis=-1))
        inputs = [RestorationInput("a.png", "colorization", ramp[..., None])]
        expected, sampler = np.repeat(ramp[None, ..., None], 3, axis=-1), dj.samplers.DDIM(20)
    else:
        pipeline, channels = RepaintPipeline(steps=20, jump_length=2, jump_n_sample=2), 1
        sde, make = _gaussian_score(lambda x, cond: jnp.full_like(x, 0.3))
        known = np.ones((h, w), np.float32)
        known[:, 6:14] = 0.0  # the hole crosses tile edges (tiles start at 0, 6, 11)
        inputs = [RestorationInput("a.png", "inpainting", np.full((h, w, 1), 0.3, np.float32), known)]
        expected, sampler = np.full((1, h, w, 1), 0.3, np.float32), dj.samplers.DDIM(20)
    (out,) = restore_inputs(pipeline, inputs, make_score_fn=make, params=None, sde=sde, sampler=sampler,
                            image_shape=(tile, tile, channels), key=jax.random.key(0), batch_size=1,
                            denoise=True, overlap=overlap)
    out = np.asarray(out)[None]
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=0.03)
    for axis in (1, 2):
        across, within = _seam_jumps(out, tile, overlap, axis)
        assert across <= 1.5 * within + 2e-3, (axis, across, within)


def test_tiled_score_equals_the_whole_image_score_for_a_pixelwise_model():
    """For a model that acts pixel by pixel, tiling changes nothing: blending weights sum to one."""
    from diffjax.tiling import tiled_score_fn

    rng = np.random.default_rng(0)
    cond = jnp.asarray(rng.standard_normal((2, 13, 21, 1)), jnp.float32)
    x = jnp.asarray(rng.standard_normal((2, 13, 21, 3)), jnp.float32)
    t = jnp.asarray([0.3, 0.7])

    def local(x, t, c):
        return -x * t[:, None, None, None] + (0.0 if c is None else jnp.tanh(c))

    for c in (cond, None):
        tiled = tiled_score_fn(local, c, tile=8, overlap=3)(x, t)
        np.testing.assert_allclose(tiled, local(x, t, c), atol=1e-5)


@pytest.mark.slow
def test_super_resolution_matches_sample_py(tmp_path):
    """SR3 through run.restore equals sample.py's PNGs, tiled sizes included (slow: trains a 32x32 SR run)."""
    from sample import load_run_config, sample_from_workdir

    workdir = str(tmp_path / "sr")
    dj.train(os.path.join(ROOT, "configs", "sr3_photos_x4.py:smoke"), workdir,
             overrides={"training.num_steps": 2, "training.progress_bar": False, "sampling.steps": 2})
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    lows = {"a.png": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),  # the smoke model: 16x16 outputs
            "b.png": rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)}  # 16x24 output: tiles
    for name, low in lows.items():
        Image.fromarray(low).save(inputs / name)
    sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "out"), input_dir=str(inputs))
    run = dj.load_run(workdir)
    # sample.py's image i uses fold_in(key, i): image 0 is what run.restore gives one image by default.
    _close_to_png(run.restore(lows["a.png"]), _png(tmp_path / "out" / "a.png"))
    wide = run.restore(lows["b.png"][None])
    assert wide.shape == (1, 16, 24, 3) and _png(tmp_path / "out" / "b.png").shape == (16, 24, 3)
    with pytest.raises(ValueError, match="too small; the model needs at least 4x4"):
        run.restore(lows["a.png"][:3])
