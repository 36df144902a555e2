"""``python -m diffjax.convert``: published checkpoints as workdirs that load_run and sample.py read.

Uses the tiny committed diffusers fixtures (tests/fixtures/diffusers/) and a
guided-diffusion ``.pt`` written in ADM's key names (as tests/test_interop_adm.py does).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffjax as dj
from diffjax.convert import RECORD_FILE, convert
from diffjax.interop.diffusers_run import load_diffusers_run
from test_interop_adm import ADM_KEYS, _Exploit, _random_state, _torch_like_zip, _write_torch_zip

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "diffusers")
PIPE = os.path.join(FIX, "ddpm_pipeline")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return convert(PIPE, str(tmp_path_factory.mktemp("conv") / "w"))


def _same_params(a, b):
    la, lb = jax.tree.leaves(a.params), jax.tree.leaves(b.params)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_converted_workdir_loads_as_the_source(converted):
    """load_run(W) equals load_run(SRC): parameters, sde, sampler, score and generated images (same key)."""
    with open(os.path.join(converted, RECORD_FILE)) as f:
        record = json.load(f)
    assert record["format"] == "diffusers" and record["pipeline"] == "DDPMPipeline"
    run, src = dj.load_run(converted), dj.load_run(PIPE)
    assert type(run).__name__ == "DiffusersRun"
    with pytest.raises(ValueError, match="no diffjax config to override"):
        dj.load_run(converted, {"sampling.steps": 5})
    _same_params(run, src)
    assert run.sampler == src.sampler and run.image_shape == src.image_shape
    assert (run.sde.num_steps, run.sde.beta_schedule) == (src.sde.num_steps, src.sde.beta_schedule)
    x = jax.random.normal(jax.random.key(0), (2, *run.image_shape))
    t = jnp.array([0.3, 0.9])
    np.testing.assert_array_equal(np.asarray(run.score_fn(x, t)), np.asarray(src.score_fn(x, t)))
    short = dj.samplers.DDIM(5, eta=0.0)
    np.testing.assert_allclose(run.generate(2, key=3, sampler=short), src.generate(2, key=3, sampler=short),
                               atol=1e-6)


def test_repaint_and_sdedit_on_the_converted_workdir(converted):
    run = load_diffusers_run(converted, pipeline="DDIMPipeline", steps=5)
    src = load_diffusers_run(PIPE, pipeline="DDIMPipeline", steps=5)
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    mask = np.zeros((8, 8), np.float32)
    mask[:, :4] = 1
    out = run.restore(images, mask, key=0, steps=10, jump_length=2, jump_n_sample=2)
    np.testing.assert_allclose(out[:, :, :4], images[:, :, :4], atol=1e-5)
    np.testing.assert_allclose(out, src.restore(images, mask, key=0, steps=10, jump_length=2, jump_n_sample=2),
                               atol=1e-6)
    edited = run.translate(images, t0=0.3, key=0)
    np.testing.assert_allclose(edited, src.translate(images, t0=0.3, key=0), atol=1e-6)


def test_sample_py_writes_images(converted, tmp_path):
    out = tmp_path / "samples"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--workdir", converted, "--num", "2",
                           "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["000000.png", "000001.png", "grid.png"]
    # Flags of a diffjax config do not apply to a diffusers folder: one error line.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--workdir", converted,
                           "--config.sampling.steps=3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_training_into_a_converted_workdir_is_refused(converted):
    from diffjax.run_kinds import train_and_evaluate

    with pytest.raises(ValueError, match="does not train"):
        train_and_evaluate(dj.run_config.get_base_config(), converted)


def test_adm_checkpoint_converts(tmp_path):
    """A guided-diffusion .pt (ADM key names, torch.save layout) becomes a workdir load_run reads."""
    entry = ADM_KEYS["tiny_one_head"]
    _write_torch_zip(tmp_path / "model.pt", _random_state(entry["adm_shapes"], seed=4))
    w = convert(str(tmp_path / "model.pt"), str(tmp_path / "w"), flags=entry["flags"])
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "w"]  # no staging folder left behind
    with open(os.path.join(w, RECORD_FILE)) as f:
        assert json.load(f)["flags"] == entry["flags"]
    run = dj.load_run(w)
    assert run.image_shape == (16, 16, 3) and run.schedule.learned_variance
    images = run.generate(1, key=0, sampler=dj.samplers.DDIM(3, eta=0.0))
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "diffjax.convert", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_malicious_pickle_is_refused_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    _torch_like_zip(tmp_path / "evil.pt", pickle.dumps({"w": _Exploit(os.system, f"touch {marker}")}, protocol=4))
    proc = _cli(str(tmp_path / "evil.pt"), "--workdir", str(tmp_path / "w"), "--flags", ADM_KEYS["tiny_one_head"]["flags"])
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "system" in lines[0], proc.stderr
    assert not marker.exists()
    assert sorted(os.listdir(tmp_path)) == ["evil.pt"]  # nothing written


@pytest.mark.parametrize("case", ["missing", "unknown", "nonempty", "no_flags"])
def test_bad_input_is_one_error_line(tmp_path, case):
    w = tmp_path / "w"
    src = PIPE
    if case == "missing":
        src = str(tmp_path / "nope")
    elif case == "unknown":
        (tmp_path / "model.txt").write_text("x")
        src = str(tmp_path / "model.txt")
    elif case == "nonempty":
        w.mkdir()
        (w / "keep").write_text("x")
    else:
        (tmp_path / "model.pt").write_bytes(b"")
        src = str(tmp_path / "model.pt")
    with pytest.raises(ValueError, match={"missing": "does not exist", "unknown": "not a known format",
                                          "nonempty": "not empty", "no_flags": "--flags"}[case]):
        convert(src, str(w))
    if case == "nonempty":
        assert os.listdir(w) == ["keep"]
    else:
        assert not w.exists()


def _score_equal(a, b, t):
    x = jax.random.normal(jax.random.key(1), (2, *a.image_shape))
    np.testing.assert_array_equal(np.asarray(a.score_fn(x, t)), np.asarray(b.score_fn(x, t)))


def test_score_sde_ve_pipeline_and_the_command_line(tmp_path):
    """A ScoreSdeVePipeline folder (NCSN++ fixture) converts through main() with its VE scheduler kept."""
    import shutil

    from diffjax.convert import main

    src = tmp_path / "ve"
    shutil.copytree(os.path.join(FIX, "ncsnpp"), src / "unet")
    (src / "scheduler").mkdir()
    (src / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 50.0, "snr": 0.16,
         "sampling_eps": 1e-5, "num_train_timesteps": 20}))
    (src / "model_index.json").write_text(json.dumps(
        {"_class_name": "ScoreSdeVePipeline", "scheduler": ["diffusers", "ScoreSdeVeScheduler"],
         "unet": ["diffusers", "UNet2DModel"]}))
    w = main([str(src), "--workdir", str(tmp_path / "w")])
    run, ref = dj.load_run(w), dj.load_run(str(src))
    assert run.sde == ref.sde == dj.VESDE(sigma_min=0.01, sigma_max=50.0, eps=1e-5)
    assert run.sampler == ref.sampler and run.scheduler_config == ref.scheduler_config
    _same_params(run, ref)
    _score_equal(run, ref, jnp.array([0.2, 0.7]))
