"""Offline datasets: shapes, ranges, determinism, resume, per-host tiling, splits, errors."""

import gzip
import os

import numpy as np
import pytest
from PIL import Image

from diffjax.data import DATASETS, TEST_PHOTOS, TRAIN_PHOTOS, ArrayDataset, load_dataset, resize_images
from diffjax.data.builtin import FASHION_MNIST_DIR, FASHION_MNIST_ENV, fashion_mnist_dir, read_idx
from diffjax.data.tfds import tfds_has_on_disk
from idx_fixture import SIZES as FASHION_SIZES
from idx_fixture import fashion_like


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def photos():
    return load_dataset("photos", image_size=32)


def _check_batch(batch, rows, shape):
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (rows, *shape)
    assert batch["image"].dtype == np.float32
    assert batch["label"].shape == (rows,)
    assert batch["label"].dtype == np.int32
    assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
    # Real images use (most of) the range, i.e. the scaling to [-1, 1] happened.
    assert batch["image"].min() < -0.9 and batch["image"].max() > 0.5


@pytest.mark.parametrize(
    "name, kwargs, shape, classes, size",
    [
        ("digits", {}, (8, 8, 1), 10, 1500),
        ("digits", {"split": "test"}, (8, 8, 1), 10, 297),
        ("digits", {"image_size": 16}, (16, 16, 1), 10, 1500),
        ("fashion_mnist", {"split": "test"}, (28, 28, 1), 10, FASHION_SIZES["test"]),
        ("fashion_mnist", {"split": "test", "image_size": 32}, (32, 32, 1), 10, FASHION_SIZES["test"]),
        ("photos", {}, (64, 64, 3), 0, None),
        ("photos", {"split": "test", "image_size": 48}, (48, 48, 3), 0, None),
    ],
)
def test_shapes_dtypes_ranges(name, kwargs, shape, classes, size):
    ds = load_dataset(name, **kwargs)
    assert ds.image_shape == shape
    assert ds.num_classes == classes
    assert ds.num_examples == size
    batch = ds.batch(0, 16)
    _check_batch(batch, 16, shape)
    if classes:
        assert batch["label"].min() >= 0 and batch["label"].max() < classes
    else:
        assert np.all(batch["label"] == 0)
    evals = ds.eval_images(5)
    assert evals.shape == (5, *shape) and evals.dtype == np.float32
    assert evals.min() >= -1.0 and evals.max() <= 1.0


def test_fashion_mnist_reads_the_generated_idx_files(fashion_mnist_fixture):
    """The loader decodes the conftest's gzipped IDX files byte for byte (images and labels)."""
    assert fashion_mnist_dir() == fashion_mnist_fixture == os.environ[FASHION_MNIST_ENV]
    ds = load_dataset("fashion_mnist")
    assert ds.num_examples == FASHION_SIZES["train"] and ds.image_shape == (28, 28, 1)
    _check_batch(ds.batch(7, 8), 8, (28, 28, 1))
    images, labels = fashion_like(FASHION_SIZES["train"], seed=0)  # what the fixture wrote
    batch = ds.batch(3, 16)
    rows = [int(np.flatnonzero(np.all(images.reshape(len(images), -1) ==
                                      np.rint((im[..., 0] + 1) * 127.5).reshape(-1), axis=1))[0])
            for im in batch["image"]]
    np.testing.assert_array_equal(labels[rows], batch["label"])


def test_fashion_mnist_folder_precedence(tmp_path, monkeypatch):
    assert fashion_mnist_dir(str(tmp_path)) == str(tmp_path)  # an explicit data_dir wins
    monkeypatch.setenv(FASHION_MNIST_ENV, "")
    assert fashion_mnist_dir() == FASHION_MNIST_DIR  # empty variable = the Debian default
    monkeypatch.delenv(FASHION_MNIST_ENV)
    assert fashion_mnist_dir() == FASHION_MNIST_DIR


