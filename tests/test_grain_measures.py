"""The measures of benchmarks/ae_photos.py and benchmarks/sr_grain.py against constructed images
whose answer is known in closed form (a period-f pattern, white noise, pure hues, constant offsets)."""

from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        yield importlib.import_module("ae_photos"), importlib.import_module("sr_grain")
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))


def test_grid_score_finds_a_period_f_pattern_and_not_white_noise(bench):
    ae, _ = bench
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.05, (4, 64, 64, 3))
    # White noise spreads its power evenly: lattice and off-lattice means agree.
    assert 0.6 < ae.grid_score(noise, 4).mean() < 1.6
    # A tile of 4x4 pixels repeated over the image (any phase) puts its power on the lattice only.
    tile = rng.normal(0, 0.05, (1, 4, 4, 3))
    pattern = np.roll(np.tile(tile, (4, 16, 16, 1)), shift=(1, 3), axis=(1, 2))
    assert ae.grid_score(noise + pattern, 4).min() > 20
    # A smooth (low-pass) error, as a good reconstruction's, has little power at 1/4 cycle per pixel.
    smooth = gaussian_filter(noise, sigma=(0, 2, 2, 0))
    assert ae.grid_score(smooth, 4).max() < 0.3


def test_colour_measures_on_pure_hues_and_known_offsets(bench):
    ae, _ = bench
    green = np.broadcast_to(np.array([-1.0, 0.6, -1.0]), (2, 8, 8, 3))
    red = np.broadcast_to(np.array([0.8, -1.0, -1.0]), (2, 8, 8, 3))
    grey = np.zeros((2, 8, 8, 3))
    assert ae.green_mask(green).all() and not ae.green_mask(red).any() and not ae.green_mask(grey).any()
    cov = ae.colour_coverage(np.concatenate([green, red, grey]))
    assert cov["green_share"] == pytest.approx(1 / 3, abs=1e-4) and cov["coloured_share"] == pytest.approx(2 / 3, abs=1e-4)
    assert cov["coloured_share_per_bin"][0] == pytest.approx(1 / 3, abs=1e-4)  # red: hue 0
    assert cov["coloured_share_per_bin"][4] == pytest.approx(1 / 3, abs=1e-4)  # green: hue 120
    offset = np.array([10.0, 0.0, -5.0]) / 127.5
    assert ae.channel_error(grey + offset, grey) == pytest.approx([10.0, 0.0, -5.0], abs=1e-6)
    mask = np.zeros((2, 8, 8), bool)
    mask[0, :2] = True
    shifted = grey.copy()
    shifted[mask] += offset
    assert ae.channel_error(shifted, grey, mask) == pytest.approx([10.0, 0.0, -5.0], abs=1e-6)


def test_green_shift_and_paired_differences_on_known_offsets(bench):
    ae, _ = bench
    images = np.zeros((3, 16, 16, 3))
    images[..., 1] = 0.6  # green everywhere...
    images[..., 0] = images[..., 2] = -1.0
    images[2] = 0.0  # ...except crop 2 (grey: no green pixel, so no score)
    green = ae.green_mask(images)
    recon = images.copy()
    recon[0] += np.array([3.0, -4.0, 0.0]) / 127.5  # a 5-level shift (3-4-5 triangle)
    recon[1, :8] += np.array([0.0, 0.0, 24.0]) / 127.5  # 24 levels of blue on half the pixels: mean 12
    shift = ae.green_shift(recon, images, green)
    assert shift[:2] == pytest.approx([5.0, 12.0], abs=1e-6) and np.isnan(shift[2])
    first = {"psnr": np.array([20.0, 21.0, 22.0]), "lpips": np.array([0.3, 0.2, 0.1]),
             "grid_score_mean": np.ones(3), "green_shift": shift}
    later = {"psnr": first["psnr"] + 1.0, "lpips": first["lpips"], "grid_score_mean": np.ones(3) * 0.5,
             "green_shift": shift - np.array([1.0, 3.0, 0.0])}
    diff = ae.paired(first, later)
    assert diff["psnr"]["diff"] == pytest.approx(1.0) and diff["psnr"]["ci"] == pytest.approx([1.0, 1.0])
    assert diff["grid_score_mean"]["diff"] == pytest.approx(-0.5) and diff["lpips"]["diff"] == pytest.approx(0.0)
    assert diff["green_shift"]["diff"] == pytest.approx(-2.0) and diff["green_shift"]["crops"] == 2


def test_grain_of_white_noise_on_a_flat_image_is_its_high_pass_gain(bench):
    _, grain = bench
    flat = np.full((2, 96, 96, 3), 0.2)
    assert grain.flat_mask(flat).all()
    s = 3.0  # 8-bit levels
    noisy = flat + np.random.default_rng(1).normal(0, s / 127.5, flat.shape)
    delta = np.zeros((33, 33))
    delta[16, 16] = 1.0
    gain = np.sqrt(((delta - gaussian_filter(delta, 1.0)) ** 2).sum())  # the high-pass's noise gain
    inner = np.zeros((2, 96, 96), bool)
    inner[:, 8:-8, 8:-8] = True  # away from the filter's border handling
    assert grain.grain(noisy, inner) == pytest.approx(s * gain, rel=0.04)
    assert grain.grain(flat, inner) == pytest.approx(0.0, abs=1e-9)
    checker = np.indices((96, 96)).sum(0) % 2 * 0.5
    assert not grain.flat_mask(np.repeat(checker[None, ..., None], 3, -1)).any()


def test_content_classes(bench):
    _, grain = bench
    rng = np.random.default_rng(2)
    ramp = np.linspace(-0.8, 0.8, 64)[None, :, None, None] * np.ones((1, 64, 64, 3))
    images = np.concatenate([np.full((1, 64, 64, 3), 0.1), ramp, rng.uniform(-1, 1, (1, 64, 64, 3))])
    assert list(grain.content_classes(images, 0.06)) == ["smooth", "defocused", "textured"]
