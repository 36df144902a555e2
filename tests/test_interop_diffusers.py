"""Published diffusers checkpoints in diffjax, against references diffusers computed.

The fixtures (tests/fixtures/diffusers/) are tiny random UNet2DModels and a DDPM
pipeline folder written by tests/make_interop_fixtures.py with PyTorch and
diffusers; this file needs neither.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import diffjax as dj
from diffjax.interop import load_unet_weights, read_safetensors, schedule_from_diffusers, unet_from_diffusers
from diffjax.samplers import discrete_timesteps

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers")
PIPE = os.path.join(FIX, "ddpm_pipeline")
MODEL_DIRS = {"ddpm_tiny": os.path.join(PIPE, "unet"), "variant": os.path.join(FIX, "variant"),
              "adm": os.path.join(FIX, "adm"), "ncsnpp": os.path.join(FIX, "ncsnpp")}


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "reference.npz")))


def _model(name):
    d = MODEL_DIRS[name]
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    return unet_from_diffusers(config, read_safetensors(os.path.join(d, "diffusion_pytorch_model.safetensors")))


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


@pytest.mark.parametrize("name", ["ddpm_tiny", "variant", "adm", "ncsnpp"])
def test_unet_matches_diffusers(ref, name):
    model = _model(name)
    labels = ref.get(f"{name}/labels")
    out = nnx.jit(lambda m, x, t, y: m(x, t, labels=y))(model, jnp.asarray(_nhwc(ref[f"{name}/x"])),
                                                        jnp.asarray(ref[f"{name}/t"]),
                                                        None if labels is None else jnp.asarray(labels))
    want = _nhwc(ref[f"{name}/out"])
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(out), want, atol=2e-5 * max(scale, 1.0), rtol=1e-4)


def test_weight_errors_list_every_problem():
    d = MODEL_DIRS["ddpm_tiny"]
    with open(os.path.join(d, "config.json")) as f:
        config = json.load(f)
    state = read_safetensors(os.path.join(d, "diffusion_pytorch_model.safetensors"))
    bad = dict(state)
    del bad["conv_in.weight"]
    bad["extra.weight"] = np.zeros(3, np.float32)
    bad["conv_out.bias"] = np.zeros(7, np.float32)
    with pytest.raises(ValueError) as e:
        unet_from_diffusers(config, bad)
    msg = str(e.value)
    assert "missing keys (1): conv_in.weight" in msg and "unexpected keys (1): extra.weight" in msg
    assert "conv_out.bias: checkpoint (7,), model (3,)" in msg
    with pytest.raises(ValueError, match="UNet2DModel config: act_fn='gelu'"):
        unet_from_diffusers({**config, "act_fn": "gelu"}, state)
    with pytest.raises(ValueError, match="only diffusers UNet2DModel"):
        unet_from_diffusers({**config, "_class_name": "UNet2DConditionModel"}, state)


def test_legacy_attention_names_load(ref):
    """Old hub folders name attention weights query/key/value/proj_attn."""
    d = MODEL_DIRS["ddpm_tiny"]
    state = read_safetensors(os.path.join(d, "diffusion_pytorch_model.safetensors"))
    legacy = {}
    for k, v in state.items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            k = k.replace(f".{new}.", f".{old}.")
        legacy[k] = v
    assert legacy.keys() != state.keys()
    model = load_unet_weights(_model("ddpm_tiny"), legacy)
    out = nnx.jit(lambda m, x, t: m(x, t))(model, jnp.asarray(_nhwc(ref["ddpm_tiny/x"])), jnp.asarray(ref["ddpm_tiny/t"]))
    np.testing.assert_allclose(np.asarray(out), _nhwc(ref["ddpm_tiny/out"]), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_alphas_cumprod_match_diffusers(ref, schedule):
    kw = dict(beta_start=0.00085, beta_end=0.012) if schedule == "scaled_linear" else {}
    sde = dj.DiscreteVPSDE(beta_schedule=schedule, float32_betas=True, **kw)
    # PyTorch's float32 linspace rounds differently from NumPy's in the last bit.
    np.testing.assert_allclose(sde.alphas_cumprod, ref[f"alphas_cumprod/{schedule}"], rtol=2e-6, atol=1e-7)
    alpha, _ = sde.alpha_sigma(jnp.arange(1, 1001, dtype=jnp.float32) / 1000)
    np.testing.assert_allclose(np.asarray(alpha) ** 2, ref[f"alphas_cumprod/{schedule}"], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("loop", ["leading_clip", "trailing_v", "linspace_x0", "offset_scaled", "cosine"])
def test_ddim_loop_matches_diffusers(ref, loop):
    """DDIMScheduler options (spacings, offsets, clipping, predictions, schedules) as dj.sample."""
    from diffjax.interop.diffusers_run import load_diffusers_run

    with open(os.path.join(FIX, f"loop_{loop}.json")) as f:
        config = json.load(f)
    steps = config.pop("num_inference_steps")
    config.setdefault("_class_name", "DDIMScheduler")
    schedule = schedule_from_diffusers(config, "DDIMPipeline", steps=steps)
    ks, _ = discrete_timesteps(schedule.sampler.spacing, 1000, steps, schedule.sampler.steps_offset)
    np.testing.assert_array_equal(ks, ref[f"loop/{loop}/timesteps"])
    from diffjax.parametrization import model_score_fn

    run = load_diffusers_run(PIPE)  # its network, read as this scheduler says

    score_fn = model_score_fn(run.model, schedule.sde, prediction=schedule.prediction, time_input="index")
    x_T = jnp.asarray(_nhwc(ref["pipeline/x_T"]))
    x0, info = jax.jit(lambda x: dj.sample(score_fn, schedule.sde, x, key=jax.random.key(0),
                                           sampler=schedule.sampler))(x_T)
    np.testing.assert_allclose(np.asarray(x0), _nhwc(ref[f"loop/{loop}"]), atol=2e-4, rtol=1e-4)


def test_ddim_pipeline_end_to_end(ref):
    """dj.load_run(pipeline folder) + dj.sample(run.sampler) = DDIMPipeline(...)(50 steps, eta 0) from the same x_T."""
    from diffjax.interop.diffusers_run import load_diffusers_run

    run = load_diffusers_run(PIPE, pipeline="DDIMPipeline")
    assert isinstance(run, dj.Run)
    assert run.sampler == dj.samplers.DDIM(50, spacing="leading", clip_x0=1.0)
    x_T = jnp.asarray(_nhwc(ref["pipeline/x_T"]))
    x0, _ = jax.jit(lambda x: dj.sample(run.score_fn, run.sde, x, key=jax.random.key(0), sampler=run.sampler))(x_T)
    images = np.clip(np.asarray(x0) / 2 + 0.5, 0, 1)
    np.testing.assert_allclose(images, ref["pipeline/images"], atol=1e-4)


def test_load_run_reads_diffusers_folders():
    run = dj.load_run(PIPE)
    assert type(run).__name__ == "DiffusersRun"
    assert isinstance(run.sde, dj.DiscreteVPSDE) and run.sde.num_steps == 1000
    assert run.sampler == dj.samplers.Ancestral(1000, spacing="leading", clip_x0=1.0)  # DDPMPipeline's own loop
    bare = dj.load_run(MODEL_DIRS["variant"])
    assert bare.image_shape == (8, 8, 2)


def test_run_methods_on_a_diffusers_run():
    """generate, RePaint (restore) and SDEdit (translate) run on a loaded folder; RePaint keeps known pixels."""
    from diffjax.interop.diffusers_run import load_diffusers_run

    run = load_diffusers_run(PIPE, pipeline="DDIMPipeline", steps=5)
    images = run.generate(3, key=1, batch_size=2)
    assert images.shape == (3, 8, 8, 3) and np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(run.generate(3, key=1, batch_size=2), images)
    mask = np.zeros((8, 8), np.float32)
    mask[:, :4] = 1
    out = run.restore(images[:2], mask, key=0, steps=10, jump_length=2, jump_n_sample=2)
    np.testing.assert_allclose(out[:, :, :4], images[:2, :, :4], atol=1e-5)
    edited = run.translate(images[:2], t0=0.3, key=0)
    assert edited.shape == (2, 8, 8, 3) and np.isfinite(edited).all()
    with pytest.raises(ValueError, match="masks"):
        run.restore(images[:2], np.ones((5, 5)))


def test_diffusers_run_tiles_images_larger_than_its_network():
    """restore / translate take any size >= the network's (blended tiles, as Run.restore); smaller is refused."""
    from diffjax.interop.diffusers_run import load_diffusers_run

    run = load_diffusers_run(PIPE, pipeline="DDIMPipeline", steps=3)
    rng = np.random.default_rng(0)
    big = rng.uniform(size=(1, 12, 10, 3)).astype(np.float32)
    mask = np.zeros((12, 10), np.float32)
    mask[:, :5] = 1
    out = run.restore(big, mask, key=0, steps=4, jump_length=2, jump_n_sample=2)
    assert out.shape == big.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, :, :5], big[:, :, :5], atol=1e-5)  # known pixels kept across tile seams
    assert not np.allclose(out[:, :, 5:], big[:, :, 5:], atol=1e-2)  # the unknown half was sampled
    edited = run.translate(big[0], t0=0.3, key=0)
    assert edited.shape == (12, 10, 3) and np.isfinite(edited).all()
    with pytest.raises(ValueError, match="or larger"):
        run.translate(big[:, :6, :6], t0=0.3, key=0)


