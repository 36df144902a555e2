"""The streaming folder pipeline: bounded memory, exact resume mid-epoch, disjoint host shards, crops."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from worker_procs import finish_job, start_job

from diffjax.data import load_dataset
from diffjax.data.folder import read_image
from diffjax.data.streaming import LazyImages, scale_and_crop


def write_jpegs(folder: str, n: int, seed: int = 0, low: int = 20, high: int = 60) -> None:
    """``n`` JPEGs of random sizes in ``[low, high]`` px (smooth colour ramps plus noise)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(low, high + 1, 2))
        ramp = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.2, 1, 3)
        image = np.clip(ramp + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(os.path.join(folder, f"img{i:05d}.jpg"), quality=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("jpegs"))
    write_jpegs(path, 10)
    return path


def _batches(ds, start, stop, batch=4, **kw):
    it = ds.iterator(batch, start_step=start, seed=3, **kw)
    try:
        return [next(it) for _ in range(start, stop)]
    finally:
        it.close()


def test_images_are_decoded_on_demand_not_held(folder):
    ds = load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0)
    assert isinstance(ds._images, LazyImages)  # no (N, H, W, C) array behind the dataset
    assert ds.image_shape == (16, 16, 3) and ds.num_examples == 10
    # Every row is exactly what the folder reader gives for its file (centre crop).
    batch = ds.batch(0, 4, seed=3)["image"]
    index = ds._indices(0, 4, np.arange(4), 3)
    want = np.stack([read_image(ds.files[i], 3, 16) for i in index]).astype(np.float32) / 127.5 - 1
    np.testing.assert_array_equal(batch, want)


