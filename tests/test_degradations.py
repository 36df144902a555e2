"""Masks (coverage, determinism, shape, binary), grayscale against known values, JPEG round trips."""

import jax.numpy as jnp
import numpy as np
import pytest

from diffjax import degradations as dg

SHAPES = [(8, 8), (32, 32), (40, 24)]

# (generator, the hole-fraction range it documents). Random families take a seed.
RANDOM_MASKS = {
    "free_form": (dg.free_form_mask, (0.0, 0.5)),
    "box": (dg.box_mask, (0.1, 0.3)),
    "irregular": (dg.irregular_mask, (0.15, 0.5)),
    "thin": (dg.thin_mask, (0.1, 0.4)),
    "thick": (dg.thick_mask, (0.2, 0.5)),
}


def _check_binary_float_mask(mask, shape):
    assert mask.shape == shape
    assert mask.dtype == np.float32
    assert set(np.unique(mask).tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", sorted(RANDOM_MASKS))
@pytest.mark.parametrize("shape", SHAPES)
def test_random_masks_coverage_shape_binary(name, shape):
    generate, (lo, hi) = RANDOM_MASKS[name]
    h, w = shape
    # Box sides are whole pixels: allow one row and one column of rounding.
    slack = (h + w) / (h * w) if name == "box" else 0.0
    for seed in range(8):
        mask = generate(shape, seed)
        _check_binary_float_mask(mask, shape)
        fraction = dg.hole_fraction(mask)
        assert 0.0 < fraction < 1.0
        assert lo - slack <= fraction <= hi + slack, (seed, fraction)


@pytest.mark.parametrize("name", sorted(RANDOM_MASKS))
def test_random_masks_deterministic_from_seed(name):
    generate, _ = RANDOM_MASKS[name]
    a = generate((32, 32), 123)
    b = generate((32, 32), np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    # Different seeds give different masks (for at least one of a few tries).
    assert any(not np.array_equal(a, generate((32, 32), s)) for s in range(5))


def test_free_form_parameters_change_coverage():
    thin = np.mean([dg.hole_fraction(dg.free_form_mask((64, 64), s, max_brush_width=3)) for s in range(10)])
    wide = np.mean([dg.hole_fraction(dg.free_form_mask((64, 64), s, max_brush_width=16)) for s in range(10)])
    assert wide > 2 * thin


@pytest.mark.parametrize("name", ["free_form", "irregular", "thin", "thick"])
def test_windowed_painting_matches_the_whole_grid(name, monkeypatch):
    """Brushes paint only near their shape; that must not cut any stroke or ellipse short."""
    generate, _ = RANDOM_MASKS[name]
    shapes = [(32, 32), (40, 24), (96, 64)]
    windowed = [generate(shape, seed) for shape in shapes for seed in range(6)]
    monkeypatch.setattr(dg, "_window", lambda shape, *_: (slice(None), slice(None)))
    whole = [generate(shape, seed) for shape in shapes for seed in range(6)]
    for a, b in zip(windowed, whole):
        np.testing.assert_array_equal(a, b)


def test_center_box_mask():
    mask = dg.center_box_mask((8, 8))
    _check_binary_float_mask(mask, (8, 8))
    assert dg.hole_fraction(mask) == 0.25
    assert mask[0].all() and mask[:, 0].all() and not mask[2:6, 2:6].any()


@pytest.mark.parametrize(
    "side, hole",
    [("left", np.s_[:, :4]), ("right", np.s_[:, 4:]), ("top", np.s_[:4]), ("bottom", np.s_[4:])],
)
def test_half_and_one_direction_uncrop(side, hole):
    for mask in (dg.half_mask((8, 8), side), dg.uncrop_mask((8, 8), side)):
        _check_binary_float_mask(mask, (8, 8))
        assert not mask[hole].any()
        assert dg.hole_fraction(mask) == 0.5


def test_four_direction_uncrop_and_expand():
    border = dg.uncrop_mask((16, 16), "all", border=0.25)
    _check_binary_float_mask(border, (16, 16))
    assert border[4:12, 4:12].all() and dg.hole_fraction(border) == 0.75
    expand = dg.expand_mask((16, 16), known_fraction=0.25)
    np.testing.assert_array_equal(expand, border)
    assert dg.hole_fraction(dg.expand_mask((40, 40), known_fraction=0.5)) == pytest.approx(0.5, abs=0.03)


def test_alternating_lines_and_super_resolution_grid():
    lines = dg.alternating_lines_mask((6, 5))
    _check_binary_float_mask(lines, (6, 5))
    np.testing.assert_array_equal(lines[:, 0], [1, 0, 1, 0, 1, 0])
    assert (dg.alternating_lines_mask((6, 5), known_rows="odd") == 1 - lines).all()
    grid = dg.super_resolution_mask((6, 6))
    _check_binary_float_mask(grid, (6, 6))
    assert dg.hole_fraction(grid) == 0.75
    assert grid[::2, ::2].all() and not grid[1::2].any() and not grid[:, 1::2].any()


@pytest.mark.parametrize(
    "call",
    [
        lambda: dg.box_mask((3, 8), 0),
        lambda: dg.free_form_mask((8, 2), 0),
        lambda: dg.center_box_mask((3, 3)),
        lambda: dg.half_mask((8, 8), "diagonal"),
        lambda: dg.uncrop_mask((8, 8), "up"),
        lambda: dg.uncrop_mask((8, 8), "all", border=0.5),
        lambda: dg.irregular_mask((16, 16), 0, hole_range=(0.6, 0.4)),
        lambda: dg.irregular_mask((16, 16), 0, hole_range=(0.0, 1.0)),
        lambda: dg.thin_mask((16, 16), 0, hole_range=(0.1, 1.2)),
        lambda: dg.box_mask((16, 16), 0, area_range=(-0.1, 0.2)),
        lambda: dg.expand_mask((16, 16), known_fraction=1.0),
        lambda: dg.super_resolution_mask((8, 8), factor=1),
        lambda: dg.alternating_lines_mask((8, 8), known_rows="all"),
        lambda: dg.box_mask((16, 16), rng="seed"),
    ],
)
def test_bad_mask_arguments_raise(call):
    with pytest.raises(ValueError):
        call()


def test_grayscale_known_values():
    # Pure red, green, blue, white, black in [-1, 1].
    rgb = jnp.array([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, 1], [-1, -1, -1]])
    gray = (np.asarray(dg.to_grayscale(rgb, keep_channels=False))[:, 0] + 1) / 2
    np.testing.assert_allclose(gray, [0.299, 0.587, 0.114, 1.0, 0.0], atol=1e-6)
    three = np.asarray(dg.to_grayscale(rgb))
    assert three.shape == (5, 3)
    np.testing.assert_allclose(three, np.repeat(2 * gray[:, None] - 1, 3, axis=1), atol=1e-6)
    assert dg.to_grayscale(jnp.zeros((2, 4, 4, 3)), keep_channels=False).shape == (2, 4, 4, 1)


def test_grayscale_bad_input():
    with pytest.raises(ValueError, match="3 channels"):
        dg.to_grayscale(jnp.zeros((4, 4, 1)))
    with pytest.raises(ValueError, match="floating"):
        dg.to_grayscale(jnp.zeros((4, 4, 3), jnp.uint8))


def _smooth_images(batch=2, size=32):
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + 2 * y), np.cos(5 * y), np.sin(15 * x * y)], -1)
    return (0.8 * base[None] * np.linspace(1.0, 0.5, batch)[:, None, None, None]).astype(np.float32)