@pytest.mark.slow
def test_likelihood_on_a_diffusers_run():
    """The probability-flow ODE likelihood (bits/dim) runs on a loaded folder (exact divergence: 192 dims)."""
    from diffjax.interop.diffusers_run import load_diffusers_run

    run = load_diffusers_run(PIPE, pipeline="DDIMPipeline", steps=5)
    images = run.generate(1, key=1)
    logp, _ = jax.jit(lambda x: dj.log_likelihood(run.score_fn, run.sde, x, key=jax.random.key(0),
                                                  exact_divergence=True, rtol=1e-3, atol=1e-3))(
        jnp.asarray(images * 2 - 1))
    bpd = dj.bits_per_dim(logp, images[0].size)
    assert np.isfinite(np.asarray(bpd)).all()


def test_refused_schedulers():
    with pytest.raises(ValueError, match="thresholding"):
        schedule_from_diffusers({"_class_name": "DDIMScheduler", "thresholding": True})
    with pytest.raises(ValueError, match="PNDMScheduler"):
        schedule_from_diffusers({"_class_name": "PNDMScheduler"})
    with pytest.raises(ValueError, match="DiscreteVPSDE"):
        dj.sample(lambda x, t: -x, dj.VPSDE(), jnp.zeros((1, 2)), key=jax.random.key(0),
                  sampler=dj.samplers.DDIM(5, spacing="trailing"))
    with pytest.raises(ValueError, match="spacing"):
        dj.samplers.Heun(5, spacing="trailing")


