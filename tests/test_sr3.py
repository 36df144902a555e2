"""SR3: resampling operators, gamma sampling, model conditioning, tiling, smoke runs and the CLI."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from diffjax import builders
from diffjax.pipelines.sr3 import SR3Pipeline, read_low_res_folder
from diffjax.tasks.sr3 import (
    bicubic_matrix,
    downsample,
    quantize_uint8,
    resize,
    tile_offsets,
    tiled_score_fn,
    upsample,
)


@pytest.mark.parametrize("size", [(16, 12), (8, 6), (128, 96), (20, 30)])
def test_resize_matches_jax_image_antialiased_bicubic(size):
    # jax.image.resize is an independent implementation of the same filter.
    x = np.random.default_rng(0).standard_normal((2, 64, 48, 3)).astype(np.float32)
    want = jax.image.resize(x, (2, *size, 3), "bicubic", antialias=True)
    np.testing.assert_allclose(resize(x, *size), want, atol=1e-5)
    np.testing.assert_allclose(resize(jnp.asarray(x), *size), want, atol=1e-5)


def test_resampling_keeps_constants_and_checks_factors():
    rows = bicubic_matrix(32, 8)
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-12)
    x = np.full((1, 16, 16, 3), 0.3, np.float32)
    np.testing.assert_allclose(downsample(x, 4), 0.3, atol=1e-6)
    np.testing.assert_allclose(upsample(x, 2), 0.3, atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        downsample(np.zeros((1, 10, 10, 1)), 4)
    with pytest.raises(ValueError, match="integer"):
        upsample(x, 1.5)


def _sr3_config(**overrides):
    from configs.sr3_photos_x4 import get_config

    c = get_config("smoke")
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


def test_gamma_sampling_is_uniform_between_adjacent_levels():
    # The loss draws gamma = alpha(t) uniformly between adjacent grid levels; the
    # CDF of gamma is the exact mixture of N uniform pieces.
    config = _sr3_config()
    sde = builders.build_sde(config)
    loss_fn = builders.build_loss(config, sde)
    n, seen = 20_000, []

    def apply_fn(x, c):
        seen.append(c)
        return jnp.zeros_like(x)

    loss_fn(apply_fn, jnp.zeros((n, 1, 1, 1)), jax.random.key(0))
    gamma = np.sort(np.asarray(seen[0], np.float64))
    steps = config.loss.num_steps
    grid = sde.eps + (sde.T - sde.eps) * np.arange(steps) / (steps - 1)
    lo = np.asarray(sde.alpha_sigma(jnp.asarray(grid))[0], np.float64)
    hi = np.concatenate([[1.0], lo[:-1]])
    cdf = np.clip((gamma[:, None] - lo) / (hi - lo), 0, 1).mean(axis=1)
    ks = np.max(np.abs(cdf - np.arange(1, n + 1) / n))
    assert ks < 1.63 / np.sqrt(n)  # Kolmogorov-Smirnov at the 1% level
    assert gamma.min() > 0 and gamma.max() < 1


def _randomize(model, seed=1):
    """Random weights everywhere: zero-initialised convs would hide the inputs' effect."""
    _graphdef, params, _rest = nnx.split(model, nnx.Param, ...)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [0.2 * jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(tree, leaves))


def test_model_shapes_and_conditioning():
    config = _sr3_config()
    mc = builders.build_model_config(config, (16, 16, 3))
    assert (mc.in_channels, mc.cond_channels, mc.aug_level_embedding) == (3, 3, False)
    model, _ = builders.build_model(config, nnx.Rngs(0), (16, 16, 3))
    _randomize(model)
    x = jax.random.normal(jax.random.key(2), (2, 16, 16, 3))
    cond = jax.random.normal(jax.random.key(3), (2, 16, 16, 3))
    gamma = jnp.array([0.3, 0.9])
    out = model(x, gamma, cond=cond)
    assert out.shape == (2, 16, 16, 3)
    assert not np.allclose(out, model(x, gamma, cond=cond * 0.5))
    assert not np.allclose(out, model(x, gamma[::-1], cond=cond))
    with pytest.raises(ValueError, match="cond is required"):
        model(x, gamma)
    with pytest.raises(ValueError, match="aug_level_embedding=False"):
        model(x, gamma, cond=cond, aug_level=gamma)