@pytest.mark.parametrize("crop", ["center", "random"])
def test_resume_mid_epoch_sees_the_same_batches(folder, crop):
    # 10 files, batch 4: epochs end inside steps 2 and 4, so a resume at step 3 starts mid-epoch.
    ds = load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0, crop=crop)
    whole = _batches(ds, 0, 6)
    resumed = _batches(load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0,
                                    crop=crop), 3, 6)
    for a, b in zip(whole[3:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
    # Each epoch visits every file once (steps 0-4 hold rows 0-19: two whole epochs).
    index = np.concatenate([ds._indices(s, 4, np.arange(4), 3) for s in range(5)])
    assert sorted(index[:10]) == list(range(10)) and sorted(index[10:20]) == list(range(10))


def test_hosts_read_disjoint_rows_of_the_same_global_batch(folder):
    ds = load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0, crop="random")
    for step in (0, 2, 5):
        whole = ds.batch(step, 8, seed=1)["image"]
        parts = [ds.batch(step, 8, seed=1, process_index=p, process_count=2)["image"] for p in (0, 1)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_random_crops_are_seeded_and_change_between_epochs(folder):
    ds = load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0, crop="random")
    center = load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0)
    # Batch of 10 = one epoch per step: the same files in another order, other crops.
    a, b = ds.batch(0, 10, seed=0)["image"], ds.batch(0, 10, seed=0)["image"]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, center.batch(0, 10, seed=0)["image"])
    image = np.random.default_rng(0).integers(0, 255, (30, 50, 3)).astype(np.uint8)
    squares = {scale_and_crop(image, 16, np.random.default_rng(s)).tobytes() for s in range(8)}
    assert len(squares) > 1
    assert scale_and_crop(image, 16, None).shape == (16, 16, 3)
    # The centre square is the folder reader's own (same filter and rounding).
    np.testing.assert_array_equal(scale_and_crop(read_image(ds.files[0], 3, None), 16, None),
                                  read_image(ds.files[0], 3, 16))
    with pytest.raises(ValueError, match="crop"):
        load_dataset("folder", data_dir=folder, image_size=16, crop="middle")
    with pytest.raises(ValueError, match="folder and TFDS datasets"):
        load_dataset("digits", crop="random")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_process_folder_run_killed_mid_epoch_resumes_like_the_uninterrupted_run(tmp_path, folder):
    # 10 files, batch 4 over 2 processes x 2 devices: 6 steps cross two epoch ends.
    ref, moved = str(tmp_path / "ref"), str(tmp_path / "moved")
    args = ("--steps", "6", "--batch", "4", "--folder", folder)
    finish_job(start_job(1, 4, "--workdir", ref, "--out", ref + ".npz", *args))
    # Stopped early (a stop request: both processes save after the same step), then continued.
    first = finish_job(start_job(2, 2, "--workdir", moved, "--stop-after-first-step", *args))
    assert 0 < first["step"] < 6
    last = finish_job(start_job(2, 2, "--workdir", moved, "--out", moved + ".npz", *args))
    assert last == {"devices": 4, "processes": 2, "step": 6}
    with np.load(ref + ".npz") as a, np.load(moved + ".npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=2e-6, err_msg=k)


def _records(n: int, seed: int = 0) -> list[dict]:
    """A stand-in for ``tfds.data_source``: records of varied sizes, grey and labelled."""
    rng = np.random.default_rng(seed)
    return [{"image": rng.integers(0, 255, tuple(int(v) for v in rng.integers(12, 40, 2))).astype(np.uint8),
             "label": i % 3} for i in range(n)]


def test_tfds_records_of_varied_sizes_stream_with_labels():
    from diffjax.data.tfds import RecordDataset

    source = _records(7)
    ds = RecordDataset("tfds:fake", "train", source, 16, 3, seed=1, crop="random")
    assert ds.image_shape == (16, 16, 1) and ds.num_classes == 3 and ds.num_examples == 7
    whole = [ds.batch(s, 4, seed=2) for s in range(4)]
    again = RecordDataset("tfds:fake", "train", source, 16, 3, seed=1, crop="random")
    for s in (2, 3):  # a fresh dataset at a mid-epoch step: the same batch
        b = again.batch(s, 4, seed=2)
        np.testing.assert_array_equal(b["image"], whole[s]["image"])
        np.testing.assert_array_equal(b["label"], whole[s]["label"])
    index = ds._indices(1, 4, np.arange(4), 2)
    np.testing.assert_array_equal(whole[1]["label"], [source[i]["label"] for i in index])
    center = RecordDataset("tfds:fake", "train", source, 16, 3, seed=1)
    want = scale_and_crop(source[index[0]]["image"][..., None], 16, None).astype(np.float32) / 127.5 - 1
    np.testing.assert_array_equal(center.batch(1, 4, seed=2)["image"][0], want)
    with pytest.raises(ValueError, match="set image_size"):
        RecordDataset("tfds:fake", "train", source, None, 3).batch(0, 7)


def test_every_dataset_trains_through_grain_with_the_batches_of_batch(folder):
    # One pipeline for every dataset: grain rows, threads, prefetch; the batches equal batch(s) exactly,
    # from any start step and on each of two hosts. Mutation tried: rows taken from step k // L + 1
    # (an off-by-one in the record index) -> the digits batches differ.
    import grain

    from diffjax.data.tfds import RecordDataset

    sets = [load_dataset("digits", image_size=16), load_dataset("scenes", image_size=16),
            load_dataset("photos", image_size=16),
            RecordDataset("tfds:fake", "train", _records(7), 16, 3, seed=1, crop="random"),
            load_dataset("folder", data_dir=folder, image_size=16, channels=3, eval_fraction=0, crop="random")]
    for ds in sets:
        assert isinstance(ds.records(8, start_step=3), grain.MapDataset)
        for count in (1, 2):
            for p in range(count):
                it = ds.iterator(8, start_step=3, seed=2, process_index=p, process_count=count)
                try:
                    for step in (3, 4, 5):
                        got, want = next(it), ds.batch(step, 8, seed=2, process_index=p, process_count=count)
                        assert got.keys() == want.keys(), ds.name
                        for k in want:
                            assert got[k].dtype == want[k].dtype, (ds.name, k)
                            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{ds.name} {k}")
                finally:
                    it.close()
