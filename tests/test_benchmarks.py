"""benchmarks/restoration.py's command line: task subsets, one-run training, bad flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _restoration(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "restoration.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("tasks", ["", "inpainting,deblur", "colorization,"])
def test_bad_task_list_is_refused(tasks, tmp_path):
    result = _restoration("--root", str(tmp_path), "--tasks", tasks)
    assert result.returncode == 2
    assert "--tasks must be a comma-separated subset of inpainting,uncropping,colorization,jpeg" in result.stderr
    assert os.listdir(tmp_path) == []  # refused before anything is trained


def test_bad_inpainting_mask_list_is_refused(tmp_path):
    result = _restoration("--root", str(tmp_path), "--tasks", "inpainting", "--inpainting_masks", "box,strokes")
    assert result.returncode == 2
    assert "--inpainting_masks must be a comma-separated subset of free-form,box" in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_train_only_then_one_task(tmp_path, tmp_path_factory):
    """``--train_only`` trains one run and stops; ``--tasks`` then reuses it and trains nothing else."""
    root = str(tmp_path)
    trained = _restoration("--root", root, "--quick", "--train_only", "palette_colorization")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert os.listdir(root) == ["palette_colorization"]

    figure = str(tmp_path_factory.mktemp("figure") / "restoration_lpips.png")
    result = _restoration("--root", root, "--quick", "--tasks", "colorization", "--figure", figure)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.listdir(root) == ["palette_colorization"]
    with open(figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"  # the main figure, beside the table
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(r["task"], r["method"]) for r in report["rows"]] == [
        ("colorization", "Palette"), ("colorization", "grayscale input")]
    assert report["rows"][1]["lpips"] > 0


# -- smoke runs of the scripts whose tables the README quotes --------------------------------


def _script(name: str, *args: str, timeout: int = 600) -> dict:
    """Run ``benchmarks/<name>`` and return its final JSON line (asserting a clean exit)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_samplers_benchmark_smoke():
    report = _script("samplers.py", "--overhead-only", "--quick")
    assert report["benchmark"] == "samplers_overhead"
    for row in report["overhead"].values():
        assert row["nfe"] == 100 and row["sampler_s"] > 0 and row["scores_s"] > 0


def test_sliced_w2_closed_form():
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import jax

    from samplers import sliced_w2

    x = jax.random.normal(jax.random.key(0), (512, 4))
    reference = jax.numpy.tile(x, (4, 1))  # each sample repeated: the quantiles are x's own
    assert sliced_w2(x, reference, jax.random.key(1), 64) < 0.02
    # A shift by v moves every 1-D projection by u.v: sliced W2^2 = mean over u of (u.v)^2 = |v|^2 / d.
    v = jax.numpy.array([1.0, -2.0, 0.5, 2.0])
    got = sliced_w2(x + v, reference, jax.random.key(1), 4096)
    np.testing.assert_allclose(got, float(jax.numpy.linalg.norm(v)) / 2.0, rtol=0.05)


def test_train_throughput_smoke():
    report = _script("train_throughput.py", "--size", "tiny", "--batch", "2", "--repeats", "1",
                     "--sample-nfe", "2", "--matmul-n", "256")
    assert report["train_img_per_s"] > 0 and report["forward_img_per_s"] > 0


@pytest.mark.slow
def test_sr_and_x0_error_benchmarks_smoke(tmp_path):
    """One training step of the SR3 smoke config, then both scripts with every row type.

    Slow-marked: it compiles an SR3 training step, the regression baseline and three
    samplers in two processes (about a minute on an idle 2-core CPU), more than the
    default suite's budget allows.
    """
    from configs.sr3_photos_x4 import get_config
    from train import train_and_evaluate

    config = get_config("smoke")
    config.data.image_size = 32  # 8x8 -> 32x32 as in the benchmark: LPIPS needs 31 px
    config.training.num_steps = 1
    config.training.ckpt_every = 1
    config.training.sample_every = 0
    config.training.progress_bar = False
    config.eval.enabled = False
    workdir = str(tmp_path / "sr3")
    train_and_evaluate(config, workdir)
    report = _script("sr.py", "--workdir", workdir, "--num", "2", "--ancestral-steps", "2", "--dpm-steps", "2",
                     "--regression-steps", "1", "--seeds", "2", "--figure", str(tmp_path / "sr.png"))
    methods = [r["method"] for r in report["rows"]]
    assert methods[:2] == ["bicubic", "regression UNet (L2, 1 steps)"] and len(methods) == 5
    assert all(r["seeds"] == 2 for r in report["rows"][2:])
    assert {(c["a"], c["b"]) for c in report["comparisons"]} >= {(methods[2], "bicubic")}
    for c in report["comparisons"]:
        assert c["low"] <= c["diff"] <= c["high"]
        assert c["verdict"] in ("A better", "A worse", "inside the noise")
    x0 = _script("x0_error.py", "--workdir", workdir, "--num", "2")
    assert x0["benchmark"] == "x0_error" and len(x0["rows"]) == 7
    assert all(np.isfinite(r["x0_mse"]) for r in x0["rows"])


