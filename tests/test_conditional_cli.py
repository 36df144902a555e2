"""The conditional-estimator configs end to end: smoke training, sample.py --input, run.restore, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import diffjax as dj
from configs import conditional_fashion_mnist_inpainting, conditional_photos_sr
from configs.default import get_base_config
from diffjax import builders


def _train(module, arg: str, workdir: str):
    from train import train_and_evaluate

    c = module.get_config(arg)
    c.training.progress_bar = False
    c.training.num_steps = c.training.ckpt_every = 4
    summary = train_and_evaluate(c, workdir)
    assert summary["step"] == 4 and np.isfinite(summary["final_loss"])
    return workdir


@pytest.mark.parametrize("module", [conditional_photos_sr, conditional_fashion_mnist_inpainting])
def test_every_argument_validates_and_picks_its_estimator(module):
    for method in ("cde", "cdiffe", "cmde"):
        for arg in (method, f"{method}_smoke"):
            c = module.get_config(arg)
            builders.validate_config(c, get_base_config())
            pipeline = builders.build_pipeline(c)
            assert pipeline.method == method and (pipeline.sde_y is not None) == (method == "cmde")
            assert builders.build_loss(c).takes_condition
    with pytest.raises(ValueError, match="cmde_smoke"):
        module.get_config("cmd")


@pytest.fixture(scope="module")
def sr_workdir(tmp_path_factory):
    # CMDE exercises the most: y diffused by its own process and its level fed to the network.
    return _train(conditional_photos_sr, "cmde_smoke", str(tmp_path_factory.mktemp("cmde") / "run"))


@pytest.mark.slow  # a second training (CMDE SR); the inpainting run covers the command line by default
def test_sample_py_super_resolves_a_folder_with_tiles(sr_workdir, tmp_path):
    from sample import load_run_config, sample_from_workdir

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)).save(inputs / "small.png")
    Image.fromarray(rng.integers(0, 255, (6, 9, 3), dtype=np.uint8)).save(inputs / "wide.png")  # tiled
    info = sample_from_workdir(load_run_config(sr_workdir), sr_workdir, output=str(tmp_path / "out"),
                               input_dir=str(inputs))
    assert info["num"] == 2
    assert np.asarray(Image.open(tmp_path / "out" / "small.png")).shape == (16, 16, 3)
    assert np.asarray(Image.open(tmp_path / "out" / "wide.png")).shape == (24, 36, 3)
    # The same run from Python: deterministic given the key.
    run = dj.load_run(sr_workdir)
    low = rng.integers(0, 255, (2, 4, 4, 3)).astype(np.uint8)
    a, b = run.restore(low, key=3), run.restore(low, key=3)
    assert a.shape == (2, 16, 16, 3) and np.array_equal(a, b)


@pytest.mark.slow
def test_sample_py_refuses_what_sr3_refuses_and_writes_nothing(sr_workdir, tmp_path):
    """SR3's validators: every offending file named at once, nothing written, --input required."""
    from sample import load_run_config, sample_from_workdir

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(folder / "tiny.png")  # below 16 / 4 = 4 pixels
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "photo.jpg", format="JPEG")
    config, out = load_run_config(sr_workdir), tmp_path / "out"
    with pytest.raises(ValueError, match=r"(?s)photo.jpg: a JPEG image.*tiny.png: 3x3 is too small"):
        sample_from_workdir(config, sr_workdir, output=str(out), input_dir=str(folder))
    assert not out.exists()
    with pytest.raises(ValueError, match="pass --input"):
        sample_from_workdir(config, sr_workdir, output=str(out))


def test_inpainting_smoke_run_fills_the_hole_and_keeps_the_rest(tmp_path):
    from sample import load_run_config, sample_from_workdir

    workdir = _train(conditional_fashion_mnist_inpainting, "cdiffe_smoke", str(tmp_path / "run"))
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)
    fill = np.zeros((16, 16), np.uint8)
    fill[4:10, 5:12] = 255
    Image.fromarray(image).save(inputs / "x.png")
    Image.fromarray(fill).save(inputs / "x_mask.png")
    Image.fromarray(image).save(inputs / "orphan.png")  # no mask: refused before anything is written
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="orphan.png has no mask"):
        sample_from_workdir(load_run_config(workdir), workdir, output=str(out), input_dir=str(inputs))
    assert not out.exists()
    (inputs / "orphan.png").unlink()
    sample_from_workdir(load_run_config(workdir), workdir, output=str(out), input_dir=str(inputs))
    restored = np.asarray(Image.open(out / "x.png"))
    assert restored.shape == (16, 16)
    keep = fill == 0
    assert np.abs(restored[keep].astype(int) - image[keep].astype(int)).max() <= 1  # known pixels pasted back
