"""Latent diffusion: the KL autoencoder, its loss, the frozen first stage, scale_by_std, latent sampling."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from diffjax import builders, ldm
from diffjax.losses import gaussian_kl, make_autoencoder_loss_fn
from diffjax.nn import Autoencoder, AutoencoderConfig, UNet
from diffjax.run_config import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, **overrides):
    config = load_config_file(os.path.join(ROOT, "configs", name) + ":smoke")
    config.training.progress_bar = False
    for key, value in overrides.items():
        node = config
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return config


# -- the autoencoder ---------------------------------------------------------------


@pytest.mark.parametrize("mult,f", [((1, 2), 2), ((1, 2, 2), 4), ((1, 1, 2, 2), 8)])
def test_autoencoder_shapes_for_several_factors(mult, f):
    config = AutoencoderConfig(image_size=16, in_channels=3, base_channels=4, channel_mult=mult, z_channels=3)
    assert config.factor == f
    # Shapes only (abstract evaluation): no weights drawn, nothing compiled.
    graphdef, state = nnx.split(nnx.eval_shape(lambda: Autoencoder(config, rngs=nnx.Rngs(0))))
    encode = lambda x: jax.eval_shape(lambda s, x_: nnx.merge(graphdef, s).encode(x_), state, x)  # noqa: E731
    decode = lambda z: jax.eval_shape(lambda s, z_: nnx.merge(graphdef, s).decode(z_), state, z)  # noqa: E731
    x = jax.ShapeDtypeStruct((2, 16, 24, 3), jnp.float32)  # not the training size, not square
    mean, logvar = encode(x)
    assert mean.shape == logvar.shape == (2, 16 // f, 24 // f, 3)
    assert decode(mean).shape == x.shape
    with pytest.raises(ValueError, match=f"multiples of {f}"):
        encode(jax.ShapeDtypeStruct((1, 16 + f // 2, 24, 3), jnp.float32))
    with pytest.raises(ValueError, match="expects"):
        decode(jax.ShapeDtypeStruct((1, 4, 4, 5), jnp.float32))


def test_gaussian_kl_is_the_closed_form_and_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(2, 3, 1)).astype(np.float32)
    logvar = rng.normal(scale=0.5, size=(2, 3, 1)).astype(np.float32)
    kl = np.asarray(gaussian_kl(jnp.asarray(mean), jnp.asarray(logvar)))
    # Per dimension: log(1 / sigma) + (sigma^2 + mu^2) / 2 - 1/2, summed.
    sigma = np.exp(0.5 * logvar)
    want = np.sum(-np.log(sigma) + (sigma ** 2 + mean ** 2) / 2 - 0.5, axis=(1, 2))
    np.testing.assert_allclose(kl, want, rtol=1e-5)
    # E_q[log q(z) - log p(z)] by sampling.
    z = mean + sigma * rng.normal(size=(200_000, *mean.shape))
    log_q = -0.5 * ((z - mean) / sigma) ** 2 - np.log(sigma)
    log_p = -0.5 * z ** 2
    np.testing.assert_allclose(kl, np.mean(np.sum(log_q - log_p, axis=(2, 3)), axis=0), atol=0.02)
    assert float(gaussian_kl(jnp.zeros((1, 4)), jnp.zeros((1, 4)))[0]) == 0.0


def test_autoencoder_loss_adds_l1_perceptual_and_scaled_kl():
    x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (2, 4, 4, 1)), jnp.float32)
    recon, mean, logvar = x + 0.1, jnp.ones((2, 2, 2, 3)), jnp.full((2, 2, 2, 3), -1.0)
    apply_fn = lambda x_, c, **kw: {"recon": recon, "mean": mean, "logvar": logvar}  # noqa: E731
    loss_fn = make_autoencoder_loss_fn(lambda a, b: jnp.full((a.shape[0],), 0.25), perceptual_weight=2.0,
                                       kl_weight=1e-3)
    loss, aux = loss_fn(apply_fn, x, jax.random.key(0))
    kl = 0.5 * 12 * (1.0 + np.exp(-1.0) - 1.0 + 1.0)  # per image: 12 latent entries
    np.testing.assert_allclose(float(aux["kl"]), kl, rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.1 + 2.0 * 0.25 + 1e-3 * kl / 16, rtol=1e-5)


@pytest.mark.slow
def test_discriminator_trains_only_on_its_own_loss_and_starts_late():
    config = AutoencoderConfig(image_size=8, in_channels=1, base_channels=4, channel_mult=(1, 2), z_channels=2,
                               disc_channels=4, disc_layers=1)
    model = Autoencoder(config, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (2, 8, 8, 1)), jnp.float32)
    loss_fn = make_autoencoder_loss_fn(None, disc_weight=0.5, disc_start=10)

    def total(p, step):
        m = nnx.merge(graphdef, p)
        return loss_fn(lambda x_, c, **kw: m(x_, c, **kw), x, jax.random.key(0), step=step)[0]

    def d_only(p):  # the discriminator's hinge loss on the (frozen) reconstruction
        m = nnx.merge(graphdef, p)
        recon = jax.lax.stop_gradient(m(x, None, noise_key=jax.random.key(0))["recon"])
        return jnp.mean(jax.nn.relu(1 - m.discriminate(x))) + jnp.mean(jax.nn.relu(1 + m.discriminate(recon)))

    grad_total = jax.jit(jax.grad(total))
    grads = nnx.to_pure_dict(grad_total(params, 10))["discriminator"]
    want = nnx.to_pure_dict(jax.jit(jax.grad(d_only))(params))["discriminator"]
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7), grads, want)
    before = nnx.to_pure_dict(grad_total(params, 9))["discriminator"]
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(before))


# -- trained runs (tiny): the first stage and the latent SR model ------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A smoke autoencoder on photo crops and a smoke latent-SR run on it (trained once for the module)."""
    import diffjax as dj

    root = tmp_path_factory.mktemp("ldm")
    ae, sr = str(root / "ae"), str(root / "sr")
    # No LPIPS in this loss (its backward pass is slow to compile); the slow Fashion-MNIST test trains with it.
    dj.train(_config("autoencoder_photos.py", **{"training.num_steps": 2, "training.ckpt_every": 2,
                                                  "autoencoder.perceptual_weight": 0.0}), ae)
    dj.train(_config("ldm_photos_sr4.py", **{"training.num_steps": 2, "training.ckpt_every": 2,
                                              "autoencoder.workdir": ae}), sr)
    return {"ae": ae, "sr": sr, "root": root}


