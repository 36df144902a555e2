"""The command lines: train.py / sample.py, and bad input failing early and cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from train_fixtures import snapshot, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    from train import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    train_and_evaluate(tiny_config(num_steps=2), workdir)
    return workdir


def test_sample_py_writes_images(trained_workdir, tmp_path):
    out_dir = str(tmp_path / "out")
    result = _run("sample.py", "--workdir", trained_workdir, "--num", "3", "--output", out_dir,
                  "--config.sampling.sampler=dpm_solver_pp", "--config.sampling.steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(out_dir)) == ["000000.png", "000001.png", "000002.png", "grid.png"]
    image = np.asarray(Image.open(os.path.join(out_dir, "000000.png")))
    assert image.shape == (8, 8) and image.dtype == np.uint8
    assert "dpm_solver_pp" in result.stdout


def test_sample_in_process_with_another_sampler(trained_workdir, tmp_path):
    from sample import load_run_config, sample_from_workdir

    config = load_run_config(trained_workdir)
    config.sampling.sampler = "heun"
    config.sampling.steps = 2
    info = sample_from_workdir(config, trained_workdir, output=str(tmp_path / "o"), num=2)
    assert info["step"] == 2 and len(os.listdir(tmp_path / "o")) == 3
    import diffjax as dj

    assert isinstance(dj.load_run(trained_workdir), dj.Run)  # a DDPM run is a dj.Run


def test_sample_py_without_a_run_says_what_it_needs(tmp_path):
    result = _run("sample.py", "--workdir", str(tmp_path))
    assert result.returncode != 0
    assert "config.json" in result.stderr and "train.py" in result.stderr


def test_sample_py_refuses_partial_multi_host_flags(trained_workdir, tmp_path):
    out_dir = str(tmp_path / "out")
    result = _run("sample.py", "--workdir", trained_workdir, "--output", out_dir,
                  "--coordinator_address=127.0.0.1:1234", "--num_processes=2")
    assert result.returncode != 0
    assert "missing ['--process_id']" in result.stderr, result.stderr[-2000:]
    assert not os.path.exists(out_dir)


def test_train_py_rejects_unknown_override_before_writing(tmp_path):
    workdir = str(tmp_path / "run")
    result = _run("train.py", "--config", "configs/ddpm_digits.py:smoke", "--workdir", workdir,
                  "--config.training.bacth_size=4")
    assert result.returncode != 0
    assert "unknown config key 'bacth_size'" in result.stderr and "batch_size" in result.stderr
    assert not os.path.exists(workdir)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: setattr(c.sampling, "sampler", "dmpsolver"), r"unknown sampler 'dmpsolver'; expected one of"),
        (lambda c: setattr(c.sde, "name", "vpp"), r"unknown sde 'vpp'; expected one of"),
        (lambda c: setattr(c.data, "image_size", 15), r"image_size=15 must be divisible by"),
        (lambda c: setattr(c.model, "attn_resolutions", (5,)), r"attn_resolutions \[5\] do not occur"),
    ],
    ids=["sampler", "sde", "image_size", "attention"],
)
def test_bad_config_fails_before_writing(tmp_path, change, message):
    from train import train_and_evaluate

    config = tiny_config(num_steps=1)
    config.data.image_size = 16
    config.model.channel_mult = (1, 2)
    change(config)
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(config, workdir)
    assert not os.path.exists(workdir)


def test_config_with_a_typo_key_fails_before_writing(tmp_path):
    from train import train_and_evaluate

    config = tiny_config(num_steps=1)
    with config.unlocked():
        config.training.bacth_size = 3
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="unknown key config.training.bacth_size"):
        train_and_evaluate(config, workdir)
    assert not os.path.exists(workdir)


def test_workdir_of_a_different_model_is_refused_untouched(trained_workdir):
    from train import train_and_evaluate

    before = snapshot(trained_workdir)
    config = tiny_config(num_steps=4)
    config.model.base_channels = 16
    with pytest.raises(ValueError, match=r"different model(.|\n)*base_channels: checkpoint has 8, this config has 16"
                                         r"(.|\n)*new --workdir"):
        train_and_evaluate(config, trained_workdir)
    assert snapshot(trained_workdir) == before