def test_pipeline_builds_the_bicubic_condition_deterministically():
    pipeline = SR3Pipeline(scale=4)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32)
    batch = pipeline.prepare_batch({"image": images, "label": np.zeros(3, np.int32)}, step=0, seed=0,
                                   rows=np.arange(3))
    # Hand-written reference: the 8-bit levels k / 127.5 - 1, k = 0..255, nearest to the
    # clipped bicubic low-res image (what a PNG of it stores).
    low_float = np.clip(np.asarray(downsample(images, 4), np.float64), -1, 1)
    levels = np.arange(256) / 127.5 - 1.0
    low = levels[np.argmin(np.abs(low_float[..., None] - levels), axis=-1)]
    assert np.max(np.abs(low - low_float)) > 1e-3  # the rounding is visible at this tolerance
    np.testing.assert_allclose(batch["cond"], upsample(low.astype(np.float32), 4), atol=1e-5)
    assert batch["image"] is images and "aug_level" not in batch
    with pytest.raises(ValueError, match="divisible"):
        pipeline.cond_channels((18, 18, 3))


def test_quantize_uint8_puts_values_on_the_8bit_grid():
    x = np.array([-1.3, -1.0, -0.999, 0.0, 0.002, 1 / 255, 0.5, 0.9999, 1.0, 2.0], np.float32)
    got = quantize_uint8(x)
    k = (got.astype(np.float64) + 1.0) * 127.5
    np.testing.assert_allclose(k, np.round(k), atol=1e-4)  # integer level k in [0, 255]
    assert np.all((k > -1e-4) & (k < 255 + 1e-4))
    # Nearest level, by hand: k = round((x + 1) * 127.5) clipped to [0, 255].
    want = np.array([0, 0, 0, 128, 128, 128, 191, 255, 255, 255]) / 127.5 - 1.0
    # 0.0 * 127.5 + 127.5 = 127.5 rounds half to even: 128; 0.5 -> 191.25 -> 191.
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_tile_offsets_cover_and_tiling_is_exact_for_a_local_score():
    assert tile_offsets(32, 16, 4) == (0, 12, 16)
    assert tile_offsets(16, 16, 4) == (0,)
    with pytest.raises(ValueError):
        tile_offsets(8, 16, 4)
    # A per-pixel score gives the same answer tiled or whole: blending weights sum to 1.
    cond = jax.random.normal(jax.random.key(0), (2, 40, 28, 3))
    x = jax.random.normal(jax.random.key(1), (2, 40, 28, 3))
    local = lambda x_, t_, c_: -(x_ - c_) * t_[:, None, None, None]
    t = jnp.array([0.5, 2.0])
    tiled = tiled_score_fn(local, cond, tile=16, overlap=6)(x, t)
    np.testing.assert_allclose(tiled, local(x, t, cond), atol=1e-5)


