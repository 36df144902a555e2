"""The one image reader (diffjax.image_io) behind every command and dataset: 16-bit, EXIF, bombs, pre-checks.

Numbered cases: (3) 16-bit grey scaled, not white; (7) a header claiming 20000x20000 refused in one line
by every reader; (8) EXIF orientation applied; (4) a bad file in the held-out share found before training.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from diffjax import image_io
from diffjax.data.folder import load_folder, read_image, read_label_map
from diffjax.errors import one_line
from diffjax.pipelines.restoration import read_inputs
from diffjax.pipelines.sr3 import read_low_res_folder
from diffjax.pipelines.translation import read_translation_inputs


def write_bomb_png(path: str, side: int = 20000) -> None:
    """A valid PNG header claiming ``side x side`` grey pixels (the file itself is tiny)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                + chunk(b"IEND", b""))


def write_16bit_grey(path: str, h: int = 16, w: int = 16) -> np.ndarray:
    """A 16-bit grey PNG ramp over the full range; returns the 8-bit values it must read as."""
    ramp = np.linspace(0, 65535, h * w).round().astype(np.uint16).reshape(h, w)
    Image.fromarray(ramp).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I"), img.mode
    return np.rint(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)


def write_exif_rotated(path: str, h: int = 8, w: int = 16, orientation: int = 6) -> np.ndarray:
    """A ``w x h`` RGB image tagged with an EXIF orientation; returns the upright pixels a viewer shows."""
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)
    upright = {6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90, 3: Image.Transpose.ROTATE_180}
    return np.asarray(Image.fromarray(pixels).transpose(upright[orientation]))


# -- (3) 16-bit grey ---------------------------------------------------------------


def test_16bit_grey_is_scaled_not_clipped_by_every_reader(tmp_path):
    want = write_16bit_grey(str(tmp_path / "a.png"))
    assert want.max() == 255 and want.min() == 0 and len(np.unique(want)) > 200
    np.testing.assert_array_equal(image_io.read_pixels(str(tmp_path / "a.png")), want)
    np.testing.assert_array_equal(read_image(str(tmp_path / "a.png"), 1)[..., 0], want)  # folder datasets
    # translation / segmentation inputs (Palette's reader is the same _load)
    (name, image), = read_translation_inputs(str(tmp_path), (16, 16, 1))
    np.testing.assert_allclose((image[..., 0] + 1) * 127.5, want, atol=1e-3)
    # colorization (Palette): a grey input
    restored = read_inputs(str(tmp_path), (16, 16, 1), ("colorization",))
    np.testing.assert_allclose((restored[0].image[..., 0] + 1) * 127.5, want, atol=1e-3)
    # SR3 / LDM-SR / autoencoder: 16-bit grey was refused before; now read as the 8-bit grey it is
    (_, low), = read_low_res_folder(str(tmp_path), channels=1, scale=2, tile=8)
    np.testing.assert_allclose((low[..., 0] + 1) * 127.5, want, atol=1e-3)


def test_dark_16bit_image_is_not_mistaken_for_8bit(tmp_path):
    # All values <= 255 in a 16-bit file are near-black, not mid-grey.
    Image.fromarray(np.full((4, 4), 200, np.uint16)).save(tmp_path / "dark.png")
    assert image_io.read_pixels(str(tmp_path / "dark.png")).max() == 1


def test_float_image_in_unit_range_is_scaled():
    img = Image.fromarray(np.full((2, 2), 0.5, np.float32), mode="F")
    assert np.asarray(image_io.to_8bit(img)).tolist() == [[128, 128], [128, 128]]


# -- (8) EXIF orientation -------------------------------------------------------------


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(tmp_path, orientation):
    upright = write_exif_rotated(str(tmp_path / "r.png"), orientation=orientation)
    np.testing.assert_array_equal(image_io.read_pixels(str(tmp_path / "r.png")), upright)
    np.testing.assert_array_equal(read_image(str(tmp_path / "r.png"), 3), upright)
    assert image_io.read_header(str(tmp_path / "r.png"))[2] == upright.shape[1::-1]


def test_exif_rotated_folder_dataset_sizes_come_from_the_upright_image(tmp_path):
    # A sideways photo among upright ones of the same (upright) size: no "mixed sizes" error.
    write_exif_rotated(str(tmp_path / "a.png"), h=8, w=16, orientation=6)  # upright 8 wide, 16 high
    Image.fromarray(np.zeros((16, 8, 3), np.uint8)).save(tmp_path / "b.png")
    ds = load_folder(str(tmp_path), eval_fraction=0)
    assert ds.image_shape == (16, 8, 3)