def test_autoencoder_run_logs_reconstruction_and_reconstructs_any_size(runs, tmp_path):
    import diffjax as dj

    metrics = json.load(open(os.path.join(runs["ae"], "metrics.json")))
    assert metrics["recon_num"] == 8 and np.isfinite(metrics["recon_psnr"]) and 0 <= metrics["recon_lpips"] < 2
    run = dj.load_run(runs["ae"])
    images = np.random.default_rng(0).uniform(0, 1, (2, 30, 45, 3)).astype(np.float32)  # 30, 45: not multiples of 4
    out = run.restore(images)
    assert out.shape == images.shape and np.isfinite(out).all()
    # The latent run's own capabilities: encode / decode, with the first stage's shapes.
    assert isinstance(run, dj.Run) and {"encode", "decode"} <= set(run.capabilities)
    z = run.encode(images[:, :28, :44])
    assert z.shape == (2, 7, 11, run.model_config.z_channels)
    decoded = run.decode(z)
    assert decoded.shape == (2, 28, 44, 3) and 0 <= decoded.min() and decoded.max() <= 1
    with pytest.raises(ValueError, match="sides divisible by 4"):
        run.encode(images)
    from diffjax.runs import sample_from_workdir

    (tmp_path / "in").mkdir()  # outputs may not sit inside the input folder (docs/guarantees.md)
    Image.fromarray((images[0] * 255).astype(np.uint8)).save(tmp_path / "in" / "a.png")
    info = sample_from_workdir(run.config, runs["ae"], input_dir=str(tmp_path / "in"), output=str(tmp_path / "out"))
    assert info["num"] == 1 and np.asarray(Image.open(tmp_path / "out" / "a.png")).shape == (30, 45, 3)


def test_scale_by_std_is_measured_on_the_first_batch_stored_and_restored(runs):
    import diffjax as dj

    stored = json.load(open(os.path.join(runs["sr"], "latent.json")))
    config = _config("ldm_photos_sr4.py", **{"autoencoder.workdir": runs["ae"]})
    pipeline = builders.build_pipeline(config)
    first = builders.build_dataset(config).batch(0, config.training.batch_size, seed=config.training.seed)
    z = pipeline.latents(first["image"], step=0, seed=0, rows=np.arange(len(first["image"])))
    np.testing.assert_allclose(stored["scale_factor"], 1.0 / np.std(z), rtol=1e-5)
    assert stored["autoencoder"]["workdir"] == os.path.abspath(runs["ae"])
    run = dj.load_run(runs["sr"])
    assert isinstance(run, dj.Run)  # a latent-diffusion (LDM) run is a dj.Run
    ldm._ready(run)
    assert run.pipeline.scale_factor == stored["scale_factor"]
    # A resumed run reads the stored value instead of measuring again.
    with open(os.path.join(runs["sr"], "latent.json"), "w") as f:
        json.dump(dict(stored, scale_factor=2.5), f)
    try:
        pipeline.prepare_run(runs["sr"], builders.build_dataset(config), config.training)
        assert pipeline.scale_factor == 2.5
    finally:
        with open(os.path.join(runs["sr"], "latent.json"), "w") as f:
            json.dump(stored, f)


