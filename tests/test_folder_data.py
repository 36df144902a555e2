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


# -- large folders: start-up independent of the folder's size, files checked beside training ------------------


def _write_grey(folder, n, start=0):
    """``n`` tiny grey PNGs ``g00000.png``, ... (fast to write: a few seconds for thousands)."""
    os.makedirs(folder, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(np.full((6, 6), i % 251, np.uint8), "L").save(os.path.join(folder, f"g{i:05d}.png"))


def _file_reads_at_load(monkeypatch, folder, **kwargs):
    """(dataset, files opened by the loading thread): headers and decodes both open through image_io._opened."""
    import threading

    from diffjax import image_io
    from diffjax.data.folder import load_folder

    opened, real, me = [], image_io._opened, threading.get_ident()
    monkeypatch.setattr(image_io, "_opened", lambda path: (threading.get_ident() == me and opened.append(path),
                                                            real(path))[1])
    ds = load_folder(folder, **kwargs)
    monkeypatch.setattr(image_io, "_opened", real)
    return ds, opened


def test_start_up_reads_a_bounded_number_of_files_whatever_the_folder_size(tmp_path, monkeypatch):
    from diffjax.data.folder import CHANNEL_PROBE, CHECK_AT_LOAD_LIMIT

    counts = {}
    for n in (CHECK_AT_LOAD_LIMIT + 88, 3 * CHECK_AT_LOAD_LIMIT):
        folder = str(tmp_path / str(n))
        _write_grey(folder, n)
        ds, opened = _file_reads_at_load(monkeypatch, folder, image_size=4, eval_fraction=0.1)
        assert ds.image_shape == (4, 4, 1) and ds.file_check is not None
        counts[n] = len(opened)
        assert ds.file_check.wait(120) and ds.batch(0, 4)["image"].shape == (4, 4, 4, 1)
    assert counts[CHECK_AT_LOAD_LIMIT + 88] == counts[3 * CHECK_AT_LOAD_LIMIT] <= CHANNEL_PROBE, counts
    # A small folder is still checked whole at load (every header read, every file decoded).
    _write_grey(str(tmp_path / "small"), 20)
    ds, opened = _file_reads_at_load(monkeypatch, str(tmp_path / "small"), image_size=4, eval_fraction=0)
    assert ds.file_check is None and len(opened) >= 2 * 20


def test_large_folder_gives_the_batches_of_the_check_at_load(tmp_path, monkeypatch):
    from diffjax.data import folder as folder_mod

    folder = str(tmp_path / "f")
    _write_grey(folder, folder_mod.CHECK_AT_LOAD_LIMIT + 8)
    _save(os.path.join(folder, "a_colour.png"), _rgb(3, 6, 6))  # among the first files: RGB, as before
    lazy = folder_mod.load_folder(folder, image_size=4, eval_fraction=0.1, seed=3)
    monkeypatch.setattr(folder_mod, "CHECK_AT_LOAD_LIMIT", 10**6)
    checked = folder_mod.load_folder(folder, image_size=4, eval_fraction=0.1, seed=3)
    assert lazy.file_check is not None and checked.file_check is None
    assert lazy.files == checked.files and lazy.image_shape == checked.image_shape == (4, 4, 3)
    for step in (0, 7):
        a, b = lazy.batch(step, 8, seed=1), checked.batch(step, 8, seed=1)
        np.testing.assert_array_equal(a["image"], b["image"])
    assert lazy.file_check.wait(120)


@pytest.mark.parametrize("where", ["train", "held_out"])
def test_bad_file_of_a_large_folder_is_named_by_the_check_beside_training(tmp_path, where):
    from diffjax.data.folder import CHECK_AT_LOAD_LIMIT, load_folder

    folder = str(tmp_path / "f")
    _write_grey(folder, CHECK_AT_LOAD_LIMIT + 40)
    test_files = load_folder(folder, split="test", eval_fraction=0.1).files
    train_files = load_folder(folder, split="train", eval_fraction=0.1).files
    bad = train_files[-1] if where == "train" else test_files[-1]
    with open(bad, "r+b") as f:  # truncated: the header still reads, the pixels do not
        f.truncate(40)
    if where == "train":  # garbage: even the header fails
        with open(bad, "wb") as f:
            f.write(b"not a PNG at all")
    ds = load_folder(folder, split="train", eval_fraction=0.1)  # starts: only the listing was read
    assert ds.file_check.wait(120)
    message = r"found by the check of every file that runs beside training.*: " + re.escape(bad) + ": "
    with pytest.raises(ValueError, match=message) as info:
        ds.batch(0, 2)
    assert "1 bad file(s)" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match=message):
        next(ds.iterator(2))  # through grain too


def test_colour_image_late_in_a_folder_read_as_grey_is_refused_naming_it(tmp_path):
    from diffjax.data.folder import CHECK_AT_LOAD_LIMIT, load_folder

    folder = str(tmp_path / "f")
    _write_grey(folder, CHECK_AT_LOAD_LIMIT + 40)
    _save(os.path.join(folder, "zz_colour.png"), _rgb(3, 6, 6))
    ds = load_folder(folder, image_size=4, eval_fraction=0)
    assert ds.image_shape == (4, 4, 1) and ds.file_check.wait(120)
    with pytest.raises(ValueError, match=r"zz_colour\.png: a colour image in a folder read as grey.*channels=3"):
        ds.batch(0, 2)
    assert load_folder(folder, image_size=4, eval_fraction=0, channels=3).file_check.wait(120)