def test_accelerator_check_refuses_to_guess_a_missing_rate(tmp_path):
    """Without a measured float32 rate (and no STEPS) the session stops, naming the fix."""
    env = dict(os.environ, SKIP_THROUGHPUT="1", SKIP_SIZES="1", SKIP_DIFFUSERS="1", ROOT=str(tmp_path / "runs"),
               PYTHON=sys.executable)
    env.pop("STEPS", None)
    result = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "accelerator_check.sh"), str(tmp_path / "out"),
                             "1", "1"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "no float32 training rate" in result.stderr and "set STEPS=" in result.stderr
    assert os.listdir(tmp_path / "runs") == []  # nothing trained


def _seconds_long_run(workdir: str, config_file: str, **overrides) -> str:
    """Two training steps of ``configs/<config_file>:smoke`` into ``workdir`` (for a benchmark to read)."""
    import diffjax as dj

    dj.train(os.path.join(ROOT, "configs", config_file) + ":smoke", workdir,
             {"training.num_steps": 2, "training.sample_every": 0, "eval.enabled": False,
              "training.progress_bar": False, **overrides})
    return workdir


@pytest.mark.slow
def test_sdedit_photos_demo_smoke(tmp_path):
    """benchmarks/sdedit_photos.py on a seconds-long photos run: one column per t0, the table's figures, the PNG."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import sdedit_photos

    workdir = _seconds_long_run(str(tmp_path / "photos"), "translation_photos.py", **{"sampling.steps": 3})
    out = str(tmp_path / "demo.png")
    summary = sdedit_photos.main(["--workdir", workdir, "--num", "4", "--show", "2", "--t0", "0.1,0.3",
                                  "--out", out, "--scale", "1"])
    assert [e["t0"] for e in summary["edits"]] == [0.1, 0.3]
    assert all(np.isfinite(e["fd_alexnet"]) and -1 <= e["ssim"] <= 1 for e in summary["edits"])
    from PIL import Image

    assert Image.open(out).size == (32 * 4, 32 * 2)  # photo | painting | two edits; two rows


@pytest.mark.slow
def test_sampler_fd_smoke(tmp_path):
    """benchmarks/sampler_fd.py on a seconds-long digits run: every sampler row at each budget, finite figures."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import sampler_fd

    workdir = _seconds_long_run(str(tmp_path / "digits"), "ddpm_digits.py")
    summary = sampler_fd.main(["--workdir", workdir, "--num", "4", "--nfe", "2,4"])
    (run,) = summary["runs"]
    assert set(run["rows"]) == set(sampler_fd.sampler_rows())
    for row in run["rows"].values():
        assert set(row) == {"2", "4"}
        assert all(np.isfinite(c["fd_alexnet"]) and c["seconds_per_image"] > 0 for c in row.values())
    assert np.isfinite(run["converged"]["fd_alexnet"]) and np.isfinite(run["floor_train_vs_heldout"])


def test_every_benchmark_imports():
    """Each script's imports resolve (the scripts' smoke runs that train are slow-marked, so a
    renamed or removed library name they import would otherwise go unseen in the default suite)."""
    import importlib

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    names = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "benchmarks")) if f.endswith(".py"))
    assert "sampler_fd" in names and "restoration" in names
    for name in names:
        module = importlib.import_module(name)
        if name != "intervals":  # a helper module the restoration and SR scripts share
            assert callable(getattr(module, "main", None)), f"benchmarks/{name}.py has no main()"


@pytest.mark.slow
def test_segmentation_benchmark_smoke(tmp_path):
    """benchmarks/segmentation.py --quick end to end: every method's row, the refinement and the figure."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import segmentation

    figure = str(tmp_path / "segmentation.png")
    segmentation.main(["--root", str(tmp_path / "runs"), "--quick", "--figure", figure])  # 2 and 4 labelled
    with open(tmp_path / "runs" / "segmentation.json") as f:
        stored = json.load(f)
    assert set(stored["runs"]) == {f"{method}_{n}" for method in segmentation.METHODS for n in (2, 4)}
    for key, row in stored["runs"].items():
        assert 0.0 <= row["miou"] <= 1.0 and 0.0 <= row["pixel_accuracy"] <= 1.0
        assert row["num_labelled"] == int(key.rsplit("_", 1)[1])
    assert stored["pnp"] is not None and os.path.getsize(figure) > 0
    assert stored["pnp"]["weight"] in (1.0, 3.0) and set(stored["pnp"]["validation"]) == {"1.0", "3.0"}
    pairs = {(c["a"], c["b"]) for c in stored["comparisons"]}
    assert ("ddpm_4", "random_unet_4") in pairs and ("ddep_2", "random_init_2") in pairs
    assert ("refined", "classifier_argmax") in pairs
    assert all(np.isfinite(c["mean"]) and c["low"] <= c["high"] for c in stored["comparisons"])