def test_read_low_res_folder_rejects_bad_inputs(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(good / "a.png")
    assert [n for n, _ in read_low_res_folder(str(good), channels=3, scale=4, tile=16)] == ["a.png"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.txt").write_text("hello")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(bad / "gray.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(bad / "tiny.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(bad / "photo.jpg")
    with pytest.raises(ValueError) as err:
        read_low_res_folder(str(bad), channels=3, scale=4, tile=16)
    message = str(err.value)
    for expected in ("notes.txt: not an image", "gray.png: mode L", "tiny.png: 2x2 is too small",
                     "photo.jpg: a JPEG image"):
        assert expected in message


def _train(config_module: str, arg: str, workdir: str, **overrides):
    import importlib

    from train import train_and_evaluate

    c = importlib.import_module(config_module).get_config(arg)
    c.training.progress_bar = False
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return train_and_evaluate(c, workdir)


@pytest.fixture(scope="module")
def x4_workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sr3") / "x4")
    summary = _train("configs.sr3_photos_x4", "smoke", workdir)
    assert summary["step"] == 4 and np.isfinite(summary["final_loss"])
    return workdir


@pytest.mark.parametrize("sampler,steps", [("dpm_solver_pp", 3), ("ancestral", 4),
                                           pytest.param("ddim", 3, marks=pytest.mark.slow)])
def test_smoke_x4_super_resolves_a_folder_with_tiles(x4_workdir, tmp_path, sampler, steps):
    from sample import load_run_config, sample_from_workdir

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(inputs / "small.png")
    Image.fromarray(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)).save(inputs / "wide.png")  # tiled
    config = load_run_config(x4_workdir)
    config.sampling.sampler, config.sampling.steps = sampler, steps
    out = tmp_path / "out"
    info = sample_from_workdir(config, x4_workdir, output=str(out), input_dir=str(inputs))
    assert info["num"] == 2
    assert np.asarray(Image.open(out / "small.png")).shape == (16, 16, 3)
    assert np.asarray(Image.open(out / "wide.png")).shape == (24, 36, 3)


def test_sr_cli_refuses_bad_folder_and_writes_nothing(x4_workdir, tmp_path):
    from sample import load_run_config, sample_from_workdir

    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(inputs / "ok.png")
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(inputs / "rgba.png")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="rgba.png: mode RGBA"):
        sample_from_workdir(load_run_config(x4_workdir), x4_workdir, output=str(out), input_dir=str(inputs))
    assert not out.exists()
    with pytest.raises(ValueError, match="--input"):
        sample_from_workdir(load_run_config(x4_workdir), x4_workdir, output=str(out))


@pytest.mark.parametrize("module,arg", [
    ("configs.sr3_photos_x8", "smoke"),
    # Same code path as the x8 smoke run with another network: slow, to keep the default run short.
    pytest.param("configs.sr3_tfds_faces", "16_128,smoke", marks=pytest.mark.slow),
    pytest.param("configs.sr3_tfds_faces", "64_256,smoke", marks=pytest.mark.slow),
])
def test_other_sr3_configs_smoke_train_and_sample(module, arg, tmp_path):
    from sample import load_run_config, sample_from_workdir

    # TFDS configs read a prepared dataset; the smoke run swaps in the offline photos.
    overrides = {"data.name": "photos"} if "tfds" in module else {}
    workdir = str(tmp_path / "run")
    summary = _train(module, arg, workdir, **{"training.num_steps": 2, **overrides})
    assert summary["step"] == 2
    config = load_run_config(workdir)
    scale, size = config.task.sr3.scale, config.data.image_size
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.full((size // scale, size // scale, 3), 128, np.uint8)).save(inputs / "a.png")
    sample_from_workdir(config, workdir, output=str(tmp_path / "out"), input_dir=str(inputs))
    assert np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (size, size, 3)


@pytest.mark.parametrize("module,arg,shape", [
    ("configs.sr3_photos_x4", None, (32, 32, 3)), ("configs.sr3_photos_x8", None, (64, 64, 3)),
    ("configs.sr3_tfds_faces", "16_128", (128, 128, 3)), ("configs.sr3_tfds_faces", "64_256", (256, 256, 3)),
    ("configs.cdm_fashion_mnist", "base", (16, 16, 1)), ("configs.cdm_fashion_mnist", "sr", (32, 32, 1)),
])
def test_full_size_configs_validate_and_build(module, arg, shape):
    import importlib

    from configs.default import get_base_config

    config = importlib.import_module(module).get_config(arg)
    builders.validate_config(config, get_base_config())
    builders.build_loss(config)
    builders.build_sampler(config)
    assert config.data.image_size == shape[0]
    mc = builders.build_model_config(config, shape, num_classes=10)
    assert mc.cond_channels == (0 if arg == "base" else shape[-1])
    assert mc.aug_level_embedding == (arg == "sr") and mc.num_classes == (10 if arg == "base" else 0)
    # Shapes only: the full-size networks would take minutes to initialise.
    assert nnx.state(nnx.eval_shape(lambda: builders.build_model(config, nnx.Rngs(0), shape, 10)[0]), nnx.Param)


def test_config_arguments_are_checked():
    from configs import cdm_fashion_mnist, sr3_photos_x4, sr3_tfds_faces

    for module, bad in ((sr3_photos_x4, "smok"), (sr3_tfds_faces, "32_64"), (cdm_fashion_mnist, "smoke")):
        with pytest.raises(ValueError, match="takes"):
            module.get_config(bad)


def test_clip_denoised_clips_the_implied_x0_only():
    from diffjax.parametrization import convert
    from diffjax.sde import VPSDE
    from diffjax.tasks.sr3 import clip_denoised

    sde = VPSDE()
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    t = jnp.array([0.3, 0.8])
    x0 = jnp.linspace(-2, 2, 32).reshape(2, 4, 4, 1)
    score = lambda x_, t_, c_: convert(x0, source="x0", target="score", x=x_, t=t_, sde=sde)
    got = convert(clip_denoised(score, sde)(x, t, None), source="score", target="x0", x=x, t=t, sde=sde)
    np.testing.assert_allclose(got, jnp.clip(x0, -1, 1), atol=1e-4)
