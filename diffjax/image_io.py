"""The one image reader of every command and dataset.

Every file a user gives (folder datasets, ``sample.py --input`` of every task)
is decoded here, so every command treats the same file the same way:

* **Orientation**: the EXIF orientation tag is applied
  (``ImageOps.exif_transpose``), so a phone photo stored sideways comes back
  upright, with the size a viewer shows.
* **Bit depth**: 16-bit and 32-bit integer grey images (``I;16``, ``I``) are
  scaled by ``255 / 65535`` and float images (``F``) by ``255`` when their
  values lie in ``[0, 1]``; Pillow's own ``convert("L")`` clips them instead,
  which turns a 16-bit photo white.
* **Colour modes**: palette (``P``), ``CMYK``, ``YCbCr`` and ``RGBA`` become
  ``RGB``; ``LA`` and ``1`` become ``L`` (transparency is dropped).
* **Decompression bombs**: a header claiming more than
  ``Image.MAX_IMAGE_PIXELS`` pixels is refused before any pixel is decoded.

Every failure is a ``ValueError`` (:class:`diffjax.errors.UserError`) naming
the file, on one line.
"""

from __future__ import annotations

import contextlib
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from diffjax.errors import UserError

__all__ = ["open_image", "read_header", "read_pixels", "to_8bit", "check_files", "file_problems", "problems_message",
           "normalise_mode", "MAX_PIXELS"]

#: Largest image (width x height) any reader accepts: Pillow's own limit (about 89 Mpx).
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_WIDE = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_TO_RGB = ("RGBA", "RGBa", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")
_TO_L = ("LA", "La", "1")
# EXIF orientations that swap width and height.
_SWAPS = (5, 6, 7, 8)


def _refuse_bombs():
    """A context in which Pillow's bomb warning is an error too (it only warns below 2x the limit)."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    return ctx


def _fail(path: str, err: BaseException) -> UserError:
    if isinstance(err, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        # Pillow refuses in Image.open, before the size is ours to read; its message holds the count.
        found = re.search(r"\((\d+) pixels\)", str(err))
        claim = f"{found.group(1)} pixels" if found else "more pixels"
        return UserError(f"{path}: refused, its header claims {claim}, more than the limit of {MAX_PIXELS} "
                         "(a decompression bomb or a damaged file)")
    if isinstance(err, UnidentifiedImageError):
        return UserError(f"{path}: cannot be read as a PNG/JPEG image (not an image file)")
    if isinstance(err, FileNotFoundError):
        return UserError(f"{path}: cannot be read as a PNG/JPEG image (no such file)")
    detail = str(err).splitlines()[0] if str(err) else ""
    return UserError(f"{path}: cannot be read as a PNG/JPEG image ({type(err).__name__}: {detail})")


def _check_pixels(path: str, size: tuple[int, int]) -> None:
    if size[0] * size[1] > MAX_PIXELS:
        raise UserError(f"{path}: refused, its header claims {size[0]}x{size[1]} pixels, more than the limit "
                        f"of {MAX_PIXELS} (a decompression bomb or a damaged file)")
    if size[0] < 1 or size[1] < 1:
        raise UserError(f"{path}: an empty image ({size[0]}x{size[1]})")



@contextlib.contextmanager
def _opened(path: str):
    """``Image.open(path)`` with bombs refused and every decoding failure turned into one error naming ``path``."""
    ctx = _refuse_bombs()
    try:
        with Image.open(path) as img:
            _check_pixels(path, img.size)
            yield img
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise _fail(path, err) from None
    finally:
        ctx.__exit__(None, None, None)


def read_header(path: str) -> tuple[str, str, tuple[int, int]]:
    """Format, mode and upright ``(width, height)`` from the file's header (no pixel decoded).

    Raises:
      ValueError: naming the file, when it is not an image or claims too many pixels.
    """
    with _opened(path) as img:
        size = img.size
        if img.format == "JPEG" or "exif" in img.info:
            if img.getexif().get(0x0112) in _SWAPS:
                size = (size[1], size[0])
        return img.format, img.mode, size


def open_image(path: str) -> Image.Image:
    """Decode ``path`` fully, upright (EXIF applied), with its own mode.

    Returns:
      A loaded ``PIL.Image`` detached from the file.

    Raises:
      ValueError: naming the file, when it cannot be decoded (truncated, not an
        image) or claims more than :data:`MAX_PIXELS` pixels.
    """
    with _opened(path) as img:
        img.load()
        fmt = img.format
        upright = ImageOps.exif_transpose(img)
        out = upright if upright is not img else img.copy()
        out.format = fmt
        return out


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float grey images as 8-bit ``L``, scaled (not clipped); others unchanged."""
    if img.mode not in _WIDE:
        return img
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = float(arr.max(initial=0.0))
        scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / 65535.0)
    else:
        # I;16 PNGs come back as "I" or "I;16" depending on the Pillow version: both are 16-bit.
        scale = 255.0 / 65535.0
    return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), mode="L")


def normalise_mode(img: Image.Image) -> Image.Image:
    """8-bit ``L`` or ``RGB``: wide grey scaled, colour modes and transparency as the module says."""
    img = to_8bit(img)
    if img.mode in _TO_RGB:
        return img.convert("RGB")
    if img.mode in _TO_L:
        return img.convert("L")
    if img.mode not in ("L", "RGB"):
        return img.convert("RGB")
    return img


def read_pixels(path: str) -> np.ndarray:
    """One file as uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (colour), upright and 8-bit.

    Raises:
      ValueError: naming the file (see :func:`open_image`).
    """
    return np.asarray(normalise_mode(open_image(path)), dtype=np.uint8)


def check_files(paths, *, decode=(), what: str = "dataset") -> None:
    """Read the header of every file in ``paths`` and fully decode those in ``decode``.

    Used before training starts, so that a bad file anywhere in a dataset (the
    held-out share included) is found before the first step, not after.

    Args:
      paths: every file of the dataset.
      decode: files to decode fully (e.g. a small held-out share).
      what: how the error names the collection.

    Raises:
      ValueError: listing up to 10 bad files (and how many in all) on one line.
    """
    problems = file_problems(paths, decode=decode)
    if problems:
        raise UserError(problems_message(what, problems, "nothing was trained"))


def file_problems(paths, *, decode=(), header_test=None) -> list[str]:
    """One message per bad file: headers of ``paths`` read, ``decode`` fully decoded.

    Args:
      paths: files whose header is read.
      decode: files decoded fully (skipped when their header already failed).
      header_test: optional ``(path, mode, size) -> message or None``, a further check
        of each readable header.

    Returns:
      ``"path: what is wrong"`` strings, in the order the files were read.
    """
    problems, header_bad = [], set()
    for path in paths:
        try:
            _, mode, size = read_header(path)
        except ValueError as err:
            problems.append(str(err))
            header_bad.add(path)
            continue
        found = header_test(path, mode, size) if header_test is not None else None
        if found:
            problems.append(found)
    for path in decode:
        if path in header_bad:
            continue
        try:
            open_image(path)
        except ValueError as err:
            problems.append(str(err))
    return problems


def problems_message(what: str, problems: list[str], consequence: str) -> str:
    """``"{what}: N bad file(s), {consequence}: p1; p2; ..."``: up to 10 named, on one line."""
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    return f"{what}: {len(problems)} bad file(s), {consequence}: " + "; ".join(problems[:10]) + more

