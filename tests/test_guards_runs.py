"""Guards on trained smoke runs: checkpoint fallback through sample.py and train.py resume (case 5),
and a retrained autoencoder refused by a latent run (case 2, slow: trains three runs).
"""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from test_guards_checkpoint import damage_step
from train_fixtures import tiny_config

from diffjax.checkpoint import CHECKPOINT_DIR, UNREADABLE_DIR
from diffjax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    """A tiny digits run with checkpoints at steps 2 and 4 (trained once for the module)."""
    from diffjax.run_kinds import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("guards") / "run")
    config = tiny_config(num_steps=4)
    config.training.ckpt_every = 2
    train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, CHECKPOINT_DIR))) == ["2", "4"]
    return workdir


def _copy(workdir, tmp_path) -> str:
    copy = str(tmp_path / "run")
    shutil.copytree(workdir, copy)
    return copy


def test_sampling_falls_back_to_the_newest_intact_checkpoint(two_checkpoints, tmp_path, caplog):
    from diffjax.run_config import load_run_config
    from diffjax.runs import sample_from_workdir

    workdir = _copy(two_checkpoints, tmp_path)
    damage_step(os.path.join(workdir, CHECKPOINT_DIR), 4)
    with caplog.at_level(logging.WARNING, logger="diffjax.checkpoint"):
        info = sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "out"), num=2)
    assert info["step"] == 2 and len(os.listdir(tmp_path / "out")) == 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "diffjax.checkpoint"]
    assert len(warnings) == 1 and "step 4" in warnings[0] and "using step 2" in warnings[0]
    assert os.path.isdir(os.path.join(workdir, CHECKPOINT_DIR, "4"))  # sampling moves nothing


def test_sampling_with_no_intact_checkpoint_says_so_in_one_line(two_checkpoints, tmp_path):
    from diffjax.run_config import load_run_config
    from diffjax.runs import sample_from_workdir

    workdir = _copy(two_checkpoints, tmp_path)
    for step in (2, 4):
        damage_step(os.path.join(workdir, CHECKPOINT_DIR), step)
    with pytest.raises(ValueError) as info:
        sample_from_workdir(load_run_config(workdir), workdir, output=str(tmp_path / "out"), num=2)
    assert "can be restored" in str(info.value) and "[2, 4]" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


@pytest.mark.slow  # a second compile of the train step: ~80 s on a shared 2-core machine
def test_resume_falls_back_and_rewrites_the_damaged_step(two_checkpoints, tmp_path, caplog):
    from diffjax.run_kinds import train_and_evaluate

    workdir = _copy(two_checkpoints, tmp_path)
    damage_step(os.path.join(workdir, CHECKPOINT_DIR), 4)
    config = tiny_config(num_steps=6)
    config.training.ckpt_every = 2
    with caplog.at_level(logging.WARNING, logger="diffjax.checkpoint"):
        train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, CHECKPOINT_DIR)), key=int) == ["2", "4", "6"]
    assert os.listdir(os.path.join(workdir, UNREADABLE_DIR)) == ["4"]  # kept, not deleted
    messages = [r.getMessage() for r in caplog.records if r.name == "diffjax.checkpoint"]
    assert any("step 4" in m and "using step 2" in m for m in messages), messages


# -- (2) end to end: a latent run and its autoencoder ------------------------------------------------


def _ldm_config(name, **overrides):
    from test_ldm import _config

    return _config(name, **{"training.num_steps": 2, "training.ckpt_every": 2, **overrides})


@pytest.mark.slow
@pytest.mark.timeout(2400)  # three smoke trainings: ~10 min on a shared 2-core machine
def test_latent_run_refuses_an_autoencoder_retrained_at_another_size(tmp_path):
    import diffjax as dj
    from diffjax.run_config import load_run_config
    from diffjax.runs import sample_from_workdir

    ae, sr = str(tmp_path / "ae"), str(tmp_path / "sr")
    no_lpips = {"autoencoder.perceptual_weight": 0.0, "eval.enabled": False}
    dj.train(_ldm_config("autoencoder_photos.py", **no_lpips), ae)
    dj.train(_ldm_config("ldm_photos_sr4.py", **{"autoencoder.workdir": ae}), sr)
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(inputs / "a.png")
    shutil.rmtree(ae)  # retrained in the same place, with 5 latent channels instead of 3
    dj.train(_ldm_config("autoencoder_photos.py", **no_lpips, **{"autoencoder.z_channels": 5}), ae)
    for action in (lambda: dj.load_run(sr).restore(np.zeros((1, 16, 16, 3), np.float32)),
                   lambda: sample_from_workdir(load_run_config(sr), sr, output=str(tmp_path / "out"),
                                               input_dir=str(inputs))):
        with pytest.raises(UserError) as info:
            action()
        message = str(info.value)
        assert "retrained at another size" in message and "z_channels=5" in message and "z_channels=3" in message
    assert not (tmp_path / "out").exists()
