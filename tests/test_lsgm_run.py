"""LSGM through the run stack: train.py's path, sample.py's path, the likelihood benchmark (smoke sizes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

import diffjax as dj
from diffjax.run_config import load_config_file, load_run_config
from diffjax import run_lsgm
from diffjax.run_lsgm import LSGMRun
from diffjax.runs import sample_from_workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "lsgm_fashion_mnist.py")


def test_lsgm_smoke_train_then_sample(tmp_path, monkeypatch):
    workdir = str(tmp_path / "run")
    summary = dj.train(CONFIG + ":smoke", workdir, overrides={"training.progress_bar": False})
    assert summary["step"] == 4 and np.isfinite(summary["final_bpd"]) and 0 < summary["final_bpd"] < 16
    metrics = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert 0 < metrics[-1]["mixing_mean"] < 0.1  # the mixed score starts near the Normal prior (logit -3)
    config = load_run_config(workdir)
    assert config.task.name == "lsgm"
    out = sample_from_workdir(config, workdir, output=str(tmp_path / "samples"), num=3)
    assert out["num"] == 3 and out["step"] == 4
    img = np.asarray(Image.open(tmp_path / "samples" / "000002.png"))
    assert img.shape == (32, 32) and img.dtype == np.uint8
    # dj.load_run gives an LSGMRun: the same samples as sample.py's first image, and a finite bound.
    traces = {"generate": 0, "bound": 0}

    def counting(name, make):  # counts traces of the whole sampling / bound program
        def make_counted(*args, **kwargs):
            inner = make(*args, **kwargs)

            def counted(*a):
                traces[name] += 1
                return inner(*a)
            return counted
        return make_counted

    monkeypatch.setattr(run_lsgm, "make_lsgm_generate_fn", counting("generate", run_lsgm.make_lsgm_generate_fn))
    monkeypatch.setattr(run_lsgm, "lsgm_bound_fn", counting("bound", run_lsgm.lsgm_bound_fn))
    run = dj.load_run(workdir)
    assert isinstance(run, LSGMRun) and isinstance(run, dj.Run) and run.step == 4
    assert run.sde is run.model.sde and isinstance(run.sampler, dj.samplers.Sampler)
    with pytest.raises(ValueError, match=r"run\.predict: .*it can: \['generate', 'nll_bound'"):
        run.predict(np.zeros((32, 32, 1), np.uint8))
    images = run.generate(3)  # [0, 1] floats, as Run.generate
    # Compile once: more batches and new keys reuse the one program (no per-batch retrace or re-jit).
    run.generate(5, key=1, batch_size=3)
    assert traces["generate"] == 1, traces
    assert images.shape == (3, 32, 32, 1) and images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(np.round(images[2, ..., 0] * 255).astype(np.uint8), img)
    bpd = run.nll_bound(images)
    assert bpd.shape == (3,) and np.all(np.isfinite(bpd)) and np.all(bpd > 0)
    run.nll_bound(images[::-1], key=2)
    assert traces["bound"] == 1, traces
    with pytest.raises(ValueError, match=r"images must be \(N, 32, 32, 1\)"):
        run.nll_bound(images[:, :16])
    with pytest.raises(ValueError, match="positive integer"):
        run.generate(0)
    # Resuming a finished run trains nothing and keeps the step.
    assert dj.train(CONFIG + ":smoke", workdir, overrides={"training.progress_bar": False})["step"] == 4


def test_lsgm_config_rejects_bad_settings(tmp_path):
    from diffjax.run_lsgm import build_lsgm_model

    config = load_config_file(CONFIG + ":smoke")
    config.lsgm.prior = "flow"
    with pytest.raises(ValueError, match="lsgm.prior must be one of"):
        build_lsgm_model(config, (32, 32, 1))
    config.lsgm.prior, config.sde.name = "sde", "ve"
    with pytest.raises(ValueError, match="sde.name='vp'"):
        build_lsgm_model(config, (32, 32, 1))


@pytest.mark.slow
def test_vae_alone_and_likelihood_benchmark(tmp_path):
    """--config.lsgm.prior=normal trains the VAE alone; benchmarks/likelihood.py prints test_bpd for both kinds."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for name, extra in (("vae", ["--config.lsgm.prior=normal"]), ("lsgm", [])):
        workdir = str(tmp_path / name)
        subprocess.run([sys.executable, "train.py", "--config", CONFIG + ":smoke", "--workdir", workdir, *extra],
                       cwd=ROOT, env=env, check=True, capture_output=True, timeout=900)
        result = subprocess.run([sys.executable, "benchmarks/likelihood.py", "--workdir", workdir, "--num", "4",
                                 "--batch", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["num_images"] == 4 and 0 < report["test_bpd"] < 16
        assert report["kind"] == ("vae_bound" if name == "vae" else "lsgm_bound")
    assert jax.numpy.isfinite(report["test_bpd_se"])
