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


def test_converted_workdir_is_an_ordinary_run(converted):
    """load_run(W) is a plain dj.Run equal to load_run(SRC): parameters, sde, sampler, score and the pipeline's loop."""
    with open(os.path.join(converted, RECORD_FILE)) as f:
        record = json.load(f)
    assert record["format"] == "diffusers" and record["pipeline"] == "DDPMPipeline" and record["task"] == "repaint"
    assert {"checkpoints", "config.json", "model_config.json"} <= set(os.listdir(converted))
    run, src = dj.load_run(converted), dj.load_run(PIPE)
    assert type(run) is dj.Run and type(src).__name__ == "DiffusersRun"
    assert run.config.model.architecture == "diffusers_unet2d" and run.step == 0
    _same_params(run, src)
    assert run.sampler == src.sampler and run.image_shape == src.image_shape and run.sde == src.sde
    x = jax.random.normal(jax.random.key(0), (2, *run.image_shape))
    t = jnp.array([0.3, 0.9])
    np.testing.assert_array_equal(np.asarray(run.score_fn(x, t)), np.asarray(src.score_fn(x, t)))
    # A config override, as for any run: the pipeline's loop at 5 steps, the same chain as the source's.
    short = dj.load_run(converted, {"sampling.steps": 5})
    ref = load_diffusers_run(PIPE, steps=5)
    assert short.sampler == ref.sampler
    a = dj.sample(short.score_fn, short.sde, x, key=jax.random.key(2), sampler=short.sampler)[0]
    b = dj.sample(ref.score_fn, ref.sde, x, key=jax.random.key(2), sampler=ref.sampler)[0]
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    images = short.generate(2, key=3)
    assert images.shape == (2, 8, 8, 3) and np.isfinite(images).all()


def test_repaint_sdedit_and_likelihood_on_the_converted_workdir(converted):
    """Every task through the ordinary Run path; RePaint and SDEdit tile images larger than the network."""
    run = dj.load_run(converted, {"task.repaint.steps": 10, "task.repaint.jump_length": 2,
                                  "task.repaint.jump_n_sample": 2, "sampling.steps": 20})
    images = np.random.default_rng(0).uniform(size=(2, 12, 12, 3)).astype(np.float32)
    mask = np.zeros((12, 12), np.float32)
    mask[:, :6] = 1
    out = run.restore(images, mask, key=0)
    assert out.shape == images.shape and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, :, :6], images[:, :, :6], atol=1.5 / 255)  # kept pixels (8-bit input scale)
    assert np.abs(out[:, :, 6:] - images[:, :, 6:]).mean() > 0.05  # the hole was filled, not copied
    # SDEdit from the first step of the chain leaves the guide nearly as it is; from t0 = 0.6 it does not.
    edited = run.translate(images, method="sdedit", t0=0.002, key=0)
    assert edited.shape == images.shape and np.abs(edited - images).max() < 0.1
    assert np.abs(run.translate(images, method="sdedit", t0=0.6, key=0) - images).mean() > 0.05
    x = jnp.asarray(images[:, :8, :8] * 2 - 1)
    logp, _ = dj.log_likelihood(run.score_fn, run.sde, x, key=jax.random.key(0))
    assert logp.shape == (2,) and np.isfinite(np.asarray(logp)).all()


def test_egsde_on_the_converted_workdir(converted, tmp_path):
    """EGSDE guides a converted score run with a domain classifier trained under the run's own process.

    The classifier is a real run of the classifier config (an initial state written through the library's
    checkpoint code, tests/untrained_runs.py) whose data and ``config.sde`` are the converted run's.
    """
    import ml_collections
    from untrained_runs import tiny_config, write_initial_run

    score = dj.load_run(converted, {"sampling.steps": 4})
    cls_config = tiny_config("translation_fashion_mnist.py:classifier",
                             {"data.name": "folder", "data.image_size": 8, "data.channels": 3})
    cls_config.sde = ml_collections.ConfigDict(score.config.sde.to_dict())
    classifier = write_initial_run(cls_config, str(tmp_path / "cls"), (8, 8, 3), num_classes=2)
    images = np.random.default_rng(1).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    out = score.translate(images, method="egsde", classifier_workdir=classifier, t0=0.3, key=0)
    assert out.shape == images.shape and np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    assert np.abs(out - images).mean() > 1e-3  # sampled back from t0, not the input returned
    from diffjax import fingerprint

    remembered = fingerprint._read(converted)[fingerprint.CLASSIFIER_ROLE]
    assert remembered == {fingerprint.fingerprint(classifier)["workdir"]: fingerprint.fingerprint(classifier)}


def test_sample_py_writes_images(converted, tmp_path):
    out = tmp_path / "samples"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--workdir", converted, "--num", "2",
                           "--output", str(out), "--config.sampling.steps=3"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert {"000000.png", "000001.png"} <= set(os.listdir(out))
    # A misspelt flag is one error line, as for any run.
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), "--workdir", converted,
                           "--config.sampling.stepz=3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1


def test_training_into_a_converted_workdir_is_refused(converted):
    """Fine-tuning a converted network is refused before anything is read or written, naming the reason."""
    from diffjax.run_config import load_run_config
    from diffjax.run_kinds import train_and_evaluate

    before = sorted(os.listdir(converted))
    with pytest.raises(ValueError, match="diffusers_unet2d.*does not train"):
        train_and_evaluate(load_run_config(converted), converted)
    assert sorted(os.listdir(converted)) == before


def test_adm_checkpoint_converts(tmp_path):
    """A guided-diffusion .pt (ADM key names, torch.save layout) becomes a workdir load_run reads."""
    entry = ADM_KEYS["tiny_one_head"]
    _write_torch_zip(tmp_path / "model.pt", _random_state(entry["adm_shapes"], seed=4))
    w = convert(str(tmp_path / "model.pt"), str(tmp_path / "w"), flags=entry["flags"])
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "w"]  # no staging folder left behind
    with open(os.path.join(w, RECORD_FILE)) as f:
        assert json.load(f)["flags"] == entry["flags"]
    run = dj.load_run(w)
    assert run.image_shape == (16, 16, 3) and type(run) is dj.Run
    assert run.model_config.unet["out_channels"] == 6 and run.model_config.out_channels == 3  # learned variance
    from diffjax.interop.guided_diffusion import convert_adm_checkpoint

    ref = dj.load_run(convert_adm_checkpoint(str(tmp_path / "model.pt"), entry["flags"], str(tmp_path / "adm")))
    _score_equal(run, ref, jnp.array([0.2, 0.7]))  # the first 3 of 6 output channels, as the folder's run reads them
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
    assert run.sampler == ref.sampler and type(run) is dj.Run
    assert (run.config.model.prediction, run.config.loss.time_input) == ("score", "sigma")
    _same_params(run, ref)
    _score_equal(run, ref, jnp.array([0.2, 0.7]))
