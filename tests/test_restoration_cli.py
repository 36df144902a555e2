"""``sample.py --input IN --output OUT`` for restoration runs: the files it takes and refuses.

Every bad-input case raises a ValueError naming the file and what was expected,
before any sampling, and leaves no output file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from diffjax.pipelines.restoration import read_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (8, 8, 3)
ALL = ("inpainting", "colorization", "jpeg")


def _save(folder, name, array):
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(os.path.join(folder, name))


def _rgb(size=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _mask(size=8):
    m = np.zeros((size, size), np.uint8)
    m[2:5, 2:6] = 255
    return m


def test_reads_each_kind_and_converts_the_mask(tmp_path):
    d = str(tmp_path)
    _save(d, "a.png", _rgb())
    _save(d, "a_mask.png", _mask())
    _save(d, "b.png", _rgb()[..., 0])
    Image.fromarray(_rgb()).save(os.path.join(d, "c.jpg"), quality=20)
    items = {i.name: i for i in read_inputs(d, SHAPE, ALL)}
    assert {n: i.kind for n, i in items.items()} == {"a.png": "inpainting", "b.png": "colorization",
                                                     "c.png": "jpeg"}
    np.testing.assert_array_equal(items["a.png"].mask, (_mask() == 0).astype(np.float32))  # 1 = known
    assert items["b.png"].image.shape == (8, 8, 1) and items["c.png"].image.shape == SHAPE
    np.testing.assert_allclose(items["a.png"].image, _rgb() / 127.5 - 1, atol=1e-6)


def _bad_cases():
    """(name, files to write, kinds, expected message fragment)."""
    rgb, mask = _rgb(), _mask()
    gray_mask = mask.copy()
    gray_mask[0, 0] = 128
    return [
        ("missing mask", {"a.png": rgb}, ("inpainting",), "has no mask"),
        ("mis-sized mask", {"a.png": rgb, "a_mask.png": _mask(10)}, ("inpainting",), "mask .* is 10x10"),
        ("non-binary mask", {"a.png": rgb, "a_mask.png": gray_mask}, ("inpainting",), "binary"),
        ("empty mask", {"a.png": rgb, "a_mask.png": np.zeros((8, 8))}, ("inpainting",), "empty"),
        ("full mask", {"a.png": rgb, "a_mask.png": np.full((8, 8), 255)}, ("inpainting",), "whole image"),
        ("colour mask", {"a.png": rgb, "a_mask.png": rgb}, ("inpainting",), "black and white"),
        ("colour to colorization", {"a.png": rgb}, ("colorization",), "colour image"),
        ("png to jpeg task", {"a.png": rgb}, ("jpeg",), r"\.jpg"),
        ("mask to colorization", {"a.png": rgb[..., 0], "a_mask.png": mask}, ("colorization",), "comes with a mask"),
        ("orphan mask", {"a.png": rgb, "a_mask.png": mask, "b_mask.png": mask}, ("inpainting",), "without an image"),
        ("image smaller than the model", {"a.png": _rgb(6), "a_mask.png": _mask(6)}, ("inpainting",),
         r"a\.png is 6x6 \(WxH\), smaller than the model's 8x8"),
        ("no images", {}, ("inpainting",), "no input images"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_input_is_refused_with_a_clear_message(case, tmp_path):
    _, files, kinds, message = case
    os.makedirs(tmp_path, exist_ok=True)
    for name, array in files.items():
        _save(str(tmp_path), name, array)
    with pytest.raises(ValueError, match=message):
        read_inputs(str(tmp_path), SHAPE, kinds)


def test_images_larger_than_the_model_are_taken_with_their_own_size(tmp_path):
    d = str(tmp_path)
    _save(d, "a.png", _rgb(12))
    _save(d, "a_mask.png", _mask(12))
    Image.fromarray(_rgb(10)).save(os.path.join(d, "c.jpg"), quality=20)
    items = {i.name: i for i in read_inputs(d, SHAPE, ("inpainting", "jpeg"))}
    assert items["a.png"].image.shape == (12, 12, 3) and items["a.png"].mask.shape == (12, 12)
    assert items["c.png"].image.shape == (10, 10, 3)


def test_jpeg_given_to_inpainting_is_refused(tmp_path):
    Image.fromarray(_rgb()).save(os.path.join(tmp_path, "a.jpg"))
    with pytest.raises(ValueError, match="JPEG file"):
        read_inputs(str(tmp_path), SHAPE, ("inpainting",))
    with pytest.raises(ValueError, match="not a folder"):
        read_inputs(str(tmp_path / "nope"), SHAPE, ("inpainting",))


# -- through sample.py, on a tiny RePaint run (unconditional Fashion-MNIST model) ----
@pytest.fixture(scope="module")
def repaint_workdir(tmp_path_factory):
    from test_palette import tiny
    from train import train_and_evaluate

    config = tiny(os.path.join(ROOT, "configs", "repaint_fashion_mnist.py"))
    config.training.sample_every = 0
    config.eval.enabled = False
    workdir = str(tmp_path_factory.mktemp("repaint") / "run")
    train_and_evaluate(config, workdir)
    return workdir


def _sample_py(*args):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_sample_py_repaints_a_folder(repaint_workdir, tmp_path):
    gray = _rgb()[..., 0]
    _save(str(tmp_path / "in"), "x.png", gray)
    _save(str(tmp_path / "in"), "x_mask.png", _mask())
    out = str(tmp_path / "out")
    result = _sample_py("--workdir", repaint_workdir, "--input", str(tmp_path / "in"), "--output", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.listdir(out) == ["x.png"]
    restored = np.asarray(Image.open(os.path.join(out, "x.png")))
    keep = _mask() == 0
    np.testing.assert_array_equal(restored[keep], gray[keep])


def test_sample_py_bad_input_fails_cleanly_and_writes_nothing(repaint_workdir, tmp_path):
    _save(str(tmp_path / "in"), "a.png", _rgb()[..., 0])
    _save(str(tmp_path / "in"), "a_mask.png", _mask())
    _save(str(tmp_path / "in"), "b.png", _rgb()[..., 0])  # no mask: the whole run is refused
    out = str(tmp_path / "out")
    result = _sample_py("--workdir", repaint_workdir, "--input", str(tmp_path / "in"), "--output", out)
    assert result.returncode != 0
    assert "b.png has no mask" in result.stderr
    assert not os.path.exists(out)


def test_in_process_refusals(repaint_workdir, tmp_path):
    from sample import load_run_config, sample_from_workdir

    config = load_run_config(repaint_workdir)
    _save(str(tmp_path / "in"), "a.png", _rgb())  # colour image for a grayscale model
    _save(str(tmp_path / "in"), "a_mask.png", _mask())
    with pytest.raises(ValueError, match="colour image"):
        sample_from_workdir(config, repaint_workdir, output=str(tmp_path / "out"), input_dir=str(tmp_path / "in"))
    assert not os.path.exists(tmp_path / "out")