def test_frozen_autoencoder_is_not_trained(runs):
    """The train state holds only the UNet's parameters; the autoencoder's checkpoint is untouched."""
    from diffjax.runs import load_model_config, restore_ema_model
    from diffjax.sharding import make_mesh
    from train_fixtures import restore_state

    config = _config("ldm_photos_sr4.py", **{"autoencoder.workdir": runs["ae"]})
    state = restore_state(runs["sr"], config)
    unet = nnx.eval_shape(lambda: UNet(load_model_config(runs["sr"]), rngs=nnx.Rngs(0)))
    assert jax.tree.structure(state.params) == jax.tree.structure(nnx.state(unet, nnx.Param))
    # The LDM's gradient has no path into the encoder: batches are encoded before the train step.
    stage = builders.build_pipeline(config).first_stage
    ae_params = restore_ema_model(load_config_file(os.path.join(ROOT, "configs/autoencoder_photos.py:smoke")),
                                  runs["ae"], make_mesh())[1]
    jax.tree.map(np.testing.assert_array_equal, stage.load()[1], ae_params)


def test_missing_untrained_or_mismatched_autoencoder_is_refused_before_training(runs, tmp_path):
    import diffjax as dj

    def refuses(match, **overrides):
        workdir = tmp_path / f"ldm{len(os.listdir(tmp_path))}"
        with pytest.raises(ValueError, match=match):
            dj.train(_config("ldm_photos_sr4.py", **overrides), str(workdir))
        assert not workdir.exists()

    refuses("autoencoder.workdir", **{"autoencoder.workdir": ""})
    refuses("does not exist", **{"autoencoder.workdir": str(tmp_path / "nope")})
    refuses("not an autoencoder", **{"autoencoder.workdir": runs["sr"]})
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    for name in ("config.json", "model_config.json"):
        shutil.copy(os.path.join(runs["ae"], name), untrained / name)
    refuses("untrained", **{"autoencoder.workdir": str(untrained)})
    refuses("3-channel images", **{"autoencoder.workdir": runs["ae"], "data.name": "fashion_mnist"})
    # Resuming a latent run on another autoencoder is refused too.
    other = str(tmp_path / "ae2")
    shutil.copytree(runs["ae"], other)
    with pytest.raises(ValueError, match="was trained on the autoencoder"):
        dj.train(_config("ldm_photos_sr4.py", **{"autoencoder.workdir": other, "training.num_steps": 3}), runs["sr"])


def _restore_with_samplers(run_dir, names):
    import diffjax as dj

    run = dj.load_run(run_dir, overrides={"sampling.steps": 2, "sampling.max_steps": 64})
    low = np.random.default_rng(0).uniform(0, 1, (8, 8, 3)).astype(np.float32)
    for name in names:
        config = run.config.copy_and_resolve_references()
        config.sampling.sampler = name
        out = run.restore(low, sampler=builders.build_sampler(config))
        assert out.shape == (32, 32, 3) and np.isfinite(out).all(), name
    return run, low


@pytest.mark.slow
def test_latent_sr_samples_with_every_core_sampler(runs):
    _restore_with_samplers(runs["sr"], [n for n in builders.SAMPLERS if n != "dpm_solver_pp"])


def test_latent_sr_samples_and_decodes_in_one_program(runs, tmp_path):
    from diffjax.runs import sample_from_workdir

    run, low = _restore_with_samplers(runs["sr"], ["dpm_solver_pp"])
    # One compiled program per sampler; a second image of the same size does not retrace.
    fn = ldm._compiled(run, "ldm_sr", builders.build_sampler(run.config))
    run.restore(np.stack([low, low[::-1]]))
    assert fn._cache_size() == 1
    # sample.py: same checks as SR3's inputs, larger inputs sampled in latent tiles.
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray((low * 255).astype(np.uint8)).save(inp / "a.png")
    Image.fromarray((np.ones((12, 10, 3)) * 99).astype(np.uint8)).save(inp / "b.png")
    info = sample_from_workdir(run.config, runs["sr"], input_dir=str(inp), output=str(tmp_path / "out"))
    assert info["num"] == 2
    assert np.asarray(Image.open(tmp_path / "out" / "b.png")).shape == (48, 40, 3)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(inp / "c.png")
    with pytest.raises(ValueError, match="c.png: 4x4 is too small"):
        sample_from_workdir(run.config, runs["sr"], input_dir=str(inp), output=str(tmp_path / "out2"))


