"""The photo corpus: determinism, train/eval split by source, multi-scale crops, smooth/textured labels."""

import os

import numpy as np
import pytest

from diffjax.data import corpus, load_dataset
from diffjax.data.corpus import EVAL_SOURCES, TRAIN_SOURCES, PhotoCorpus, gradient_energy, texture_labels


@pytest.fixture(scope="module")
def small_train():
    # Sources that every test machine has (Python packages), so the test does not depend on apt.
    return PhotoCorpus("train", 16, seed=3, sources=("scikit-image", "matplotlib"))


def test_batches_are_deterministic_functions_of_the_seeds(small_train):
    again = PhotoCorpus("train", 16, seed=3, sources=("scikit-image", "matplotlib"))
    np.testing.assert_array_equal(small_train.batch(5, 8, seed=1)["image"], again.batch(5, 8, seed=1)["image"])
    np.testing.assert_array_equal(small_train.eval_images(6, seed=2), again.eval_images(6, seed=2))
    other_seed = PhotoCorpus("train", 16, seed=4, sources=("scikit-image", "matplotlib"))
    assert not np.array_equal(small_train.batch(5, 8, seed=1)["image"], other_seed.batch(5, 8, seed=1)["image"])
    assert not np.array_equal(small_train.batch(5, 8, seed=1)["image"], small_train.batch(6, 8, seed=1)["image"])
    # Host shards tile the global batch.
    halves = [small_train.batch(5, 8, seed=1, process_index=p, process_count=2)["image"] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), small_train.batch(5, 8, seed=1)["image"])
    batch = small_train.batch(0, 8)["image"]
    assert batch.shape == (8, 16, 16, 3) and batch.dtype == np.float32 and -1 <= batch.min() <= batch.max() <= 1


def test_training_and_evaluation_sources_are_disjoint():
    assert not set(TRAIN_SOURCES) & set(EVAL_SOURCES)
    train = load_dataset("photo_corpus", split="train", image_size=16)
    test = load_dataset("photo_corpus", split="test", image_size=16)
    assert set(train.sources) <= set(TRAIN_SOURCES) and set(test.sources) <= set(EVAL_SOURCES)
    assert "scikit-image" in train.sources and "scikit-learn" in test.sources  # always installed
    train_rows = {row for step in range(3) for row in train.source_of_rows(step, 64)}
    test_rows = {row for step in range(3) for row in test.source_of_rows(step, 64)}
    assert {s for s, _ in train_rows} <= set(TRAIN_SOURCES) and {s for s, _ in test_rows} <= set(EVAL_SOURCES)
    # No photo (by pixels) is in both splits.
    fingerprints = lambda ds: {np.asarray(p.image.resize((8, 8))).tobytes() for p in ds.photos}
    assert not fingerprints(train) & fingerprints(test)
    with pytest.raises(ValueError, match="subset"):
        PhotoCorpus("train", 16, sources=("scikit-learn",))


def test_crops_at_scale_one_are_exact_windows_of_their_photo(monkeypatch):
    monkeypatch.setattr(corpus, "MAX_DOWNSCALE", 1.0)
    ds = PhotoCorpus("test", 12, seed=0, sources=("scikit-learn",))
    crop, which = ds._crop([0, 0, 0, 0, 7], flip_allowed=False)
    photo = np.asarray(ds.photos[which].image)
    windows = np.lib.stride_tricks.sliding_window_view(photo, (12, 12, 3))[..., 0, :, :, :]
    assert np.all(windows == crop, axis=(2, 3, 4)).any()


def test_crops_cover_several_scales(monkeypatch):
    # The window side drawn before resizing is log-uniform in [S, min(8, shortest / S) * S].
    sides = []
    original = corpus.Image.Image.resize

    def spy(self, size, resample=None, box=None, **kw):
        sides.append(box[2] - box[0])
        return original(self, size, resample, box, **kw)

    monkeypatch.setattr(corpus.Image.Image, "resize", spy)
    PhotoCorpus("test", 16, seed=0, sources=("scikit-learn",)).eval_images(200)
    sides = np.array(sides)
    assert sides.min() >= 16 and sides.max() <= 128 and np.median(sides) == pytest.approx(16 * np.sqrt(8), rel=0.25)


def test_gradient_energy_matches_closed_forms():
    h = w = 8
    flat = np.full((1, h, w, 3), 0.3)
    ramp = np.broadcast_to((np.arange(w) / 10.0)[None, None, :, None], (1, h, w, 3))  # luma slope 0.05 in [0, 1]
    checker = np.where((np.add.outer(np.arange(h), np.arange(w)) % 2)[None, :, :, None] == 0, -1.0, 1.0)
    checker = np.broadcast_to(checker, (1, h, w, 1))
    energy = gradient_energy(np.concatenate([flat, ramp]))
    # ramp: d/dx = 0.05 everywhere, d/dy = 0 -> sqrt((0 + 0.05^2) / 2)
    np.testing.assert_allclose(energy, [0.0, 0.05 / np.sqrt(2)], atol=1e-12)
    np.testing.assert_allclose(gradient_energy(checker), [1.0], atol=1e-12)  # jumps of 1 in both directions
    assert texture_labels(np.concatenate([flat, ramp]), threshold=0.03).tolist() == [False, True]
    with pytest.raises(ValueError, match="expects"):
        gradient_energy(np.zeros((4, 4, 3)))