# -- (7) decompression bombs ------------------------------------------------------------


def _bomb_readers(folder):
    path = os.path.join(folder, "bomb.png")
    return {
        "image_io": lambda: image_io.read_pixels(path),
        "header": lambda: image_io.read_header(path),
        "folder read_image": lambda: read_image(path, 3),
        "folder read_label_map": lambda: read_label_map(path, 4),
        "folder dataset": lambda: load_folder(folder, eval_fraction=0),
        "palette/repaint/ldm-inpaint": lambda: read_inputs(folder, (8, 8, 3), ("colorization", "inpainting")),
        "translation/segmentation": lambda: read_translation_inputs(folder, (8, 8, 3)),
        "sr3/ldm-sr/autoencoder": lambda: read_low_res_folder(folder, channels=3, scale=2, tile=8),
    }


@pytest.mark.parametrize("reader", list(_bomb_readers("x")))
def test_bomb_header_is_refused_in_one_line_by_every_reader(tmp_path, reader):
    write_bomb_png(str(tmp_path / "bomb.png"))
    with pytest.raises(ValueError) as info:
        _bomb_readers(str(tmp_path))[reader]()
    message = one_line(info.value)
    assert "bomb.png" in message and "decompression bomb" in message and "400000000 pixels" in message, message


def test_bomb_just_over_the_limit_is_refused_too(tmp_path):
    # Pillow only warns between 1x and 2x its limit; the reader refuses.
    side = int(image_io.MAX_PIXELS ** 0.5) + 10
    write_bomb_png(str(tmp_path / "bomb.png"), side)
    with pytest.raises(ValueError, match="decompression bomb"):
        image_io.read_pixels(str(tmp_path / "bomb.png"))


# -- (4) every file of a dataset checked before the first step ---------------------------------


def _folder(tmp_path, n=20):
    for i in range(n):
        Image.fromarray(np.full((8, 8), i * 10, np.uint8)).save(tmp_path / f"im{i:02d}.png")
    return str(tmp_path)


def test_bad_file_in_held_out_share_is_found_when_the_training_split_loads(tmp_path):
    folder = _folder(tmp_path)
    test_files = load_folder(folder, split="test", eval_fraction=0.1).files
    train_files = load_folder(folder, split="train", eval_fraction=0.1).files
    assert len(test_files) == 2 and not set(test_files) & set(train_files)
    with open(test_files[0], "r+b") as f:  # truncate a held-out image: its header still reads
        f.truncate(40)
    with pytest.raises(ValueError, match=os.path.basename(test_files[0])):
        load_folder(folder, split="train", eval_fraction=0.1)


def test_non_image_in_held_out_share_is_found_before_training(tmp_path):
    folder = _folder(tmp_path)
    held = load_folder(folder, split="test", eval_fraction=0.1).files[1]
    with open(held, "wb") as f:
        f.write(b"this is not a PNG")
    with pytest.raises(ValueError, match=f"{os.path.basename(held)}.*not an image"):
        load_folder(folder, split="train", eval_fraction=0.1, channels=1)


def test_dataset_check_lists_every_bad_file_on_one_line(tmp_path):
    folder = _folder(tmp_path)
    for name in ("im03.png", "im07.png"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_folder(folder, split="train", eval_fraction=0.1)
    message = str(info.value)
    assert "2 bad file(s)" in message and "im03.png" in message and "im07.png" in message and "\n" not in message


def test_train_py_reports_a_bad_held_out_file_as_one_error_line(tmp_path):
    """Through the training entry (in-process): the error comes before any checkpoint is written."""
    import diffjax as dj
    from configs.ddpm_digits import get_config

    os.makedirs(tmp_path / "data")
    folder = _folder(tmp_path / "data")
    held = load_folder(folder, split="test", eval_fraction=0.1).files[0]
    (tmp_path / "data" / os.path.basename(held)).write_bytes(b"GIF89a-not-really")
    config = get_config("smoke")
    config.data.name, config.data.data_dir, config.data.image_size = "folder", folder, 8
    config.data.channels = 1  # as the model's: no file is opened to guess the channels
    workdir = tmp_path / "run"
    with pytest.raises(ValueError, match=os.path.basename(held)):
        dj.train(config, str(workdir))
    assert not (workdir / "checkpoints").exists()