@pytest.mark.skipif(not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
                    reason="Debian's dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files_when_installed():
    """The real set, when present (CI installs it for the training runs; tests never need it)."""
    for split, size in (("train", 60000), ("test", 10000)):
        ds = load_dataset("fashion_mnist", split=split, data_dir=FASHION_MNIST_DIR)
        assert ds.num_examples == size and ds.image_shape == (28, 28, 1)
    _check_batch(ds.batch(7, 8), 8, (28, 28, 1))


def test_digits_labels_follow_their_images(digits):
    """Each batch row is the source row its label belongs to (shuffling keeps pairs)."""
    from sklearn.datasets import load_digits as sklearn_digits

    source = sklearn_digits()
    flat = source.images[:1500].reshape(1500, -1) / 8.0 - 1.0
    batch = digits.batch(3, 64, seed=5)
    for image, label in zip(batch["image"], batch["label"]):
        matches = np.flatnonzero(np.all(np.isclose(flat, image.reshape(-1)), axis=1))
        assert len(matches) >= 1
        assert label in source.target[matches]


def test_batches_are_pure_functions_of_their_arguments(digits, photos):
    for ds in (digits, photos):
        first = ds.batch(11, 32, seed=3)
        again = ds.batch(11, 32, seed=3)
        np.testing.assert_array_equal(first["image"], again["image"])
        np.testing.assert_array_equal(first["label"], again["label"])
        # A freshly loaded copy (e.g. after a restart) gives the same batch.
        fresh = load_dataset(ds.name, image_size=ds.image_shape[0])
        np.testing.assert_array_equal(fresh.batch(11, 32, seed=3)["image"], first["image"])
        assert not np.array_equal(ds.batch(12, 32, seed=3)["image"], first["image"])
        assert not np.array_equal(ds.batch(11, 32, seed=4)["image"], first["image"])
    # The dataset seed is mixed in as well.
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.batch(0, 32)["image"], digits.batch(0, 32)["image"])


def test_every_epoch_visits_each_example_once():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    ds = ArrayDataset("toy", "train", images, np.arange(10), num_classes=10)
    # Batch size 4 does not divide 10: batches straddle epoch boundaries.
    labels = np.concatenate([ds.batch(s, 4)["label"] for s in range(5)])
    assert sorted(labels[:10]) == list(range(10))
    assert sorted(labels[10:]) == list(range(10))
    assert not np.array_equal(labels[:10], labels[10:])  # each epoch reshuffles


def test_one_epoch_of_digits_is_a_permutation(digits):
    def sorted_rows(images):
        flat = images.reshape(len(images), -1)
        return flat[np.lexsort(flat.T[::-1])]

    epoch = np.concatenate([digits.batch(s, 100)["image"] for s in range(15)])
    everything = digits.eval_images(1500)  # all 1,500 examples, in another order
    np.testing.assert_array_equal(sorted_rows(epoch), sorted_rows(everything))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_iterator_resumes_exactly(digits, prefetch):
    it = digits.iterator(16, start_step=5, seed=2, prefetch=prefetch)
    for step in range(5, 9):
        got = next(it)
        want = digits.batch(step, 16, seed=2)
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
    it.close()


def test_iterator_shards_match_batches(photos):
    it = photos.iterator(8, start_step=2, process_index=1, process_count=2)
    np.testing.assert_array_equal(next(it)["image"], photos.batch(2, 8, process_index=1, process_count=2)["image"])
    it.close()