def test_the_held_out_set_has_both_subsets():
    labels = texture_labels(load_dataset("photo_corpus", split="test", image_size=32).eval_images(64))
    assert 0.2 < labels.mean() < 0.8


def test_absent_debian_packages_are_skipped(monkeypatch, tmp_path):
    monkeypatch.delenv(corpus.BACKGROUNDS_ENV, raising=False)
    monkeypatch.setattr(corpus, "BACKGROUNDS", str(tmp_path))
    monkeypatch.setattr(corpus, "JIGZO", str(tmp_path))
    corpus._load_source.cache_clear()
    try:
        train = PhotoCorpus("train", 16)
        test = PhotoCorpus("test", 16)
        assert train.sources == ("matplotlib", "scikit-image") and test.sources == ("scikit-learn",)
        assert test.eval_images(4).shape == (4, 16, 16, 3)
        with pytest.raises(ValueError, match="installed"):
            PhotoCorpus("test", 16, sources=("jigzo-data",))
    finally:
        corpus._load_source.cache_clear()


def test_the_backgrounds_folder_can_be_named_by_an_environment_variable(monkeypatch, tmp_path):
    """DIFFJAX_BACKGROUNDS_DIR replaces /usr/share/backgrounds (photos unpacked without installing
    the package); a name that is not a folder is an error, an empty one means the default."""
    from PIL import Image

    unpacked, system = tmp_path / "unpacked", tmp_path / "system"
    unpacked.mkdir()
    system.mkdir()
    Image.new("RGB", (96, 64), (40, 200, 60)).save(unpacked / "seeding_by_Clements_Engelhardt.jpg", quality=95)
    monkeypatch.setattr(corpus, "BACKGROUNDS", str(system))  # empty: only the override can supply photos
    corpus._load_source.cache_clear()
    try:
        monkeypatch.setenv(corpus.BACKGROUNDS_ENV, str(unpacked))
        assert corpus.backgrounds_dir() == str(unpacked)
        train = PhotoCorpus("train", 16, sources=("lomiri-wallpapers",))
        assert train.sources == ("lomiri-wallpapers",)
        assert [p.name for p in train.photos] == ["seeding_by_Clements_Engelhardt"]
        crop = train.eval_images(2)
        assert crop.shape == (2, 16, 16, 3)
        green = (crop[..., 1] + 1) * 127.5  # the photo is flat green: every crop keeps its colour
        assert np.all(np.abs(green - 200) < 4)

        corpus._load_source.cache_clear()
        monkeypatch.setenv(corpus.BACKGROUNDS_ENV, "")
        assert corpus.backgrounds_dir() == str(system)
        with pytest.raises(ValueError, match="installed"):
            PhotoCorpus("train", 16, sources=("lomiri-wallpapers",))

        corpus._load_source.cache_clear()
        monkeypatch.setenv(corpus.BACKGROUNDS_ENV, str(tmp_path / "typo"))
        with pytest.raises(ValueError, match="DIFFJAX_BACKGROUNDS_DIR.*not a folder"):
            PhotoCorpus("train", 16, sources=("lomiri-wallpapers",))
    finally:
        corpus._load_source.cache_clear()


@pytest.mark.skipif(not os.path.isdir(corpus.JIGZO), reason="Debian package jigzo-data not installed")
def test_jigzo_previews_are_decoded_without_their_frame():
    photos = corpus.load_photos(["jigzo-data"])
    assert len(photos) == len(corpus.JIGZO_PHOTOS) and "penguin-3x2" not in {p.name for p in photos}
    for p in photos:
        array = np.asarray(p.image)
        assert array.shape[2] == 3 and min(array.shape[:2]) >= 100
        # The grey frame (223, 223, 223) is gone: the border is not one flat colour.
        assert array[0].std() > 1 or array[:, 0].std() > 1


RESTORATION_CONFIGS = ("palette_colorization", "palette_inpainting", "palette_uncropping", "palette_jpeg",
                       "palette_multitask", "repaint_photos", "sr3_photos_x4", "sr3_photos_x8")


def test_restoration_configs_train_on_training_sources_and_the_benchmark_scores_held_out_ones():
    import importlib
    import sys

    from diffjax import builders

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(root, "benchmarks"))
    try:
        restoration = importlib.import_module("restoration")
    finally:
        sys.path.remove(os.path.join(root, "benchmarks"))
    train_sources = set()
    for name in RESTORATION_CONFIGS:
        config = importlib.import_module(f"configs.{name}").get_config()
        assert config.data.name == "photo_corpus", name
        dataset = builders.build_dataset(config, "train")
        assert set(dataset.sources) <= set(TRAIN_SOURCES), (name, dataset.sources)
        train_sources |= set(dataset.sources)
    args = restoration.build_parser().parse_args([])
    held_out = restoration.held_out_dataset(args.eval_data, args.image_size)
    assert held_out.sources and set(held_out.sources) <= set(EVAL_SOURCES)
    assert not train_sources & set(held_out.sources)
