"""``sample.py --input IN --output OUT --config.translation.method=sdedit|egsde`` on smoke runs.

One tiny target-domain score run (an untrained initial state) and one
domain-classifier run (16x16, a few steps) are made once for the module; translation then runs through
:func:`diffjax.runs.sample_from_workdir`, which is all ``sample.py`` does after
parsing its flags. Every refusal happens before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from untrained_runs import write_initial_run

from diffjax.run_config import apply_overrides, load_config_file, load_run_config
from diffjax.runs import load_run, sample_from_workdir, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny training run (compiles) in the fixture: minutes on a busy 2-core machine.
pytestmark = pytest.mark.timeout(1800)
CONFIG = os.path.join(ROOT, "configs", "translation_fashion_mnist.py")
SMALL = {"data.image_size": 16, "training.num_steps": 4, "training.ckpt_every": 4, "training.sample_every": 0,
         "eval.enabled": False, "training.progress_bar": False, "sampling.steps": 3, "sampling.batch_size": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    score, cls = str(root / "score"), str(root / "cls")
    # The score run is an initial state written as train.py writes it (tests/untrained_runs.py):
    # translation needs a restorable run, not a trained one, and test_pnp_uses.py trains this
    # very config with these overrides. The domain classifier is trained: no other test trains
    # that task through the run stack.
    score_config = apply_overrides(load_config_file(f"{CONFIG}:score_smoke"), SMALL)
    write_initial_run(score_config, score, (16, 16, 1))
    train(f"{CONFIG}:classifier_smoke", cls, SMALL)
    inputs = str(root / "in")
    os.makedirs(inputs)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(os.path.join(inputs, "a.png"))
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(os.path.join(inputs, "b.png"))
    return score, cls, inputs, root


def _translate(workdir, inputs, output, **translation):
    config = apply_overrides(load_run_config(workdir), {f"translation.{k}": v for k, v in translation.items()})
    return sample_from_workdir(config, workdir, output=output, input_dir=inputs)


@pytest.mark.parametrize("method", ["sdedit", "egsde"])
def test_translates_every_png_to_the_same_names(runs, method):
    score, cls, inputs, root = runs
    out = str(root / f"out_{method}")
    summary = _translate(score, inputs, out, method=method, t0=0.5, classifier_workdir=cls)
    assert summary["num"] == 2 and summary["method"] == method
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]
    for name in ("a.png", "b.png"):
        with Image.open(os.path.join(out, name)) as img:
            assert img.size == (16, 16) and img.mode == "L"  # the model's grayscale channel
    if method == "egsde":  # the classifier's fingerprint is recorded in the score run at its first use
        from diffjax import fingerprint

        with open(os.path.join(score, fingerprint.FINGERPRINT_FILE)) as f:
            recorded = json.load(f)[fingerprint.CLASSIFIER_ROLE][os.path.abspath(cls)]
        assert recorded == fingerprint.fingerprint(cls)


def test_library_call_matches_the_command_line(runs):
    score, cls, inputs, root = runs
    out = str(root / "out_lib")
    _translate(score, inputs, out, method="sdedit", t0=0.4)
    run = load_run(score, {"translation.t0": 0.4})
    with Image.open(os.path.join(inputs, "a.png")) as img:
        pixels = np.asarray(img)[None, ..., None]
    with Image.open(os.path.join(inputs, "b.png")) as img:
        rgb = np.asarray(img, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    images = np.concatenate([pixels, rgb[None, ..., None]]).astype(np.float32) / 255.0
    arrays = run.translate(images, method="sdedit")
    with Image.open(os.path.join(out, "a.png")) as img:
        np.testing.assert_allclose(np.asarray(img) / 255.0, arrays[0, ..., 0], atol=1 / 255 + 1e-6)
    # The t0 keyword overrides the config's level: the same level gives the same images,
    # another level other images (t0 is traced, so neither call compiles again).
    np.testing.assert_array_equal(run.translate(images, method="sdedit", t0=0.4), arrays)
    assert np.abs(run.translate(images, method="sdedit", t0=0.8) - arrays).max() > 0.05
    for bad in (0.0, 1.5, "0.4", True):
        with pytest.raises(ValueError, match="t0"):
            run.translate(images, method="sdedit", t0=bad)


def _refused(runs, match, workdir=None, inputs=None, **translation):
    score, cls, default_inputs, root = runs
    out = str(root / f"refused_{len(os.listdir(root))}")
    with pytest.raises(ValueError, match=match):
        _translate(workdir or score, inputs or default_inputs, out, **translation)
    assert not os.path.exists(out)


def test_refusals_before_anything_is_written(runs, tmp_path):
    score, cls, inputs, root = runs
    _refused(runs, "needs a domain-classifier run", method="egsde")
    _refused(runs, "domain classifier, not a score model", workdir=cls, method="sdedit")
    _refused(runs, "must be one of", method="cyclegan")
    # A classifier of other domains: the same run with its stored classes changed.
    other = str(tmp_path / "other_cls")
    shutil.copytree(cls, other)
    path = os.path.join(other, "config.json")
    with open(path) as f:
        stored = json.load(f)
    stored["data"]["classes"] = [1, 2]
    with open(path, "w") as f:
        json.dump(stored, f)
    _refused(runs, "target domain", method="egsde", classifier_workdir=other)
    stored["data"]["classes"] = [7, 9]
    with open(path, "w") as f:
        json.dump(stored, f)
    model_path = os.path.join(other, "model_config.json")  # the network's own size is what counts
    with open(model_path) as f:
        model = json.load(f)
    model["image_size"] = 32
    with open(model_path, "w") as f:
        json.dump(model, f)
    # The size the classifier has, the size the score run needs, and the classifier's workdir, in one message.
    _refused(runs, f"classifier run {other}: the classifier was trained on 32x32x1 .* images .*the score model on "
             "16x16x1 .*EGSDE needs a classifier of the score model's size", method="egsde", classifier_workdir=other)
    # Inputs of another size.
    bad = str(tmp_path / "bad_in")
    os.makedirs(bad)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(os.path.join(bad, "x.png"))
    _refused(runs, "must be 16x16", inputs=bad, method="sdedit")


def test_egsde_refuses_a_classifier_retrained_since_the_run_first_used_it(runs, tmp_path):
    """The first EGSDE use records the classifier's fingerprint in the score run; the classifier
    retrained in place afterwards (here: its checkpoint's bytes changed) is refused naming both fingerprints,
    before the classifier is restored or anything is written."""
    from diffjax import fingerprint
    from diffjax.checkpoint import CHECKPOINT_DIR

    score, cls, inputs, root = runs
    copy = str(tmp_path / "cls_copy")
    shutil.copytree(cls, copy)
    # First use: what every EGSDE translation does before sampling (restores the classifier, records it).
    load_run(score)._translation_classifier("egsde", copy)
    with open(os.path.join(score, fingerprint.FINGERPRINT_FILE)) as f:
        assert os.path.abspath(copy) in json.load(f)[fingerprint.CLASSIFIER_ROLE]
    before = fingerprint.describe(fingerprint.fingerprint(copy))
    step_dir = os.path.join(copy, CHECKPOINT_DIR, sorted(os.listdir(os.path.join(copy, CHECKPOINT_DIR)))[-1])
    files = sorted(os.path.join(r, n) for r, _, names in os.walk(step_dir) for n in names)
    with open(files[-1], "ab") as f:  # any byte of the saved parameters
        f.write(b"\0")
    after = fingerprint.describe(fingerprint.fingerprint(copy))
    with pytest.raises(ValueError) as info:
        _translate(score, inputs, str(tmp_path / "changed"), method="egsde", classifier_workdir=copy)
    message = str(info.value)
    assert "retrained (same step, other parameters)" in message and before in message and after in message
    assert copy in message and "\n" not in message
    assert not os.path.exists(tmp_path / "changed")


@pytest.mark.slow
def test_sample_py_command_line(runs):
    score, cls, inputs, root = runs
    out = str(root / "cli")
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "sample.py"), "--workdir", score, "--input", inputs, "--output", out,
         "--config.translation.method=egsde", f"--config.translation.classifier_workdir={cls}"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["a.png", "b.png"]


@pytest.mark.slow
def test_benchmark_smoke(runs, tmp_path):
    """benchmarks/translation.py end to end on the smoke runs: rows, plot and the JSON line."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import translation as bench

    score, cls, _, _ = runs
    plot = str(tmp_path / "plot.png")
    summary = bench.main(["--score_workdir", score, "--classifier_workdir", cls, "--smoke", "--steps", "2",
                          "--plot", plot])
    assert [(r["method"], r["t0"]) for r in summary["rows"]] == [
        ("sdedit", 0.3), ("sdedit", 0.4), ("egsde", 0.3), ("egsde", 0.4)]
    for row in summary["rows"]:
        assert 0.0 <= row["target_share"] <= 1.0 and -1.0 <= row["ssim"] <= 1.0 and np.isfinite(row["fd_alexnet"])
    assert os.path.getsize(plot) > 1000
