"""Where commands write: checked before any work, written atomically.

* :func:`check_output_dir` runs before a command restores a model or reads its
  inputs: an ``--output`` that is an existing file, that cannot be created, or
  that is equal to, inside or around an input folder is refused at once, so a
  run never ends after all its sampling with nowhere to write, and never
  overwrites the images it was given.
* :func:`save_image` writes every output image under a temporary name in the
  same folder and renames it (``os.replace`` is atomic on POSIX file systems):
  a killed run leaves whole images and at most a hidden ``.*.tmp`` file,
  never half an image under the final name. A ``gs://`` / ``s3://`` path is
  uploaded as one object (:mod:`diffjax.workdir_io`).
* :func:`is_own_output` recognises the files a segmentation run writes
  (``name_label.png``, ``name_uncertainty.png``), so running it again on a
  folder that holds them does not segment its own outputs.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from diffjax import workdir_io
from diffjax.errors import UserError

__all__ = ["check_output_dir", "save_image", "write_named", "to_uint8", "is_own_output", "OWN_OUTPUT_SUFFIXES"]

#: Suffixes (before ``.png``) of the files ``sample.py`` writes for a segmentation run.
OWN_OUTPUT_SUFFIXES = ("_label", "_uncertainty")


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_output_dir(output: str, inputs=(), *, flag: str = "--output") -> str:
    """Refuse an output folder that cannot be written or that would touch an input.

    Nothing is created: the folder is made when the first image is written.

    Args:
      output: the folder the command will write into.
      inputs: folders (or files) it reads; ``None`` entries are ignored.
      flag: how the error names the output.

    Returns:
      ``output`` unchanged.

    Raises:
      UserError: ``output`` is an existing file, lies under a file, cannot be
        created (no write permission on its nearest existing parent), or is
        equal to, inside, or contains an input.
    """
    if not isinstance(output, str) or not output:
        raise UserError(f"{flag} must be a folder path, got {output!r}")
    if workdir_io.url_scheme(output):  # a bucket: written object by object, never onto a local input
        workdir_io.check_url(output)
        return output
    real = _real(output)
    for given in inputs:
        if given is None:
            continue
        other = _real(given)
        if real == other:
            raise UserError(f"{flag} {output!r} is the input folder {given!r}: outputs would overwrite the inputs; "
                            "choose another folder")
        if _within(real, other):
            raise UserError(f"{flag} {output!r} is inside the input folder {given!r}: a second run would read its "
                            "outputs as inputs; choose a folder outside it")
        if _within(other, real):
            raise UserError(f"{flag} {output!r} contains the input folder {given!r}: choose a folder beside it")
    if os.path.exists(real) and not os.path.isdir(real):
        raise UserError(f"{flag} {output!r} is an existing file; expected a folder (new or existing)")
    parent = real
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserError(f"{flag} {output!r} cannot be created: {parent!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {output!r} cannot be written: no write permission on {parent!r}")
    return output


def save_image(path: str, image) -> str:
    """Write ``image`` (a ``PIL.Image`` or uint8 ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` array) as PNG, atomically.

    The PNG is encoded in memory, then written by :func:`diffjax.workdir_io.write_bytes`:
    locally as ``.<name>.<pid>.tmp`` beside ``path``, renamed over it once complete
    (the folder is created if needed); on a bucket as one object.

    Returns:
      ``path``.
    """
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        image = Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    workdir_io.write_bytes(path, buffer.getvalue())
    return path


def is_own_output(name: str) -> bool:
    """Whether the file ``name`` is one a segmentation run writes (``*_label.png``, ``*_uncertainty.png``)."""
    stem, ext = os.path.splitext(os.path.basename(name))
    return ext.lower() == ".png" and stem.endswith(OWN_OUTPUT_SUFFIXES)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Map images in ``[-1, 1]`` to uint8 ``[0, 255]`` (values outside are clipped)."""
    images = np.asarray(images, np.float32)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_named(output: str, inputs, images) -> None:
    """Process 0 writes ``images[i]`` (``[-1, 1]``) as ``output/name_i`` for the ``(name_i, ...)`` pairs ``inputs``."""
    from diffjax import distributed

    if distributed.is_lead():
        workdir_io.makedirs(output)
        for (name, _), image in zip(inputs, images):
            save_image(os.path.join(output, name), to_uint8(image))