def test_inpainting_condition_is_the_encoded_masked_image_and_pooled_mask(runs):
    config = _config("ldm_photos_sr4.py", **{"autoencoder.workdir": runs["ae"], "task.name": "ldm_inpainting"})
    pipeline = builders.build_pipeline(config)
    pipeline.scale_factor = 0.5
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    known = np.ones((2, 32, 32), np.float32)
    known[:, :8, :6] = 0.0
    cond = pipeline.latent_condition(images, known)
    assert cond.shape == (2, 8, 8, 4) and pipeline.cond_channels((32, 32, 3)) == 4
    np.testing.assert_allclose(cond[..., :3], 0.5 * pipeline.first_stage.encode(images * known[..., None]), rtol=1e-5)
    assert cond[0, 0, 0, 3] == 0.0 and cond[0, 0, 1, 3] == 0.5 and cond[0, 5, 5, 3] == 1.0


@pytest.mark.parametrize("spec", ["autoencoder_tfds.py:f4", pytest.param("autoencoder_tfds.py:f8", marks=pytest.mark.slow),
                                  "ldm_tfds.py:sr4", pytest.param("ldm_tfds.py:cin", marks=pytest.mark.slow)])
def test_paper_sized_tfds_configs_build(spec):
    """Accelerator configs: they build (shapes only: no data, no weights), they are not trained here."""
    from configs.default import get_base_config

    config = load_config_file(os.path.join(ROOT, "configs", spec))
    builders.validate_config(config, get_base_config())
    builders.build_loss(config)
    mc = builders.build_model_config(config, (256, 256, 3), 1000)
    model = nnx.eval_shape(lambda: builders.build_model(config, nnx.Rngs(0), (256, 256, 3), 1000)[0])
    assert nnx.state(model, nnx.Param)
    if "ldm" in spec:
        assert (mc.image_size, mc.in_channels) == (64, 3) and mc.num_classes == (1000 if "cin" in spec else 0)
        with pytest.raises(ValueError, match="autoencoder.workdir"):
            builders.build_pipeline(config).prepare_run("/nonexistent", None, config.training)
    else:
        assert mc.factor == (8 if "f8" in spec else 4) and mc.disc_channels > 0


@pytest.mark.slow
def test_class_conditional_ldm_fashion_mnist_smoke_train_and_sample(tmp_path):
    """ae (with LPIPS on 1-channel 32 px images) + class-conditional latent run (cross-attention on class tokens),
    then --num images per class."""
    import diffjax as dj
    from diffjax.runs import sample_from_workdir

    ae, run_dir = str(tmp_path / "ae"), str(tmp_path / "ldm")
    dj.train(_config("autoencoder_fashion_mnist.py", **{"training.num_steps": 1, "training.ckpt_every": 1,
                                                        "eval.enabled": False}), ae)
    config = _config("ldm_fashion_mnist.py", **{"training.num_steps": 1, "training.ckpt_every": 1,
                                               "autoencoder.workdir": ae, "data.classes": (0, 1, 2)})
    dj.train(config, run_dir)
    run = dj.load_run(run_dir)
    assert run.model_config.context_dim == 64 and run.model_config.label_conditioning == "context"
    images = run.generate(3, key=0)
    assert images.shape == (3, 32, 32, 1) and np.isfinite(images).all()
    info = sample_from_workdir(run.config, run_dir, num=2, output=str(tmp_path / "out"))
    assert info["num"] == 6
    names = sorted(os.listdir(tmp_path / "out"))
    assert names[-1] == "grid.png" and names[:2] == ["000000_class0.png", "000001_class0.png"]
    assert np.asarray(Image.open(tmp_path / "out" / "000005_class2.png")).shape == (32, 32)


@pytest.mark.slow
def test_latent_inpainting_smoke_keeps_known_pixels(runs, tmp_path):
    import diffjax as dj

    run_dir = str(tmp_path / "inp")
    dj.train(_config("ldm_photos_sr4.py", **{"task.name": "ldm_inpainting", "training.num_steps": 1,
                                              "training.ckpt_every": 1, "autoencoder.workdir": runs["ae"]}), run_dir)
    run = dj.load_run(run_dir, overrides={"sampling.steps": 2})
    assert run.model_config.cond_channels == 4  # 3 latent channels of the masked image + the mask
    images = np.random.default_rng(0).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    known = np.ones((32, 32), bool)
    known[8:20, 4:28] = False
    out = run.restore(images, known)
    assert out.shape == images.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out[known], images[known], atol=1e-6)
    assert not np.allclose(out[~known], images[~known], atol=1e-2)
    with pytest.raises(ValueError, match="needs masks"):
        run.restore(images)