def _psnr(a, b):  # images in [-1, 1]: peak-to-peak 2
    return 10 * np.log10(4.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


def test_jpeg_quality_orders_psnr():
    images = _smooth_images()
    high, low = dg.jpeg_compress(images, 95), dg.jpeg_compress(images, 5)
    assert high.shape == images.shape and high.dtype == images.dtype
    assert _psnr(high, images) > 33.0  # close to the input
    assert _psnr(low, images) < _psnr(high, images) - 10.0  # visibly worse
    assert np.abs(high).max() <= 1.0


def test_jpeg_uint8_and_shapes():
    images = np.round((_smooth_images(1)[0] + 1) * 127.5).astype(np.uint8)
    out = dg.jpeg_compress(images, 90)
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.abs(out.astype(int) - images).mean() < 4
    gray = dg.jpeg_compress(images[..., 0], 90)
    assert gray.shape == images.shape[:2]
    assert dg.jpeg_compress(images[..., :1], 90).shape == images.shape[:2] + (1,)


@pytest.mark.parametrize("quality", [0, 96, 50.0, True])
def test_jpeg_bad_quality(quality):
    with pytest.raises(ValueError, match="quality"):
        dg.jpeg_compress(np.zeros((8, 8, 3), np.uint8), quality)


def test_jpeg_bad_images():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        dg.jpeg_compress(np.full((8, 8, 3), 3.0, np.float32), 50)
    with pytest.raises(ValueError, match="channels"):
        dg.jpeg_compress(np.zeros((8, 8, 2), np.uint8), 50)
    with pytest.raises(ValueError, match="dtype"):
        dg.jpeg_compress(np.zeros((8, 8, 3), np.int32), 50)


# -- stroke paintings ------------------------------------------------------------
def _photo_crop():
    from skimage import data

    return data.astronaut()[::8, ::8].astype(np.float32) / 127.5 - 1.0


def test_stroke_painting_flat_regions_close_to_the_photo():
    photo = _photo_crop()
    painting = dg.stroke_painting(photo, colors=5)
    assert painting.shape == photo.shape and painting.dtype == np.float32
    assert len(np.unique(painting.reshape(-1, 3), axis=0)) <= 5
    # Flat regions: most horizontal neighbours share a colour (the photo's do not).
    same = np.all(painting[:, 1:] == painting[:, :-1], axis=-1).mean()
    photo_same = np.all(photo[:, 1:] == photo[:, :-1], axis=-1).mean()
    assert same > 0.85 and photo_same < 0.2
    # Still a painting of this photo: much closer to it than its mean colour is.
    err = np.abs(painting - photo).mean()
    assert err < 0.6 * np.abs(photo - photo.mean((0, 1))).mean()
    assert painting.min() >= photo.min() and painting.max() <= photo.max()


def test_stroke_painting_batch_deterministic_and_bad_input():
    photos = np.stack([_photo_crop(), _photo_crop()[::-1]])
    out = dg.stroke_painting(photos, colors=3, smooth=5)
    np.testing.assert_array_equal(out, dg.stroke_painting(photos, colors=3, smooth=5))
    np.testing.assert_array_equal(out[0], dg.stroke_painting(photos[0], colors=3, smooth=5))
    for bad in (dict(colors=1), dict(smooth=0), dict(smooth=100), dict(iterations=0)):
        with pytest.raises(ValueError):
            dg.stroke_painting(photos, **bad)
    with pytest.raises(ValueError, match="floating"):
        dg.stroke_painting(np.zeros((8, 8, 3), np.uint8))