def test_export_round_trip(ref, tmp_path):
    """A run written back as a diffusers folder reads back to the same network and scheduler."""
    from diffjax.interop import load_diffusers_run, save_diffusers_folder

    run = load_diffusers_run(PIPE)
    save_diffusers_folder(run, str(tmp_path / "out"))
    back = dj.load_run(str(tmp_path / "out"))
    assert back.sampler == run.sampler and back.sde == run.sde
    out = nnx.jit(lambda m, x, t: m(x, t))(back.model, jnp.asarray(_nhwc(ref["ddpm_tiny/x"])),
                                           jnp.asarray(ref["ddpm_tiny/t"]))
    np.testing.assert_allclose(np.asarray(out), _nhwc(ref["ddpm_tiny/out"]), atol=1e-4, rtol=1e-4)


def test_schedule_mapping_of_other_schedulers():
    """ScoreSdeVeScheduler -> VESDE + predictor-corrector on sigma; DDPM pipelines end at alpha = 1."""
    ve = schedule_from_diffusers({"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 348.0,
                                  "snr": 0.16, "sampling_eps": 1e-5, "num_train_timesteps": 2000})
    assert ve.sde == dj.VESDE(sigma_min=0.01, sigma_max=348.0, eps=1e-5)
    assert ve.sampler == dj.samplers.PredictorCorrector(2000, snr=0.16, corrector_steps=1, discrete_sigmas=True)
    assert (ve.prediction, ve.time_input, ve.centered) == ("score", "sigma", False)  # score_sde's VE data: [0, 1]
    ddpm = schedule_from_diffusers({"_class_name": "DDPMScheduler", "set_alpha_to_one": False, "clip_sample": False,
                                    "num_train_timesteps": 200}, "DDPMPipeline")
    assert ddpm.sampler == dj.samplers.Ancestral(200, spacing="leading") and ddpm.sde.eps == 1 / 200
    learned = schedule_from_diffusers({"_class_name": "DDPMScheduler", "variance_type": "learned_range"})
    assert learned.learned_variance
