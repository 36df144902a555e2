"""Segmentation runs end to end: configs/segmentation_ddpm_features.py (DDPM features and the
pixel / random-UNet baselines) and configs/segmentation_ddep.py (pretrain, fine-tune) through
train and sample.py, on one tiny DDPM run shared by the module, with their refusals."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from configs.ddpm_scenes import get_config as ddpm_config
from configs.segmentation_ddep import get_config as ddep_config
from configs.segmentation_ddpm_features import get_config as features_config
import diffjax as dj
from diffjax import run_segmentation as rs
from diffjax.data.folder import read_label_map
from diffjax.data.scenes import write_folder
from diffjax.run_config import apply_overrides
from diffjax.run_kinds import train_and_evaluate
from diffjax.runs import load_run, sample_from_workdir

SIZE = 8  # a one-level UNet on 8x8 scenes compiles fastest
SMALL = {"model.channel_mult": (1,), "segmentation.blocks": ("up_0", "up_1")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg_data")
    labelled, inputs = str(root / "labelled"), str(root / "inputs")
    write_folder(labelled, 5, image_size=SIZE)  # 4 to train on, 1 held out (eval_fraction 0.2)
    write_folder(inputs, 2, split="test", image_size=SIZE, labelled=False)
    return labelled, inputs


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    """A 3-step unconditional one-level UNet on 8x8 scenes: the backbone of every features run here."""
    workdir = str(tmp_path_factory.mktemp("ddpm") / "run")
    c = ddpm_config("smoke")
    c.data.image_size = SIZE
    c.model.channel_mult = (1,)
    c.training.num_steps = 3
    c.training.ckpt_every = 3
    c.training.sample_every = 0
    c.training.progress_bar = False
    c.eval.enabled = False
    train_and_evaluate(c, workdir)
    return workdir


def _features(labelled, **overrides):
    c = features_config("smoke")
    c.data.image_size = SIZE
    return apply_overrides(c, {"segmentation.labelled_dir": labelled, "data.eval_fraction": 0.2,
                               "segmentation.num_labelled": 0, **SMALL, **overrides})


@pytest.fixture(scope="module")
def features_run(tmp_path_factory, ddpm_run, folders):
    workdir = str(tmp_path_factory.mktemp("seg") / "run")
    summary = train_and_evaluate(_features(folders[0], **{"segmentation.backbone_workdir": ddpm_run}), workdir)
    return workdir, summary


def test_features_run_trains_on_the_folder_and_sample_writes_label_and_uncertainty_maps(features_run, folders,
                                                                                         tmp_path):
    workdir, summary = features_run
    assert summary["num_labelled"] == 4 and summary["num_eval_images"] == 1
    assert 0.0 <= summary["miou"] <= 1.0 and np.isfinite(summary["final_loss"])
    # F = len(times) * channels of (up_0, up_1) of the one-level smoke UNet (8 + 8 channels).
    assert summary["num_features"] == 2 * (8 + 8)
    with open(os.path.join(workdir, "metrics.json")) as f:
        assert json.load(f)["miou"] == summary["miou"]

    out = str(tmp_path / "out")
    result = sample_from_workdir(rs.load_run_config(workdir), workdir, output=out, input_dir=folders[1])
    assert result["num"] == 2
    names = sorted(n for n in os.listdir(folders[1]) if n.endswith(".png"))
    images = np.stack([np.asarray(Image.open(os.path.join(folders[1], n)), np.float32) / 127.5 - 1 for n in names])
    segmenter = load_run(workdir)  # dj.load_run gives a segmentation run's Segmenter
    assert isinstance(segmenter, rs.Segmenter) and isinstance(segmenter, dj.Run)
    for call in (lambda: segmenter.generate(1), lambda: segmenter.score_fn, lambda: segmenter.sde,
                 lambda: segmenter.restore(images[:1])):
        with pytest.raises(ValueError, match=r"it can: \['predict', 'log_probs'\]"):
            call()
    want_labels, want_entropy = segmenter.predict(images)
    for name, lab, ent in zip(names, want_labels, want_entropy):
        stem = name[:-4]
        written = Image.open(os.path.join(out, f"{stem}_label.png"))
        assert written.mode == "P"  # a palette PNG whose indices are the class ids
        np.testing.assert_array_equal(read_label_map(os.path.join(out, f"{stem}_label.png"), 11), lab)
        unc = np.asarray(Image.open(os.path.join(out, f"{stem}_uncertainty.png")), np.float32)
        np.testing.assert_allclose(unc, np.clip(np.rint(ent * 255 / np.log(11)), 0, 255), atol=1)


def test_memory_mapped_features_train_the_same_ensemble_and_can_be_streamed(features_run, ddpm_run, folders,
                                                                           tmp_path):
    kw = {"segmentation.backbone_workdir": ddpm_run, "segmentation.feature_memmap": True}
    on_disk = train_and_evaluate(_features(folders[0], **kw), str(tmp_path / "mm"))
    assert os.path.getsize(tmp_path / "mm" / "features.npy") > 4 * SIZE * SIZE * 32 * 4  # 4 images x F = 32
    in_ram = features_run[1]
    assert on_disk["miou"] == in_ram["miou"] and on_disk["final_loss"] == pytest.approx(in_ram["final_loss"], 1e-5)
    # 4 x 64 labelled pixels read 64 at a time: another (streamed) training, still a finished run.
    streamed = train_and_evaluate(_features(folders[0], **kw, **{"segmentation.chunk_pixels": 64}),
                                  str(tmp_path / "chunks"))
    assert np.isfinite(streamed["final_loss"]) and 0.0 <= streamed["miou"] <= 1.0


def test_baselines_use_pixels_or_a_random_unet_of_the_backbones_shape(ddpm_run, folders):
    images = np.random.default_rng(0).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    pixels, info = rs.build_feature_fn(_features(folders[0], **{"segmentation.features": "pixels"}), images.shape[1:])
    np.testing.assert_array_equal(np.asarray(pixels(images)), images)
    kw = {"segmentation.backbone_workdir": ddpm_run}
    trained, t_info = rs.build_feature_fn(_features(folders[0], **kw), images.shape[1:])
    rand, r_info = rs.build_feature_fn(_features(folders[0], **kw, **{"segmentation.features": "random_unet"}),
                                       images.shape[1:])
    f_trained, f_rand = np.asarray(trained(images)), np.asarray(rand(images))
    assert f_trained.shape == f_rand.shape == (2, SIZE, SIZE, 32)
    assert t_info["backbone_step"] == 3 and "random_unet_seed" in r_info
    assert not np.allclose(f_trained, f_rand)
    assert np.std(f_rand) > 1e-3 and np.all(np.isfinite(f_rand))
    # The random network computes something in its residual branches (zero-initialised for training).
    from flax import nnx

    from diffjax.nn import UNet, UNetConfig

    net = UNet(UNetConfig(image_size=SIZE, base_channels=8, channel_mult=(1,), attn_resolutions=()), rngs=nnx.Rngs(0))
    zero = lambda: [k for k, v in rs._flat(nnx.state(net, nnx.Param)).items() if v.ndim == 4 and not v.any()]  # noqa: E731
    assert zero()  # conv2 of every residual block and conv_out start at zero
    rs._redraw_zero_kernels(net, __import__("jax").random.key(0))
    assert not zero()


def test_features_refusals(ddpm_run, folders, tmp_path):
    wd = str(tmp_path / "never")
    with pytest.raises(ValueError, match="backbone_workdir=DDPM_RUN"):
        train_and_evaluate(_features(folders[0]), wd)
    with pytest.raises(ValueError, match="does not exist"):
        train_and_evaluate(_features(folders[0], **{"segmentation.backbone_workdir": str(tmp_path / "nope")}), wd)
    with pytest.raises(ValueError, match=r"takes 8x8x3 images but the labelled images are 16x16x3"):
        train_and_evaluate(_features(folders[0], **{"segmentation.backbone_workdir": ddpm_run,
                                                     "data.image_size": 16}), wd)
    with pytest.raises(ValueError, match="unknown \\['up_9'\\]"):
        train_and_evaluate(_features(folders[0], **{"segmentation.backbone_workdir": ddpm_run,
                                                     "segmentation.blocks": ("up_1", "up_9")}), wd)
    with pytest.raises(ValueError, match="features must be one of"):
        train_and_evaluate(_features(folders[0], **{"segmentation.features": "dino"}), wd)
    with pytest.raises(ValueError, match="num_classes=K"):
        train_and_evaluate(_features(folders[0], **{"segmentation.features": "pixels", "data.num_classes": 0}), wd)
    assert not os.path.exists(wd)  # every refusal came before anything was written


def test_segmenting_refuses_a_changed_backbone_and_bad_inputs(features_run, tmp_path):
    workdir, _ = features_run
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((SIZE + 1, SIZE, 3), np.uint8)).save(bad / "odd.png")
    with pytest.raises(ValueError, match="odd.png"):
        sample_from_workdir(rs.load_run_config(workdir), workdir, output=str(tmp_path / "o"), input_dir=str(bad))
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("config.json", rs.STATE_FILE, "segmentation.json"):
        (copy / name).write_bytes(open(os.path.join(workdir, name), "rb").read())
    info = json.loads((copy / "segmentation.json").read_text())
    info["backbone_step"] = 99
    (copy / "segmentation.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="now at checkpoint step 3 but the classifiers were trained on step 99"):
        rs.load_segmenter(str(copy))


def test_ddep_pretrain_then_finetune_starts_from_the_pretrained_weights(folders, tmp_path):
    pre = str(tmp_path / "pre")
    c = ddep_config("pretrain_smoke")
    c.data.image_size = SIZE
    c.model.channel_mult = (1,)
    c.training.num_steps = 3
    summary = train_and_evaluate(c, pre)
    assert np.isfinite(summary["final_loss"])
    with pytest.raises(ValueError, match="does not segment"):
        sample_from_workdir(rs.load_run_config(pre), pre, output=str(tmp_path / "o"), input_dir=folders[1])
    with pytest.raises(ValueError, match="DDeP pretraining run"):
        load_run(pre)

    f = apply_overrides(ddep_config("finetune_smoke"), {
        "data.image_size": SIZE, "segmentation.labelled_dir": folders[0], "data.eval_fraction": 0.2,
        "segmentation.pretrain_workdir": pre, "model.channel_mult": (1,), "segmentation.steps": 3})
    model, info = rs._pretrained_unet(f, (SIZE, SIZE, 3), 11)
    stored = dict(np.load(os.path.join(pre, rs.STATE_FILE)))
    start = rs._flat(__import__("flax").nnx.state(model, __import__("flax").nnx.Param))
    assert info["init"] == "pretrained" and start.keys() == stored.keys()
    for name, value in start.items():
        if "conv_out" in name:  # the new head: a channel per class
            assert value.shape[-1] == 11 or value.shape == (11,)
        else:
            np.testing.assert_array_equal(value, stored[name])

    fine = str(tmp_path / "fine")
    summary = train_and_evaluate(f, fine)
    assert summary["init"] == "pretrained" and 0 <= summary["miou"] <= 1
    out = str(tmp_path / "out")
    sample_from_workdir(rs.load_run_config(fine), fine, output=out, input_dir=folders[1])
    assert len(os.listdir(out)) == 4

    # The baseline ignores any pretraining run it is given, even a missing one.
    rand = apply_overrides(f, {"segmentation.init": "random", "segmentation.pretrain_workdir": str(tmp_path / "x")})
    assert rs._pretrained_unet(rand, (SIZE, SIZE, 3), 11)[1] == {"init": "random"}
    for bad, match in (({"segmentation.pretrain_workdir": ""}, "pretrain_workdir=P"),
                       ({"segmentation.pretrain_workdir": fine}, "not a finished DDeP pretraining run"),
                       ({"data.image_size": 16}, "takes 8x8x3 images")):
        with pytest.raises(ValueError, match=match):
            train_and_evaluate(apply_overrides(f, bad), str(tmp_path / "never"))
    assert not os.path.exists(tmp_path / "never")


def test_ddep_pretraining_stops_and_resumes_as_if_never_stopped(tmp_path, monkeypatch):
    from diffjax.checkpoint import StopRequest

    c = ddep_config("pretrain_smoke")
    c.data.image_size = SIZE
    c.model.channel_mult = (1,)
    c.training.num_steps = 4
    c.training.ckpt_every = 2  # a periodic save at step 2 (not at the end: the weights file is written then)
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    saved_steps, save = [], rs._save_npz
    monkeypatch.setattr(rs, "_save_npz", lambda path, tree: (
        saved_steps.append(int(tree["step"])) if path.endswith(rs.RESUME_FILE) else None, save(path, tree)))
    want = train_and_evaluate(c, full)
    assert saved_steps == [2]
    assert not os.path.exists(os.path.join(full, rs.RESUME_FILE))  # removed once finished

    stop = StopRequest()
    stop.request()  # as if SIGTERM arrived during the first step
    first = train_and_evaluate(c, part, stop=stop)
    assert first["stopped_early"] and first["step"] == 1
    assert os.path.exists(os.path.join(part, rs.RESUME_FILE)) and not os.path.exists(os.path.join(part, rs.STATE_FILE))
    second = train_and_evaluate(c, part)  # the same command again continues at step 1
    assert saved_steps == [2, 1, 2]  # the stop's save, then the resumed run's periodic one
    assert second["step"] == 4 and second["resumed_from"] == 1 and not second["stopped_early"]
    assert not os.path.exists(os.path.join(part, rs.RESUME_FILE))
    with np.load(os.path.join(full, rs.STATE_FILE)) as a, np.load(os.path.join(part, rs.STATE_FILE)) as b:
        assert a.files == b.files
        for name in a.files:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7, err_msg=name)
    assert second["final_loss"] == pytest.approx(want["final_loss"], rel=1e-5)
