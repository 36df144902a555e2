"""diffusers' LDMPipeline and LDMSuperResolutionPipeline folders as diffjax runs, against the pipelines' own outputs.

The fixtures (tests/fixtures/diffusers_ldm/) are tiny random pipelines (UNet, the tiny VQModel, a DDIM
scheduler) and what diffusers computed from fixed latents at the pipelines' defaults (50 and 100 DDIM
steps), written by ``tests/make_interop_fixtures.py --only ldm``; this file needs no PyTorch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

import diffjax as dj
from diffjax.interop.diffusers_latent import LatentDiffusersRun

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers_ldm")
LDM, SR = os.path.join(FIX, "ldm_pipeline"), os.path.join(FIX, "ldm_sr_pipeline")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "reference.npz")))


# One run per folder for the whole module: its compiled programs are shared by the tests.
@pytest.fixture(scope="module")
def ldm_run():
    return dj.load_run(LDM)


@pytest.fixture(scope="module")
def sr_run():
    return dj.load_run(SR)


def _nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


def _close(got, want, tol=1e-4):
    np.testing.assert_allclose(np.asarray(got), want, atol=tol * max(1.0, np.abs(want).max()), rtol=0)


def test_ldm_pipeline_matches_diffusers(ref, ldm_run):
    """dj.load_run(LDMPipeline folder): the same latents and images as the pipeline from the same x_T."""
    run = ldm_run
    assert isinstance(run, LatentDiffusersRun) and run.pipeline == "LDMPipeline"
    assert run.latent_shape == (8, 8, 3) and run.image_shape == (16, 16, 3)
    assert run.sampler == dj.samplers.DDIM(50, eta=0.0, spacing="leading", steps_offset=0, clip_x0=0.0,
                                           final_alpha_one=True)
    x_T = _nhwc(ref["ldm_pipeline/x_T"])
    z, _ = jax.jit(lambda x: dj.sample(run.score_fn, run.sde, x, key=jax.random.key(0), sampler=run.sampler))(x_T)
    want = _nhwc(ref["ldm_pipeline/latents"]) * 0.7  # the pipeline decodes latents / scaling_factor (0.7)
    _close(z, want)
    assert np.abs(want - x_T).max() > 0.1  # the loop moved the latents
    _close(run.decode(np.asarray(z)), ref["ldm_pipeline/images"])
    assert 0.05 < ref["ldm_pipeline/images"].mean() < 0.95  # not clamped flat: the comparison sees the decoder
    images = run.generate(2, key=1)  # the shape sample.py's test below generates: compiled once
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.float32 and 0 <= images.min() <= images.max() <= 1


def test_ldm_super_resolution_pipeline_matches_diffusers(ref, sr_run):
    """LDMSuperResolutionPipeline: latents + low-res image concatenated, 100 DDIM steps, unscaled decode."""
    run = sr_run
    assert run.pipeline == "LDMSuperResolutionPipeline" and run.latent_channels == 3
    assert run.sampler.steps == 100 and run.capabilities[0] == "restore"
    x_T, low = _nhwc(ref["ldm_sr_pipeline/x_T"]), _nhwc(ref["ldm_sr_pipeline/low_res"])
    score = run.score_fn
    z, _ = jax.jit(lambda x, c: dj.sample(lambda z, t: score(z, t, cond=c), run.sde, x, key=jax.random.key(0),
                                          sampler=run.sampler))(x_T, low)
    _close(z, _nhwc(ref["ldm_sr_pipeline/latents"]))
    _close(run.decode(np.asarray(z)), ref["ldm_sr_pipeline/images"])
    out = run.restore(low[0] / 2 + 0.5, key=0)  # one (h, w, 3) image in [0, 1] -> 2x (the tiny VQ's factor)
    assert out.shape == (16, 16, 3) and 0 <= out.min() <= out.max() <= 1
    with pytest.raises(ValueError, match="cond= is required"):
        score(x_T, np.ones(2, np.float32))
    with pytest.raises(ValueError, match="multiples of 2"):
        run.restore(np.zeros((1, 7, 8, 3), np.float32))
    with pytest.raises(ValueError, match="no masks"):
        run.restore(low / 2 + 0.5, masks=np.ones((8, 8)))


def test_latent_runs_refuse_what_they_cannot_do(tmp_path, ldm_run, sr_run):
    ldm, sr = ldm_run, sr_run
    with pytest.raises(ValueError, match="it can: \\['generate', 'encode', 'decode'"):
        ldm.restore(np.zeros((1, 8, 8, 3)))
    with pytest.raises(ValueError, match="it can: \\['restore'"):
        sr.generate(1)
    with pytest.raises(ValueError, match="cannot do that"):
        ldm.translate(np.zeros((1, 16, 16, 3)))
    images = ldm.generate(2, key=0)[:1]
    z = ldm.encode(images)  # scaled latents (times scaling_factor), VQ before quantising
    assert z.shape == (1, 8, 8, 3)
    assert sr.encode(images).shape == (1, 8, 8, 3)
    with pytest.raises(ValueError, match="latents must be"):
        ldm.decode(np.zeros((1, 8, 8, 4)))
    from diffjax.interop import save_diffusers_folder

    with pytest.raises(ValueError, match="latent diffusion run"):
        save_diffusers_folder(ldm, str(tmp_path / "out"))


def test_sample_py_on_latent_pipeline_folders(tmp_path, ldm_run, sr_run, monkeypatch):
    """sample.py's folder path: LDMPipeline generates, LDMSuperResolutionPipeline upscales --input's images."""
    from PIL import Image

    from diffjax import runs

    monkeypatch.setattr(runs, "load_run", {LDM: ldm_run, SR: sr_run}.get)  # the module's runs, compiled once
    out = runs.sample_from_folder(LDM, output=str(tmp_path / "gen"), num=2, seed=0)
    assert out["num"] == 2 and len([n for n in os.listdir(tmp_path / "gen") if n.endswith(".png")]) >= 2
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "in" / name)
    out = runs.sample_from_folder(SR, output=str(tmp_path / "sr"), input_dir=str(tmp_path / "in"))
    assert out["num"] == 2
    for name in ("a.png", "b.png"):
        assert Image.open(tmp_path / "sr" / name).size == (16, 16)
    with pytest.raises(ValueError, match="it can: \\['generate'"):
        runs.sample_from_folder(LDM, output=str(tmp_path / "x"), input_dir=str(tmp_path / "in"))
