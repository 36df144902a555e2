"""The folder dataset on folders written by the tests: geometry, channels, labels,
held-out share, per-host batches, and every refused input (each error names the file)."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from diffjax.data import load_dataset
from diffjax.data.folder import read_label_map


def _save(path, array, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(array), mode=mode).save(path)


def _rgb(seed, h=8, w=8):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_plain(folder, n=10, h=8, w=8):
    for i in range(n):
        ext = ".jpg" if i == 3 else ".png"
        _save(os.path.join(folder, f"sub{i % 2}", f"img{i}{ext}"), _rgb(i, h, w))


def _write_labelled(folder, n=6, k=4, size=8):
    images, labels = {}, {}
    for i in range(n):
        img, lab = _rgb(100 + i, size, size), np.random.default_rng(i).integers(0, k, (size, size), dtype=np.uint8)
        lab[0, 0] = 255
        _save(os.path.join(folder, f"s{i}.png"), img)
        _save(os.path.join(folder, f"s{i}_label.png"), lab, "L")
        images[f"s{i}.png"], labels[f"s{i}.png"] = img, lab
    return images, labels


def test_reads_every_image_recursively_with_fixed_disjoint_holdout(tmp_path):
    _write_plain(str(tmp_path))
    train = load_dataset("folder", data_dir=str(tmp_path), split="train")
    test = load_dataset("folder", data_dir=str(tmp_path), split="test", seed=5)
    assert train.image_shape == (8, 8, 3) and train.num_classes == 0
    assert train.num_examples == 9 and test.num_examples == 1  # round(0.1 * 10) = 1 held out
    assert not set(train.files) & set(test.files)
    assert len(set(train.files) | set(test.files)) == 10
    # The held-out file depends on the paths only, not on seed or listing.
    again = load_dataset("folder", data_dir=str(tmp_path), split="test", seed=9, eval_fraction=0.1)
    assert again.files == test.files
    # Pixels: a PNG comes back exactly, mapped to [-1, 1].
    png = next(f for f in train.files if f.endswith("img0.png"))
    stored = train.stored_images()[train.files.index(png)]
    np.testing.assert_array_equal(stored, _rgb(0))
    whole = load_dataset("folder", data_dir=str(tmp_path), eval_fraction=0)
    assert whole.num_examples == 10


def test_batches_are_pure_and_tile_across_hosts(tmp_path):
    _write_plain(str(tmp_path), n=12)
    ds = load_dataset("folder", data_dir=str(tmp_path), eval_fraction=0)
    full = ds.batch(7, 8, seed=1)["image"]
    halves = [ds.batch(7, 8, seed=1, process_index=p, process_count=2)["image"] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), full)
    np.testing.assert_array_equal(ds.batch(7, 8, seed=1)["image"], full)
    assert full.dtype == np.float32 and full.min() >= -1 and full.max() <= 1
    # Each epoch shows every file once.
    epoch = np.concatenate([ds.batch(s, 4)["image"] for s in range(3)])
    assert len({a.tobytes() for a in epoch}) == 12
    # Evaluation asking for more images than the folder holds repeats them.
    assert ds.eval_images(30).shape == (30, 8, 8, 3)


def test_resize_crop_and_channels(tmp_path):
    wide = np.zeros((10, 20, 3), np.uint8)
    wide[:, 5:15] = 200  # the centre square of the wide image is bright, its sides dark
    _save(str(tmp_path / "wide.png"), wide)
    _save(str(tmp_path / "grey.png"), np.full((30, 30), 50, np.uint8), "L")
    rgb = load_dataset("folder", data_dir=str(tmp_path), image_size=6, eval_fraction=0)
    assert rgb.image_shape == (6, 6, 3)  # one colour file: RGB
    imgs = rgb.stored_images()
    w = imgs[rgb.files.index(str(tmp_path / "wide.png"))]
    assert w[:, 1:5].min() >= 190  # centre crop kept the bright middle
    g = imgs[rgb.files.index(str(tmp_path / "grey.png"))]
    np.testing.assert_array_equal(g, np.full((6, 6, 3), 50))  # grey repeated to RGB
    grey = load_dataset("folder", data_dir=str(tmp_path), image_size=6, channels=1, eval_fraction=0)
    assert grey.image_shape == (6, 6, 1)
    os.remove(tmp_path / "wide.png")
    _save(str(tmp_path / "grey2.png"), np.full((30, 30), 90, np.uint8), "L")
    auto = load_dataset("folder", data_dir=str(tmp_path), eval_fraction=0)
    assert auto.image_shape == (30, 30, 1)  # every file grey: one channel


def test_labelled_folder_pairs_labels_and_batches_carry_them(tmp_path):
    images, labels = _write_labelled(str(tmp_path), k=4)
    ds = load_dataset("folder", data_dir=str(tmp_path), num_classes=4, eval_fraction=0)
    assert ds.labelled and ds.label_classes == 4
    for i, path in enumerate(ds.files):
        name = os.path.basename(path)
        np.testing.assert_array_equal(ds.stored_images()[i], images[name])
        np.testing.assert_array_equal(ds.label_maps()[i], labels[name])
    batch = ds.batch(3, 4)
    assert batch["label_map"].shape == (4, 8, 8) and batch["label_map"].dtype == np.int32
    # Image row r and label row r belong to the same file.
    for img, lab in zip(batch["image"], batch["label_map"]):
        i = [np.allclose(img, ds.stored_images()[j] / 127.5 - 1, atol=1e-6) for j in range(6)].index(True)
        np.testing.assert_array_equal(lab, ds.label_maps()[i])
    # Without num_classes the label files are skipped (images only).
    plain = load_dataset("folder", data_dir=str(tmp_path), eval_fraction=0)
    assert plain.num_examples == 6 and not plain.labelled and "label_map" not in plain.batch(0, 2)


def test_label_maps_resize_by_nearest_neighbour(tmp_path):
    lab = np.zeros((8, 8), np.uint8)
    lab[:, 4:] = 2
    lab[0, 0] = 255
    _save(str(tmp_path / "a.png"), _rgb(0))
    _save(str(tmp_path / "a_label.png"), lab, "L")
    out = read_label_map(str(tmp_path / "a_label.png"), 3, image_size=4)
    assert set(np.unique(out)) <= {0, 2, 255}  # no blended ids
    np.testing.assert_array_equal(out[:, 2:], 2)


def _err(tmp_path, match, **kwargs):
    kwargs.setdefault("eval_fraction", 0)
    with pytest.raises(ValueError, match=match):
        load_dataset("folder", data_dir=str(tmp_path), **kwargs)


def test_refuses_empty_missing_and_unreadable(tmp_path):
    _err(tmp_path, r"no PNG/JPEG images under")
    _err(tmp_path / "absent", r"is not a directory")
    with pytest.raises(ValueError, match=r"needs a directory"):
        load_dataset("folder")
    (tmp_path / "notes.txt").write_text("not an image")
    _err(tmp_path, r"no PNG/JPEG images under")  # other files are not images
    _save(str(tmp_path / "ok.png"), _rgb(0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    _err(tmp_path, re.escape(str(tmp_path / "broken.png")) + r": cannot be read")
    (tmp_path / "broken.png").unlink()
    _save(str(tmp_path / "big.png"), _rgb(1, 12, 12))
    _err(tmp_path, re.escape(str(tmp_path / "ok.png")) + r": size 8x8 differs from .*big.png \(12x12\).*image_size")
    assert load_dataset("folder", data_dir=str(tmp_path), image_size=8, eval_fraction=0).num_examples == 2


def test_refuses_bad_arguments_and_too_small_holdout(tmp_path):
    _save(str(tmp_path / "only.png"), _rgb(0))
    _err(tmp_path, r"too few to hold out", eval_fraction=0.1)
    _err(tmp_path, r"channels must be", channels=2)
    _err(tmp_path, r"eval_fraction must be", eval_fraction=1.0)
    _err(tmp_path, r"num_classes must be <= 255", num_classes=256)
    _err(tmp_path, r"splits 'train' and 'test'", split="validation")
    with pytest.raises(ValueError, match=r"labelled folders"):
        load_dataset("digits", num_classes=3)
    with pytest.raises(ValueError, match=r"has 1 channel"):
        load_dataset("digits", channels=3)


def test_refuses_bad_labelled_folders(tmp_path):
    _write_labelled(str(tmp_path), n=2, k=4)
    # id == num_classes is the first one out of range
    _err(tmp_path, re.escape(str(tmp_path / "s0_label.png")) + r": class ids \[3\] out of range", num_classes=3)
    _save(str(tmp_path / "lonely.png"), _rgb(5))
    _err(tmp_path, re.escape(str(tmp_path / "lonely.png")) + r": image without its label map", num_classes=4)
    os.remove(tmp_path / "lonely.png")
    _save(str(tmp_path / "orphan_label.png"), np.zeros((8, 8), np.uint8), "L")
    _err(tmp_path, re.escape(str(tmp_path / "orphan_label.png")) + r": label map without its image", num_classes=4)
    os.remove(tmp_path / "orphan_label.png")
    _save(str(tmp_path / "s1_label.png"), np.zeros((6, 8), np.uint8), "L")
    _err(tmp_path, re.escape(str(tmp_path / "s1_label.png")) + r": label map is 8x6 .* image is 8x8", num_classes=4)
    _save(str(tmp_path / "s1_label.png"), _rgb(0))
    _err(tmp_path, re.escape(str(tmp_path / "s1_label.png")) + r": a label map must be an 8-bit single-channel", num_classes=4)
    (tmp_path / "s1_label.png").write_bytes(b"junk")
    _err(tmp_path, re.escape(str(tmp_path / "s1_label.png")) + r": cannot be read", num_classes=4)


def test_config_route_trains_on_a_folder(tmp_path):
    """`--config.data.name=folder --config.data.data_dir=DIR` reaches the loader via builders."""
    from configs.default import get_base_config
    from diffjax import builders

    _write_labelled(str(tmp_path), n=10, k=3)
    c = get_base_config()
    c.data.name, c.data.data_dir, c.data.image_size, c.data.num_classes = "folder", str(tmp_path), 4, 3
    train, test = builders.build_dataset(c, "train"), builders.build_dataset(c, c.eval.split)
    assert (train.num_examples, test.num_examples) == (9, 1)
    assert train.image_shape == (4, 4, 3) and train.batch(0, 2)["label_map"].shape == (2, 4, 4)
