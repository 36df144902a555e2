"""Users' own images: every PNG/JPEG under a folder, optionally with label maps.

``load_dataset("folder", data_dir=DIR, image_size=S, channels=C)`` reads every
``.png``/``.jpg``/``.jpeg`` file under ``DIR`` (recursively, in sorted order), decodes
it with Pillow (never anything else: no pickles, no NumPy object arrays) when a batch
needs it, on a pool of decoding threads (:mod:`diffjax.data.streaming`): host memory does
not grow with the number of files. Batches are the finite-dataset batches of
:class:`~diffjax.data.pipeline.ArrayDataset`: a pure function of the step, sharded per
host (each host decodes only its rows).

**Bad files**: a folder of up to ``CHECK_AT_LOAD_LIMIT`` (512) images has every header
read when it is loaded (and its files decoded when there are at most ``VALIDATE_LIMIT``),
so a broken file is named before training starts. A larger folder is only listed when it
is loaded, so the time to the first step does not grow with it: its headers are read by
a thread beside training (:mod:`diffjax.data.file_check`), and the first row read after
that check finds a bad file raises one error naming every bad file; a batch that reads a
broken file names it too. With ``channels=0`` a large folder is read as grey when its
first ``CHANNEL_PROBE`` (64) images are, and the background check refuses a colour image
found later (naming it and ``data.channels``).

**Labelled folders** (``num_classes > 0``): each image ``name.png`` (or ``.jpg``) has a
label map ``name_label.png`` beside it: one 8-bit channel of class ids in
``[0, num_classes)``, with 255 meaning "ignore this pixel". Batches then carry a
``"label_map"`` entry besides ``"image"``. With ``num_classes == 0`` label files are
skipped, so an unconditional model can train on the images of a labelled folder.

**Geometry**: with ``image_size=S`` each image is scaled so that its shorter side is
``S`` (Pillow's antialiased bicubic filter; label maps use nearest neighbour, so class
ids stay class ids) and the centre ``S x S`` square is kept (``crop="random"``: a square
at a seeded random position, a pure function of the seed and the row's place in the
run, on the ``train`` split of an unlabelled folder). With ``image_size=None``
every file must already have the same size.

**Held-out share**: ``eval_fraction`` of the files (at least one) form the ``test``
split, the rest the ``train`` split. Which files are held out depends only on their
paths relative to ``DIR`` (the files with the smallest SHA-256 of that path), not on
the seed or on the order of listing, so the share stays fixed across runs and hosts and
mostly unchanged when files are added. With ``eval_fraction=0`` both splits are the
whole folder.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from PIL import Image

from diffjax import image_io

from diffjax.data.pipeline import EVAL_STREAM, ArrayDataset, check_nonneg_int, to_unit_range
from diffjax.data.streaming import CROPS, LazyImages, scale_and_crop

__all__ = [
    "FolderDataset",
    "load_folder",
    "list_image_files",
    "read_image",
    "read_label_map",
    "IGNORE_LABEL",
    "LABEL_SUFFIX",
    "IMAGE_EXTENSIONS",
    "DEFAULT_EVAL_FRACTION",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LABEL_SUFFIX = "_label"
IGNORE_LABEL = 255
DEFAULT_EVAL_FRACTION = 0.1
# The other split is decoded in full before training when it has at most this many files.
_FULL_CHECK_LIMIT = 512
#: Folders with at most this many files are decoded once at load time to name a broken file early.
VALIDATE_LIMIT = 256
#: Folders of at most this many images are checked (every header) before the first step; larger
#: ones start at once and are checked on a thread beside training (:mod:`diffjax.data.file_check`).
CHECK_AT_LOAD_LIMIT = 512
#: Files of a large folder whose header decides ``channels=0`` at load (grey if all of them are).
CHANNEL_PROBE = 64
#: Random stream of the random crops (training batches use 0, evaluation images 1).
CROP_STREAM = 2
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _is_label_file(path: str) -> bool:
    stem, ext = os.path.splitext(os.path.basename(path))
    return ext.lower() == ".png" and stem.endswith(LABEL_SUFFIX)


def list_image_files(data_dir: str) -> tuple[list[str], list[str]]:
    """Image files and label files under ``data_dir``, each list sorted.

    Args:
      data_dir: the folder, searched recursively.

    Returns:
      ``(images, labels)``: paths of ``.png``/``.jpg``/``.jpeg`` files (any case) that
      are not label maps, and paths of ``*_label.png`` files.

    Raises:
      ValueError: when ``data_dir`` is empty or not a directory.
    """
    if not isinstance(data_dir, str) or not data_dir:
        raise ValueError(
            "the folder dataset needs a directory: pass data_dir=DIR "
            f"(--config.data.data_dir=DIR), got {data_dir!r}"
        )
    if not os.path.isdir(data_dir):
        raise ValueError(f"folder dataset: {data_dir!r} is not a directory")
    images, labels = [], []
    for root, dirs, files in os.walk(data_dir):
        dirs.sort()
        for name in sorted(files):
            if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            path = os.path.join(root, name)
            (labels if _is_label_file(path) else images).append(path)
    return images, labels


# Decoding is diffjax.image_io's (the one reader): upright, 16-bit scaled, bombs refused.
_open = image_io.open_image
_to_8bit = image_io.to_8bit


def _fit(img: Image.Image, size: int | None, resample) -> Image.Image:
    """Scale the shorter side to ``size`` and keep the centre square (no-op for ``None``)."""
    if size is None:
        return img
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return img.crop((left, top, left + size, top + size))


def read_image(path: str, channels: int, image_size: int | None = None) -> np.ndarray:
    """One image file as uint8 ``(H, W, channels)``.

    Args:
      path: a PNG or JPEG file.
      channels: 3 (RGB; grey files are repeated) or 1 (grey; colour files by ITU-R 601-2
        luma). Transparency is dropped.
      image_size: scale the shorter side to this and keep the centre square; ``None``
        keeps the file's size.

    Returns:
      The image.

    Raises:
      ValueError: naming the file when Pillow cannot decode it.
    """
    img = _to_8bit(_open(path))
    img = img.convert("RGB" if channels == 3 else "L")
    arr = np.asarray(_fit(img, image_size, Image.Resampling.BICUBIC), dtype=np.uint8)
    return arr if channels == 3 else arr[..., None]


def read_label_map(path: str, num_classes: int, image_size: int | None = None, expected_size=None) -> np.ndarray:
    """One label map ``name_label.png`` as uint8 ``(H, W)`` of class ids (255 = ignore).

    Args:
      path: the label file: 8-bit, one channel (grey ``L`` or palette ``P`` mode, whose
        pixel values are the indices).
      num_classes: ids must lie in ``[0, num_classes)`` or equal 255.
      image_size: as in :func:`read_image` (resampled with nearest neighbour).
      expected_size: ``(width, height)`` of the image file it labels, checked before
        resizing; ``None`` skips the check.

    Returns:
      The label map.

    Raises:
      ValueError: naming the file when it is unreadable, not 8-bit single-channel, of a
        different size than its image, or holds an id out of range.
    """
    img = _open(path)
    if img.mode not in ("L", "P"):
        raise ValueError(
            f"{path}: a label map must be an 8-bit single-channel PNG (mode L or P) of class ids, "
            f"got mode {img.mode!r}"
        )
    if expected_size is not None and img.size != tuple(expected_size):
        raise ValueError(
            f"{path}: label map is {img.size[0]}x{img.size[1]} (WxH) but its image is "
            f"{expected_size[0]}x{expected_size[1]}; they must have the same size"
        )
    labels = np.asarray(img, dtype=np.uint8)
    bad = (labels >= num_classes) & (labels != IGNORE_LABEL)
    if bad.any():
        ids = sorted(int(v) for v in np.unique(labels[bad]))
        raise ValueError(
            f"{path}: class ids {ids[:10]} out of range ({int(bad.sum())} pixels); with "
            f"num_classes={num_classes} (config.data.num_classes) ids must be in "
            f"[0, {num_classes - 1}] or {IGNORE_LABEL} (ignore)"
        )
    fitted = _fit(Image.fromarray(labels, mode="L"), image_size, Image.Resampling.NEAREST)
    return np.asarray(fitted, dtype=np.uint8)


def _label_path(image_path: str) -> str:
    return os.path.splitext(image_path)[0] + LABEL_SUFFIX + ".png"


def _held_out(relative_paths: list[str], eval_fraction: float) -> np.ndarray:
    """Boolean mask of the held-out files: the ``k`` smallest SHA-256 of the relative paths."""
    n = len(relative_paths)
    if eval_fraction == 0:
        return np.zeros(n, bool)
    k = max(1, int(round(eval_fraction * n)))
    digests = [hashlib.sha256(p.replace(os.sep, "/").encode()).hexdigest() for p in relative_paths]
    order = np.argsort(np.asarray(digests), kind="stable")
    mask = np.zeros(n, bool)
    mask[order[:k]] = True
    return mask


class FolderDataset(ArrayDataset):
    """Images (and label maps) of a folder, decoded when batches need them.

    Build it with :func:`load_folder` (or ``load_dataset("folder", ...)``).

    Attributes (besides :class:`~diffjax.data.pipeline.Dataset`'s):
      data_dir: the folder.
      files: image paths of this split, in storage order.
      label_classes: classes of the label maps (0 when unlabelled).
      labelled: whether batches carry ``"label_map"``.
    """

    def __init__(self, name, split, data_dir, files, images, label_maps, label_classes, seed=0,
                 random_crop=None, file_check=None):
        super().__init__(name, split, images, None, num_classes=0, seed=seed)
        self.data_dir = data_dir
        self.files = list(files)
        self.label_classes = int(label_classes)
        self.labelled = label_maps is not None
        self._label_maps = label_maps
        # read(i, rng) -> a random square of file i (crop="random"), else None.
        self._random_crop = random_crop
        #: A large folder's :class:`~diffjax.data.file_check.BackgroundCheck` (``None``: checked at load).
        self.file_check = file_check

    def _rows(self, step, global_batch_size, rows, seed):
        index = self._indices(step, global_batch_size, rows, seed)
        if self._random_crop is None:
            return self._rows_at(index)
        # The crop's position is drawn from the row's place in the run, not from the file: a pure
        # function of (seed, step, row) that differs between epochs and is the same on any host.
        self._raise_if_bad_files()
        positions = step * global_batch_size + rows
        read = self._random_crop
        images = self._images.rows(np.arange(len(index)), lambda k: read(
            int(index[k]), np.random.default_rng([CROP_STREAM, self.seed, seed, int(positions[k])])))
        return to_unit_range(images), self._labels[index]

    def batch(self, step, global_batch_size, *, seed=0, process_index=0, process_count=1):
        """As :meth:`Dataset.batch`; labelled folders add ``"label_map"``: int32 ``(L, H, W)``."""
        return super().batch(step, global_batch_size, seed=seed, process_index=process_index,
                             process_count=process_count)

    def _batch_of_rows(self, step, global_batch_size, rows, seed):
        if not self.labelled:
            return super()._batch_of_rows(step, global_batch_size, rows, seed)
        index = self._indices(step, global_batch_size, rows, seed)
        images, labels = self._rows_at(index)
        return {"image": images, "label": labels, "label_map": self._label_maps[index].astype(np.int32)}

    def _rows_at(self, index):
        self._raise_if_bad_files()
        return to_unit_range(self._images[index]), self._labels[index]

    def _raise_if_bad_files(self) -> None:
        """Stop at the next row once the background check of a large folder has found a bad file."""
        if self.file_check is not None:
            self.file_check.raise_if_failed()

    def eval_images(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` images of this split in a seeded order, float32 ``(n, H, W, C)`` in [-1, 1].

        A folder may hold fewer images than an evaluation asks for (the end-of-training
        evaluation takes ``config.eval.num_samples``); the seeded order then repeats, so
        statistics rest on ``num_examples`` distinct images.

        Args:
          n: number of images (>= 1).
          seed: selects the order (>= 0).

        Returns:
          The images.
        """
        n = check_nonneg_int("n", n, 1)
        seed = check_nonneg_int("seed", seed)
        perm = self._permutation(EVAL_STREAM, seed, 0)
        index = perm[np.arange(n) % self.num_examples]
        return self._rows_at(index)[0]

    def label_maps(self) -> np.ndarray:
        """All label maps of the split, uint8 ``(N, H, W)`` in storage order (255 = ignore).

        Raises:
          ValueError: when the folder was loaded without labels (``num_classes == 0``).
        """
        if not self.labelled:
            raise ValueError(
                f"folder {self.data_dir!r} was loaded without labels; pass num_classes > 0 "
                "(config.data.num_classes) to read name_label.png files"
            )
        view = self._label_maps.view()
        view.flags.writeable = False
        return view


def load_folder(
    data_dir: str,
    split: str = "train",
    image_size: int | None = None,
    seed: int = 0,
    channels: int = 0,
    num_classes: int = 0,
    eval_fraction: float = DEFAULT_EVAL_FRACTION,
    crop: str = "center",
) -> FolderDataset:
    """The images under ``data_dir`` as a dataset (see the module docstring).

    Args:
      data_dir: the folder (searched recursively).
      split: ``"train"`` (files not held out) or ``"test"`` (the held-out share).
      image_size: output side ``S`` (shorter side scaled to ``S``, centre square kept);
        ``None`` keeps the files' size, which must then be the same for all.
      seed: base seed of the dataset's shuffles.
      channels: 3 (RGB), 1 (grey), or 0: grey if every file is grey, else RGB.
      num_classes: classes of the ``name_label.png`` maps; 0 ignores label files.
      eval_fraction: share of files held out as the ``test`` split, in ``[0, 1)``.
      crop: ``"center"`` or ``"random"`` (needs ``image_size``; the ``train`` split of an
        unlabelled folder takes random squares, other splits the centre).

    Returns:
      A :class:`FolderDataset`.

    Raises:
      ValueError: on a bad argument; an empty folder; and, naming the file, an unreadable
        image, mixed sizes without ``image_size``, and for labelled folders an image
        without its label map, a label map without its image, a label map of another
        size than its image, or a class id out of range.
    """
    if split not in ("train", "test"):
        raise ValueError(f"folder has splits 'train' and 'test' (held out), got split={split!r}")
    if isinstance(channels, bool) or channels not in (0, 1, 3):
        raise ValueError(f"channels must be 0 (as the files), 1 (grey) or 3 (RGB), got {channels!r}")
    num_classes = check_nonneg_int("num_classes", num_classes)
    if num_classes > IGNORE_LABEL:
        raise ValueError(f"num_classes must be <= {IGNORE_LABEL} (8-bit ids, 255 = ignore), got {num_classes}")
    if isinstance(eval_fraction, bool) or not isinstance(eval_fraction, (int, float)) or not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be a number in [0, 1), got {eval_fraction!r}")
    if image_size is not None:
        image_size = check_nonneg_int("image_size", image_size, 1)
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {list(CROPS)}, got {crop!r}")
    if crop == "random" and (image_size is None or num_classes):
        raise ValueError("crop='random' (config.data.crop) needs image_size and an unlabelled folder "
                         f"(num_classes=0); got image_size={image_size}, num_classes={num_classes}")

    image_files, label_files = list_image_files(data_dir)
    if not image_files:
        what = f" (only label maps: {label_files[0]}, ...)" if label_files else ""
        raise ValueError(
            f"folder dataset: no PNG/JPEG images under {data_dir!r}{what}; expected files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    if num_classes:
        expected, listed = {_label_path(p) for p in image_files}, set(label_files)
        for path in image_files:
            if _label_path(path) not in listed:  # the listing, not a stat per file
                raise ValueError(
                    f"{path}: image without its label map {os.path.basename(_label_path(path))!r}; "
                    f"a labelled folder (num_classes={num_classes}) needs name{LABEL_SUFFIX}.png beside every image"
                )
        for path in label_files:
            if path not in expected:
                raise ValueError(
                    f"{path}: label map without its image (expected "
                    f"{path[: -len(LABEL_SUFFIX + '.png')]}.png or .jpg beside it)"
                )

    relative = [os.path.relpath(p, data_dir) for p in image_files]
    held = _held_out(relative, float(eval_fraction))
    if held.all():
        raise ValueError(
            f"folder {data_dir!r} has {len(image_files)} image(s): too few to hold out "
            f"eval_fraction={eval_fraction} and still train; add images or set eval_fraction=0 "
            "(--config.data.eval_fraction=0: evaluation then uses the training images)"
        )
    if held.any():
        keep = held if split == "test" else ~held
    else:
        keep = np.ones(len(image_files), bool)
    small = len(image_files) <= CHECK_AT_LOAD_LIMIT
    if small:  # every header now: a bad file is named before the first step
        _check_all_files(data_dir, image_files, keep, num_classes)

    guessed_grey = False
    if channels == 0:
        probe = image_files if small else image_files[:CHANNEL_PROBE]
        channels = 1 if all(_open_mode(p) in _GREY_MODES for p in probe) else 3
        guessed_grey = channels == 1 and not small
    files = [p for p, k in zip(image_files, keep) if k]
    if image_size is None:
        height, width = _open_size(files[0])[::-1]
    else:
        height = width = image_size
    file_check = None if small else _check_in_background(data_dir, image_files, keep, split, num_classes,
                                                         guessed_grey, None if image_size else files[0])

    def read(i: int) -> np.ndarray:
        image = read_image(files[i], channels, image_size)
        if image.shape[:2] != (height, width):
            raise ValueError(
                f"{files[i]}: size {image.shape[1]}x{image.shape[0]} differs from {files[0]} "
                f"({width}x{height}); set image_size (--config.data.image_size=S) to resize and centre-crop "
                "every image"
            )
        return image

    def read_labels(i: int) -> np.ndarray:
        return read_label_map(_label_path(files[i]), num_classes, image_size, expected_size=_open_size(files[i]))

    def read_random_square(i: int, rng: np.random.Generator) -> np.ndarray:
        return scale_and_crop(read_image(files[i], channels, None), image_size, rng)

    images = LazyImages(read, len(files), (height, width, channels))
    label_maps = LazyImages(read_labels, len(files), (height, width)) if num_classes else None
    if len(files) <= VALIDATE_LIMIT:  # small folders: name a broken file now, not mid-run
        for i in range(len(files)):
            if image_size is None:
                _check_same_size(files[i], files[0])
            read(i)
            if num_classes:
                read_labels(i)
    return FolderDataset(
        "folder",
        split,
        data_dir,
        files,
        images,
        label_maps,
        num_classes,
        seed=seed,
        random_crop=read_random_square if crop == "random" and split == "train" else None,
        file_check=file_check,
    )


def _check_all_files(data_dir: str, image_files: list[str], keep: np.ndarray, num_classes: int) -> None:
    """Every file of both splits readable before the first step: headers of all, and a full
    decode of the other split's files when they are few (this split's are decoded below)."""
    labels = [_label_path(p) for p in image_files] if num_classes else []
    others = [p for p, k in zip(image_files, keep) if not k]
    others += [_label_path(p) for p in others] if num_classes else []
    image_io.check_files(image_files + labels, decode=others if len(others) <= _FULL_CHECK_LIMIT else (),
                         what=f"folder dataset {data_dir!r}")


def _check_in_background(data_dir, image_files, keep, split, num_classes, guessed_grey, first):
    """A large folder's :func:`_check_all_files` on a thread (the train split checks both splits' files,
    the test split its own), plus what load time took on trust: every image grey when ``channels=0``
    was decided from the first :data:`CHANNEL_PROBE` files, and every image of ``first``'s size when
    ``image_size`` is unset (``first`` not ``None``)."""
    from diffjax.data.file_check import BackgroundCheck

    mine = [p for p, k in zip(image_files, keep) if k]
    others = [p for p, k in zip(image_files, keep) if not k] if split == "train" else []
    images = mine + others
    labels = [_label_path(p) for p in images] if num_classes else []
    decode = others + ([_label_path(p) for p in others] if num_classes else [])
    first_size = _open_size(first) if first is not None else None
    mine_set, label_set = set(mine), set(labels)

    def header_test(path, mode, size):
        if guessed_grey and path not in label_set and mode not in _GREY_MODES:
            return (f"{path}: a colour image in a folder read as grey (its first {CHANNEL_PROBE} images are grey); "
                    "set --config.data.channels=3 (or 1 to read every image as grey)")
        if first_size is not None and path in mine_set and size != first_size:
            return _size_mismatch(path, size, first, first_size)
        return None

    return BackgroundCheck(images + labels, decode=decode if len(others) <= _FULL_CHECK_LIMIT else (),
                           header_test=header_test, what=f"folder dataset {data_dir!r}")


def _check_same_size(path: str, first: str) -> None:
    """Refuse ``path`` when its header size differs from ``first``'s (image_size unset)."""
    size, first_size = _open_size(path), _open_size(first)
    if size != first_size:
        raise ValueError(_size_mismatch(path, size, first, first_size))


def _size_mismatch(path: str, size, first: str, first_size) -> str:
    """The one message for an image whose size differs from the folder's first (image_size unset)."""
    return (f"{path}: size {size[0]}x{size[1]} differs from {first} ({first_size[0]}x{first_size[1]}); set "
            "image_size (--config.data.image_size=S) to resize and centre-crop every image")


def _open_mode(path: str) -> str:
    return _header(path)[0]


def _open_size(path: str) -> tuple[int, int]:
    return _header(path)[1]


def _header(path: str) -> tuple[str, tuple[int, int]]:
    """Mode and upright size from the file header, without decoding the pixels."""
    _, mode, size = image_io.read_header(path)
    return mode, size
