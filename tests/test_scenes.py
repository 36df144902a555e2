"""The procedural scene set: determinism, exact labels, held-out backgrounds, the folder
round trip, and a smoke run of configs/ddpm_scenes.py.

Fashion-MNIST is read only through ``diffjax.data.builtin.load_fashion_mnist``, so the
tests follow wherever that loader is pointed."""

import numpy as np
import pytest

from diffjax.data import load_dataset
from diffjax.data.builtin import load_fashion_mnist
from diffjax.data.scenes import NUM_CLASSES, TEST_BACKGROUNDS, TRAIN_BACKGROUNDS, Scenes, main, write_folder


@pytest.fixture(scope="module")
def train():
    return Scenes("train", seed=3)


@pytest.fixture(scope="module")
def test_split():
    return Scenes("test", seed=3)


def test_scenes_are_a_pure_function_of_their_seeds(train):
    again = Scenes("train", seed=3)
    b1, b2 = train.batch(5, 8, seed=1), again.batch(5, 8, seed=1)
    for key in ("image", "label_map"):
        np.testing.assert_array_equal(b1[key], b2[key])
    assert b1["image"].shape == (8, 32, 32, 3) and b1["label_map"].dtype == np.int32
    assert b1["image"].min() >= -1 and b1["image"].max() <= 1
    assert not np.array_equal(b1["image"], train.batch(6, 8, seed=1)["image"])
    assert not np.array_equal(b1["image"], Scenes("train", seed=4).batch(5, 8, seed=1)["image"])
    halves = [train.batch(5, 8, seed=1, process_index=p, process_count=2)["image"] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), b1["image"])
    five, eight = train.labelled_scenes(5), train.labelled_scenes(8)
    np.testing.assert_array_equal(five[0], eight[0][:5])
    np.testing.assert_array_equal(five[1], eight[1][:5])
    grey = Scenes("train", seed=3, channels=1).labelled_scenes(2)
    assert grey[0].shape == (2, 32, 32, 1)
    np.testing.assert_array_equal(grey[1], eight[1][:2])  # same scenes, one channel


@pytest.mark.parametrize("split", ["train", "test"])
def test_label_pixels_are_the_classes_of_the_items_pasted_there(split, train, test_split):
    scenes = train if split == "train" else test_split
    classes = load_fashion_mnist(split).labels()  # independent of the scene code
    images, label_maps = scenes.labelled_scenes(12)
    counts = np.zeros(NUM_CLASSES, int)
    for i in range(12):
        info = scenes.labelled_info(i)
        assert 1 <= len(info.items) <= 3
        expected = np.zeros((32, 32), np.uint8)
        for item in info.items:  # later items cover earlier ones
            k = item.mask.shape[0]
            assert item.fashion_class == classes[item.index]
            expected[item.top : item.top + k, item.left : item.left + k][item.mask] = classes[item.index] + 1
        np.testing.assert_array_equal(label_maps[i], expected)
        background = label_maps[i] == 0
        np.testing.assert_array_equal(images[i][background], info.background[background])
        # Item pixels are painted over (almost never equal to the background there).
        assert np.mean(np.any(images[i][~background] != info.background[~background], -1)) > 0.9
        counts += np.bincount(label_maps[i].ravel(), minlength=NUM_CLASSES)
    assert counts[0] > 0 and np.count_nonzero(counts[1:]) >= 5


def test_held_out_scenes_use_backgrounds_never_seen_in_training(train, test_split):
    assert not set(TRAIN_BACKGROUNDS) & set(TEST_BACKGROUNDS)
    seen_train = {train.labelled_info(i).background_name for i in range(40)}
    seen_test = {test_split.labelled_info(i).background_name for i in range(40)}
    assert seen_train <= set(TRAIN_BACKGROUNDS) and len(seen_train) >= 5
    assert seen_test <= set(TEST_BACKGROUNDS) and len(seen_test) == len(TEST_BACKGROUNDS)
    # Nor the same layouts: scene i of the two splits is drawn from different seeds.
    def boxes(scenes, i):
        return [(it.top, it.left, it.mask.shape[0]) for it in scenes.labelled_info(i).items]

    assert sum(boxes(train, i) == boxes(test_split, i) for i in range(10)) <= 1


def test_write_folder_round_trips_through_the_folder_dataset(train, tmp_path):
    paths = write_folder(str(tmp_path / "a"), 6, seed=3)
    assert len(paths) == 6
    folder = load_dataset("folder", data_dir=str(tmp_path / "a"), num_classes=NUM_CLASSES, eval_fraction=0)
    images, label_maps = train.labelled_scenes(6)
    np.testing.assert_array_equal(folder.stored_images(), images)
    np.testing.assert_array_equal(folder.label_maps(), label_maps)
    main(["--out", str(tmp_path / "b"), "--num", "3", "--split", "test", "--seed", "3"])
    cli = load_dataset("folder", data_dir=str(tmp_path / "b"), num_classes=NUM_CLASSES, eval_fraction=0)
    np.testing.assert_array_equal(cli.label_maps(), Scenes("test", seed=3).labelled_scenes(3)[1])


def test_refuses_bad_arguments():
    with pytest.raises(ValueError, match="splits 'train' and 'test'"):
        Scenes("validation")
    with pytest.raises(ValueError, match="channels"):
        Scenes(channels=2)
    with pytest.raises(ValueError, match="shortest background side"):
        Scenes(image_size=500)
    with pytest.raises(ValueError, match="scenes have 11 classes"):
        load_dataset("scenes", num_classes=5)


def test_ddpm_scenes_smoke_run_on_a_written_folder(tmp_path):
    """configs/ddpm_scenes.py:smoke with --config.data.name=folder: training, then the
    end-to-end evaluation (FD-AlexNet against the folder's held-out share)."""
    from configs.ddpm_scenes import get_config
    from train import train_and_evaluate

    c = get_config("smoke")
    assert c.data.name == "scenes" and c.data.image_size == 32
    folder = str(tmp_path / "scenes")
    write_folder(folder, 8, image_size=8, labelled=False)
    c.data.name, c.data.data_dir, c.data.image_size, c.data.eval_fraction = "folder", folder, 8, 0.25
    c.model.channel_mult = (1,)
    c.training.num_steps = c.training.ckpt_every = 2
    c.training.sample_every = 0  # the end-of-training evaluation samples once
    c.training.progress_bar = False
    c.sampling.steps = 2
    c.eval.num_samples = c.sampling.batch_size = 4
    summary = train_and_evaluate(c, str(tmp_path / "run"))
    assert summary["step"] == 2 and np.isfinite(summary["final_loss"])
    # 2 held-out files, repeated to the 4 evaluation images.
    assert np.isfinite(summary["fd_alexnet_ema"]) and np.isfinite(summary["fd_alexnet_train_vs_heldout"])
