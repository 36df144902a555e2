"""Fuzz: a folder of generated bad and odd inputs through every reader and every sample.py task.

Each file must either be read correctly (uint8 / [-1, 1] arrays of the model's channels, finite) or be
refused with a ValueError whose message names the file, on one line once reported, before anything is
written. The sample.py part uses untrained runs (a config.json only): inputs are checked before a
model is restored, so an input that passes ends at "no checkpoint", never at a traceback.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from test_guards_inputs import write_16bit_grey, write_bomb_png, write_exif_rotated
from test_guards_outputs import RUNS, _untrained_run

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


def _files_inputs_are_checked_against(workdir: str, run: str) -> None:
    """The files sample.py reads the model's input shape from (training writes them; no checkpoint here)."""
    import json

    channels = 1 if run in ("repaint", "translation") else 3
    with open(os.path.join(workdir, "model_config.json"), "w") as f:
        json.dump({"image_size": SIDE, "in_channels": channels}, f)
    if run == "segmentation":
        with open(os.path.join(workdir, "segmentation.json"), "w") as f:
            json.dump({"image_shape": [SIDE, SIDE, 3], "num_classes": 3}, f)


@pytest.mark.parametrize("run", list(RUNS))
def test_sample_py_tasks_refuse_every_bad_file_before_writing(tmp_path, run):
    """Every fuzz file through sample_from_workdir of each task: a ValueError, the output never created."""
    from diffjax.run_config import load_run_config
    from diffjax.runs import sample_from_workdir

    workdir = _untrained_run(tmp_path, RUNS[run])
    _files_inputs_are_checked_against(workdir, run)
    config = load_run_config(workdir)
    names = make_fuzz_files(str(tmp_path / "all"))
    for kind, name in names.items():
        folder = tmp_path / f"in_{kind}"
        folder.mkdir()
        os.replace(tmp_path / "all" / name, folder / name)
        output = tmp_path / f"out_{kind}"
        with pytest.raises(ValueError) as info:
            sample_from_workdir(config, workdir, output=str(output), input_dir=str(folder))
        message = one_line(info.value)
        # An input that passes the checks ends where the model would be restored (no checkpoint here);
        # a latent run then needs its autoencoder run, a segmentation run its backbone.
        passed_the_checks = any(s in message for s in ("no checkpoint", "no input images", "no .png", "untrained",
                                                       "holds no files", "autoencoder.workdir", "backbone_workdir"))
        assert name in message or passed_the_checks, f"{run} / {kind}: {message}"
        assert kind not in {"truncated", "zero", "wrong_magic", "text", "huge"} or name in message \
            or "no input images" in message or "no .png" in message, f"{run} accepted {kind}: {message}"
        assert not output.exists(), f"{run} / {kind} wrote {output}"