@pytest.mark.parametrize("process_count", [2, 4])
def test_host_shards_tile_the_global_batch(digits, photos, process_count):
    for ds in (digits, photos):
        whole = ds.batch(9, 16, seed=1)
        shards = [
            ds.batch(9, 16, seed=1, process_index=p, process_count=process_count) for p in range(process_count)
        ]
        assert all(s["image"].shape[0] == 16 // process_count for s in shards)
        np.testing.assert_array_equal(np.concatenate([s["image"] for s in shards]), whole["image"])
        np.testing.assert_array_equal(np.concatenate([s["label"] for s in shards]), whole["label"])


def test_photos_splits_are_disjoint_by_source_photo(photos):
    assert len(TEST_PHOTOS) >= 2 and not set(TRAIN_PHOTOS) & set(TEST_PHOTOS)
    test = load_dataset("photos", split="test", image_size=32)
    train_sources = {name for s in range(4) for name in photos.source_of_rows(s, 64)}
    test_sources = {name for s in range(4) for name in test.source_of_rows(s, 64)}
    assert train_sources == set(TRAIN_PHOTOS)
    assert test_sources == set(TEST_PHOTOS)


def test_photo_crops_are_slices_of_the_source():
    import skimage.data

    ds = load_dataset("photos", split="test", image_size=16)
    crop = ds.eval_images(1, seed=3)[0]
    # Eval crops come from their own stream: search both test photos for the window.
    as_uint8 = np.rint((crop + 1.0) * 127.5).astype(np.uint8)
    found = False
    for name in TEST_PHOTOS:
        photo = getattr(skimage.data, name)()
        photo = np.repeat(photo[..., None], 3, -1) if photo.ndim == 2 else photo
        windows = np.lib.stride_tricks.sliding_window_view(photo, (16, 16, 3))[..., 0, :, :, :]
        found |= bool(np.any(np.all(windows == as_uint8, axis=(-3, -2, -1))))
    assert found


def test_eval_images_are_deterministic_and_distinct(digits):
    a, b = digits.eval_images(50, seed=0), digits.eval_images(50, seed=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, digits.eval_images(50, seed=1))
    with pytest.raises(ValueError, match="only 1500"):
        digits.eval_images(1501)


def test_resize_matches_pillow_bicubic():
    rng = np.random.default_rng(0)
    images = rng.uniform(-0.5, 0.5, (2, 28, 20, 2)).astype(np.float32)
    for size in (32, 7):
        got = resize_images(images, size)
        for i in range(2):
            for c in range(2):
                plane = Image.fromarray(images[i, :, :, c], mode="F")
                want = np.asarray(plane.resize((size, size), Image.Resampling.BICUBIC))
                np.testing.assert_allclose(got[i, :, :, c], np.clip(want, -1, 1), atol=1e-5)


def test_read_idx_roundtrip_and_bad_header(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    good = tmp_path / "x-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(read_idx(str(good)), data)
    bad = tmp_path / "bad-idx"
    bad.write_bytes(bytes([1, 2, 3, 4]) + data.tobytes())
    with pytest.raises(ValueError, match="IDX header"):
        read_idx(str(bad))


def test_unknown_name_lists_datasets():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar100")
    for name in DATASETS:
        assert name in str(err.value)


def test_indivisible_batch_names_both_numbers(digits):
    with pytest.raises(ValueError, match=r"global_batch_size=10.*process_count=4"):
        digits.batch(0, 10, process_count=4)
    with pytest.raises(ValueError, match="process_index"):
        digits.batch(0, 8, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="global_batch_size=10.*process_count=3"):
        digits.iterator(10, process_count=3)


def test_bad_split_and_crop_size():
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", split="validation")
    with pytest.raises(ValueError, match="shortest side"):
        load_dataset("photos", split="test", image_size=301)


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    if tfds_has_on_disk("fashion_mnist"):
        pytest.skip("a TFDS copy of fashion_mnist is on disk, so the fallback would load it")
    with pytest.raises(FileNotFoundError, match=f"apt-get install dataset-fashion-mnist(.|\n)*{FASHION_MNIST_ENV}"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path / "nowhere"))


def test_tfds_dataset_not_on_disk(tmp_path):
    with pytest.raises(FileNotFoundError, match="not prepared"):
        load_dataset("tfds:mnist", data_dir=str(tmp_path))


def test_tfds_on_disk_but_not_installed(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorflow_datasets") is not None:
        pytest.skip("tensorflow_datasets is installed")
    version_dir = tmp_path / "mnist" / "3.0.1"
    os.makedirs(version_dir)
    (version_dir / "dataset_info.json").write_text("{}")
    with pytest.raises(ImportError, match="tensorflow"):
        load_dataset("tfds:mnist", data_dir=str(tmp_path))
