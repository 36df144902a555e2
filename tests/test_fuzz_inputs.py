"""Fuzz: a folder of generated bad and odd inputs through every reader and every sample.py task.

Each file must either be read correctly (uint8 / [-1, 1] arrays of the model's channels, finite) or be
refused with a ValueError whose message names the file, on one line once reported, before anything is
written. The sample.py part uses real runs of every task (tiny networks, their initial state saved
as a checkpoint, 2 sampling steps): an input that passes the checks is sampled, and its output
must be written at the right size.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from test_guards_inputs import write_16bit_grey, write_bomb_png, write_exif_rotated
from test_guards_outputs import RUNS

from diffjax.data.folder import load_folder
from diffjax.errors import one_line
from diffjax.pipelines.restoration import read_inputs
from diffjax.pipelines.sr3 import read_low_res_folder
from diffjax.pipelines.translation import read_translation_inputs

SIDE = 16


def _png(path, array, **kw):
    Image.fromarray(array).save(path, **kw)


def _good(rng, channels=3):
    shape = (SIDE, SIDE, 3) if channels == 3 else (SIDE, SIDE)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_fuzz_files(folder: str) -> dict[str, str]:
    """Write one file of each kind into ``folder``; returns ``{kind: file name}``."""
    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    _png(p("whole.png"), _good(rng))
    data = open(p("whole.png"), "rb").read()
    open(p("truncated.png"), "wb").write(data[: len(data) // 2])
    open(p("zero.png"), "wb").write(b"")
    open(p("wrong_magic.png"), "wb").write(b"GIF89a" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    open(p("text.png"), "wb").write(b"not an image at all\n")
    write_bomb_png(p("huge.png"))
    write_16bit_grey(p("grey16.png"), SIDE, SIDE)
    Image.fromarray(_good(rng)).convert("CMYK").save(p("cmyk.jpg"))
    _png(p("rgba.png"), np.dstack([_good(rng), np.full((SIDE, SIDE), 128, np.uint8)]))
    _png(p("la.png"), np.dstack([_good(rng, 1), np.full((SIDE, SIDE), 128, np.uint8)]))
    Image.fromarray(_good(rng)).convert("P").save(p("palette.png"))
    _png(p("one_pixel.png"), np.zeros((1, 1, 3), np.uint8))
    write_exif_rotated(p("exif.png"), h=SIDE, w=SIDE * 2)
    Image.fromarray(_good(rng)).save(p("jpeg_named.png"), format="JPEG")
    return {os.path.splitext(n)[0]: n for n in sorted(os.listdir(folder))}


FUZZ_KINDS = ["whole", "truncated", "zero", "wrong_magic", "text", "huge", "grey16", "cmyk", "rgba", "la",
              "palette", "one_pixel", "exif", "jpeg_named"]


def _only(tmp_path, kind) -> tuple[str, str]:
    """A folder holding just the fuzz file of ``kind``; returns (folder, file name)."""
    names = make_fuzz_files(str(tmp_path / "all"))
    folder = tmp_path / "one"
    folder.mkdir()
    os.replace(tmp_path / "all" / names[kind], folder / names[kind])
    return str(folder), names[kind]


def _check_outcome(call, name: str, channels: int):
    """Either correct arrays or a ValueError naming ``name`` (reported on one line)."""
    try:
        out = call()
    except ValueError as err:
        message = one_line(err)
        assert name in message or "no input images" in message or "no .png images" in message \
            or "holds no files" in message, message
        assert "\n" not in message
        return None
    arrays = [item.image if hasattr(item, "image") else item[1] for item in out] if isinstance(out, list) \
        else [out.eval_images(1)[0]]
    for a in arrays:
        assert a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
        assert a.shape[-1] == channels, a.shape
    return arrays


READERS = {
    # reader name -> (call(folder), channels of the result)
    "palette colorization": (lambda d: read_inputs(d, (SIDE, SIDE, 1), ("colorization",)), 1),
    "palette/repaint inpainting": (lambda d: read_inputs(d, (SIDE, SIDE, 3), ("inpainting",)), 3),
    "palette jpeg": (lambda d: read_inputs(d, (SIDE, SIDE, 3), ("jpeg",)), 3),
    "translation/segmentation": (lambda d: read_translation_inputs(d, (SIDE, SIDE, 3)), 3),
    "sr3/ldm-sr/autoencoder": (lambda d: read_low_res_folder(d, channels=3, scale=2, tile=8), 3),
    "folder dataset": (lambda d: load_folder(d, eval_fraction=0, image_size=8, channels=3), 3),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("kind", FUZZ_KINDS)
def test_every_reader_reads_or_refuses_naming_the_file(tmp_path, reader, kind):
    folder, name = _only(tmp_path, kind)
    call, channels = READERS[reader]
    arrays = _check_outcome(lambda: call(folder), name, channels)
    broken = {"truncated", "zero", "wrong_magic", "text", "huge"}
    if kind in broken:
        assert arrays is None, f"{reader} accepted the {kind} file"
    if kind == "grey16" and arrays is not None:
        assert np.ptp(arrays[0]) > 1.5  # the full range, not a white image
    if kind == "exif" and arrays is not None and reader == "folder dataset":
        assert arrays[0].shape == (8, 8, 3)


def test_label_maps_out_of_range_or_of_another_size_are_refused(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        _png(tmp_path / f"s{i}.png", _good(rng))
        _png(tmp_path / f"s{i}_label.png", rng.integers(0, 3, (SIDE, SIDE), dtype=np.uint8))
    load_folder(str(tmp_path), eval_fraction=0, num_classes=3)
    _png(tmp_path / "s1_label.png", np.full((SIDE, SIDE), 7, np.uint8))
    with pytest.raises(ValueError, match="s1_label.png: class ids \\[7\\] out of range"):
        load_folder(str(tmp_path), eval_fraction=0, num_classes=3)
    _png(tmp_path / "s1_label.png", np.zeros((SIDE, SIDE + 2), np.uint8))
    with pytest.raises(ValueError, match="s1_label.png: label map is 18x16"):
        load_folder(str(tmp_path), eval_fraction=0, num_classes=3)
    write_bomb_png(str(tmp_path / "s1_label.png"))
    with pytest.raises(ValueError, match="s1_label.png.*decompression bomb"):
        load_folder(str(tmp_path), eval_fraction=0, num_classes=3)


@pytest.mark.parametrize("mask", ["other_size", "grey_values", "truncated", "huge"])
def test_masks_of_another_size_or_broken_are_refused(tmp_path, mask):
    rng = np.random.default_rng(0)
    _png(tmp_path / "x.png", _good(rng))
    path = str(tmp_path / "x_mask.png")
    if mask == "other_size":
        _png(path, np.zeros((SIDE + 4, SIDE), np.uint8))
    elif mask == "grey_values":
        _png(path, np.full((SIDE, SIDE), 77, np.uint8))
    elif mask == "truncated":
        _png(path, np.zeros((SIDE, SIDE), np.uint8))
        open(path, "r+b").truncate(30)
    else:
        write_bomb_png(path)
    with pytest.raises(ValueError, match="x_mask.png"):
        read_inputs(str(tmp_path), (SIDE, SIDE, 3), ("inpainting",))


# -- every sample.py task on real runs -----------------------------------------------------------------
# name -> (config, overrides, the data's image shape, output size / input size). Each run's checkpoint is the
# initial state of a tiny network (tests/untrained_runs.py: no training step); sampling takes 2 steps.
REAL_RUNS = {
    "sr3": ("sr3_photos_x4.py:smoke", {"data.image_size": 64}, (64, 64, 3), 4),
    "palette": ("palette_inpainting.py:smoke", {}, (SIDE, SIDE, 3), 1),
    "repaint": ("repaint_fashion_mnist.py:smoke", {}, (SIDE, SIDE, 1), 1),
    "ldm_sr": ("ldm_photos_sr4.py:smoke", {"data.image_size": 64}, (64, 64, 3), 4),
    "autoencoder": ("autoencoder_photos.py:smoke", {}, (SIDE, SIDE, 3), 1),
    "segmentation": ("segmentation_ddpm_features.py:smoke", {}, (SIDE, SIDE, 3), 1),
    "translation": ("translation_fashion_mnist.py:score_smoke", {"translation.method": "sdedit"}, (SIDE, SIDE, 1), 1),
}
assert set(REAL_RUNS) == set(RUNS)  # every task test_guards_outputs drives
BROKEN = {"truncated", "zero", "wrong_magic", "text", "huge"}


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory):
    """``{name: workdir}``: one restorable run per sample.py task (the LDM on the autoencoder run)."""
    from untrained_runs import tiny_config, write_initial_run

    from diffjax.runs import train

    root = tmp_path_factory.mktemp("fuzz_runs")
    out = {}
    for name in sorted(REAL_RUNS, key=lambda n: n != "autoencoder"):  # the LDM's first stage first
        spec, overrides, shape, _ = REAL_RUNS[name]
        workdir = str(root / name)
        if name == "segmentation":  # pixel features: no backbone; two steps of one small MLP
            train(spec, workdir, {"segmentation.features": "pixels", "data.image_size": SIDE, "segmentation.steps": 2,
                                  "segmentation.num_members": 1, "training.progress_bar": False})
        else:
            if name == "ldm_sr":
                overrides = dict(overrides, **{"autoencoder.workdir": out["autoencoder"]})
            write_initial_run(tiny_config(spec, overrides), workdir, shape)
        out[name] = workdir
    return out


def _named(message: str, names) -> list[str]:
    """The file names of ``names`` that ``message`` mentions (as whole names, not inside another name)."""
    import re

    return [n for n in names if re.search(r"(?<![\w.-])" + re.escape(n), message)]


def _upright_size(path: str) -> tuple[int, int]:
    from PIL import ImageOps

    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).size


@pytest.mark.parametrize("run", list(RUNS))
def test_sample_py_tasks_sample_or_refuse_every_bad_file_before_writing(tmp_path, real_runs, run):
    """Every fuzz file in one --input folder of a real run: a refusal names the files it refuses, on one line,
    with nothing written; they are taken out and the folder run again, until the rest is sampled; every
    remaining file then has its output, of the right size. Broken files must be among the refused."""
    from diffjax.run_config import load_run_config
    from diffjax.runs import sample_from_workdir

    workdir = real_runs[run]
    scale = REAL_RUNS[run][3]
    folder = tmp_path / "in"
    names = make_fuzz_files(str(folder))
    if run in ("palette", "repaint"):  # inpainting: a valid mask for each image, white = fill
        mask = np.zeros((SIDE, SIDE), np.uint8)
        mask[4:12, 4:12] = 255
        for name in names.values():
            _png(folder / (os.path.splitext(name)[0] + "_mask.png"), mask)
    config = load_run_config(workdir)
    output = tmp_path / "out"
    refused = {}
    for _ in range(len(names) + 1):
        left = sorted(n for n in os.listdir(folder) if not n.endswith("_mask.png"))
        try:
            summary = sample_from_workdir(config, workdir, output=str(output), input_dir=str(folder))
            break
        except ValueError as err:
            message = one_line(err)
            assert not output.exists(), f"{run}: refused ({message}) after writing {sorted(os.listdir(output))}"
            if not left or "no input images" in message or "no .png images" in message:
                summary = None
                break
            named = _named(message, left) or [n for n in left if _named(message, [os.path.splitext(n)[0] + "_mask.png"])]
            assert named, f"{run}: a refusal that names none of {left}: {message}"
            for name in named:
                refused[name] = message
                os.remove(folder / name)
                mask = folder / (os.path.splitext(name)[0] + "_mask.png")
                if mask.exists():
                    os.remove(mask)
    missing = {names[k] for k in BROKEN} - set(refused)
    assert not missing, f"{run} accepted {sorted(missing)}"
    assert summary is not None and summary["num"] >= 1, f"{run}: nothing sampled; refused {refused}"
    written = sorted(os.listdir(output))
    sampled = 0
    for name in sorted(n for n in os.listdir(folder) if not n.endswith("_mask.png")):
        stem = os.path.splitext(name)[0]
        outs = [o for o in written if os.path.splitext(o)[0] in (stem, f"{stem}_label", f"{stem}_uncertainty")]
        # Every PNG left is an input of every task; a .jpg is one only where the task reads JPEG files.
        assert outs or not name.endswith(".png"), f"{run}: {name} was accepted but has no output in {written}"
        sampled += bool(outs)
        w, h = _upright_size(str(folder / name))
        for o in outs:
            with Image.open(output / o) as img:
                img.load()  # whole, decodable
                assert img.size == (w * scale, h * scale), f"{run}: {name} {w}x{h} -> {o} {img.size}"
    assert sampled == summary["num"], (summary, written, refused)
    assert not [o for o in written if o.startswith(".")], f"{run}: temporary files left: {written}"
