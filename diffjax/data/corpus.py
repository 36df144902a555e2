"""A photo corpus for restoration: multi-scale crops, training and evaluation split by source.

Every photo comes from a *source*: a Python package or a Debian package installed
on the machine (nothing is downloaded). Sources are either training sources or
held-out evaluation sources, never both, so evaluation crops come from photos
taken by other people, of other scenes, with other cameras than anything a
training run saw:

====================  =========  ==============================================  ===========
source                split      photos                                          always here
====================  =========  ==============================================  ===========
``scikit-image``      train      bundled photos (astronaut, coffee, chelsea, ...)  yes
``matplotlib``        train      ``grace_hopper.jpg``                              yes
``lomiri-wallpapers`` train      14 photographs (Debian ``lomiri-wallpapers``)     optional
``scikit-learn``      test       ``china.jpg``, ``flower.jpg``                     yes
``jigzo-data``        test       11 puzzle photographs (Debian ``jigzo-data``)     optional
====================  =========  ==============================================  ===========

The ``lomiri-wallpapers`` photos are read from ``$DIFFJAX_BACKGROUNDS_DIR`` when that
variable is set (:func:`backgrounds_dir`). A source whose package is not installed is skipped, so the corpus works (with
fewer photos) on any machine that has the Python test dependencies; which
sources were found is in ``PhotoCorpus.sources``.

Crops are multi-scale. Row ``r`` of global batch ``step`` draws, from a numpy
generator seeded by ``(dataset seed, batch seed, step, r)``: a photo (with
probability proportional to its weight: pure texture photos weigh
``TEXTURE_WEIGHT`` so they cannot dominate), a downscale factor ``s``
log-uniform in ``[1, min(MAX_DOWNSCALE, shortest side / S)]``, a square window
of side ``s S`` at a uniform position, and (``train`` only) a horizontal flip
with probability 1/2. The window is resized to ``S x S`` with Pillow's
antialiased bicubic filter, so a crop shows the photo as it looks at that
scale: at ``s = 1`` its fine texture, at large ``s`` smooth regions and object
edges.

Photos are decoded once per process, shrunk so that their shortest side is at
most ``MAX_SIDE`` pixels (JPEGs are decoded at reduced size directly).

:func:`gradient_energy` and :func:`texture_labels` label images *smooth* or
*textured* so that benchmarks report both subsets separately.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import io
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from diffjax.data.photos import PhotoCrops
from diffjax.data.pipeline import TRAIN_STREAM, check_nonneg_int

__all__ = [
    "PhotoCorpus",
    "Photo",
    "load_photos",
    "backgrounds_dir",
    "gradient_energy",
    "texture_labels",
    "TRAIN_SOURCES",
    "EVAL_SOURCES",
    "TEXTURE_THRESHOLD",
]

TRAIN_SOURCES = ("scikit-image", "matplotlib", "lomiri-wallpapers")
EVAL_SOURCES = ("scikit-learn", "jigzo-data")
MAX_SIDE = 512
MAX_DOWNSCALE = 8.0
TEXTURE_WEIGHT = 0.2
TEXTURE_THRESHOLD = 0.08
"""Crops whose :func:`gradient_energy` exceeds this are *textured*, the rest *smooth*."""

BACKGROUNDS = "/usr/share/backgrounds"
BACKGROUNDS_ENV = "DIFFJAX_BACKGROUNDS_DIR"
"""Environment variable naming another folder of the ``lomiri-wallpapers`` photos (see :func:`backgrounds_dir`)."""
JIGZO = "/usr/share/games/jigzo/puzzles/00_default"


@dataclass(frozen=True)
class Photo:
    """One photo of the corpus.

    Attributes:
      name: short name, unique in its source.
      source: the source it comes from (a name in ``TRAIN_SOURCES`` or ``EVAL_SOURCES``).
      licence: its licence (SPDX-like identifier).
      weight: relative probability of being cropped within the split.
      image: ``PIL.Image`` in RGB mode, shortest side at most ``MAX_SIDE``.
    """

    name: str
    source: str
    licence: str
    weight: float
    image: Image.Image


def _shrunk(image: Image.Image) -> Image.Image:
    """``image`` in RGB with its shortest side at most ``MAX_SIDE`` (antialiased bicubic)."""
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        flat = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(flat, image)
    image = image.convert("RGB")
    shortest = min(image.size)
    if shortest > MAX_SIDE:
        size = (round(image.size[0] * MAX_SIDE / shortest), round(image.size[1] * MAX_SIDE / shortest))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return image


def _open_file(path: str) -> Image.Image:
    with Image.open(path) as image:
        image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # JPEG: decode at a reduced size (no-op otherwise)
        return _shrunk(image)


# -- sources ---------------------------------------------------------------------
SKIMAGE_PHOTOS = {  # name -> (loader name in skimage.data, weight)
    "astronaut": 1.0, "coffee": 1.0, "chelsea": 1.0, "rocket": 1.0, "hubble_deep_field": 1.0,
    "immunohistochemistry": 1.0, "camera": 1.0, "motorcycle": 1.0,
    "brick": TEXTURE_WEIGHT, "grass": TEXTURE_WEIGHT, "gravel": TEXTURE_WEIGHT,
}
LOMIRI_PHOTOS = {  # file under /usr/share/backgrounds -> licence (from the package's copyright file)
    "aitzgorri_by_Aitzol_Berasategi.jpg": "CC-BY-4.0",
    "Bridge_by_Sander_Klootwijk.jpg": "CC-BY-SA-4.0",
    "Dragonfly_by_Bolly.jpg": "CC-BY-SA-4.0",
    "free_by_Peter_Nerlich.jpg": "CC-BY-SA-4.0",
    "friends_by_Aitzol_Berasategi.jpg": "CC-BY-4.0",
    "greentock_by_Peter_Nerlich.jpg": "CC-BY-SA-4.0",
    "picosdeeuropa_by_Aitzol_Berasategi.jpg": "CC-BY-4.0",
    "Picture_0B_by_freespace.jpg": "CC-BY-4.0",
    "Picture_1A_by_freespace.jpg": "CC-BY-4.0",
    "seeding_by_Clements_Engelhardt.jpg": "CC0-1.0",
    "sunset_by_Aitzol_Berasategi.jpg": "CC-BY-4.0",
    "Wine_by_Jakkub_Mede.jpg": "CC-BY-4.0",
    "Infinite-Sea_by_Aury88.jpg": "CC-BY-SA-3.0",
    "Kleiber_by_Lukas_Baubkus.jpg": "CC-BY-SA-3.0",
}
JIGZO_PHOTOS = {  # puzzle -> licence; penguin-3x2 (CC-BY-NC-SA-1.0, non-commercial) is left out
    "bike-3x4": "GPL-2+", "bird-2x3": "GPL-2+", "blackberry-3x3": "GPL-2+", "castle-6x3": "GPL-2+",
    "clouds-4x4": "GPL-2+", "gorilla2-3x3": "GPL-2+", "heli-4x3": "GPL-2", "horse-4x3": "GPL-2+",
    "tobogan-4x3": "GPL-2+", "train-2x2": "GPL-2+", "windmill-4x4": "GPL-2+",
}
JIGZO_FRAME = 6  # the puzzle previews carry a grey frame this many pixels wide


def _skimage_photos() -> list[Photo]:
    import skimage.data

    photos = []
    for name, weight in SKIMAGE_PHOTOS.items():
        array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
        array = np.asarray(array)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        photos.append(Photo(name, "scikit-image", "BSD-3-Clause (scikit-image data)", weight,
                            _shrunk(Image.fromarray(np.ascontiguousarray(array[..., :3]).astype(np.uint8)))))
    return photos


def _package_dir(package: str) -> str | None:
    """The folder of an installed Python package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(package)
    return None if spec is None or not spec.submodule_search_locations else list(spec.submodule_search_locations)[0]


def _matplotlib_photos() -> list[Photo]:
    folder = _package_dir("matplotlib")
    if folder is None:
        return []
    path = os.path.join(folder, "mpl-data", "sample_data", "grace_hopper.jpg")
    return [Photo("grace_hopper", "matplotlib", "matplotlib sample data", 1.0, _open_file(path))] if os.path.exists(path) else []


def _sklearn_photos() -> list[Photo]:
    folder = os.path.join(_package_dir("sklearn") or "", "datasets", "images")
    return [Photo(name, "scikit-learn", "CC-BY-2.0 (scikit-learn sample images)", 1.0,
                  _open_file(os.path.join(folder, f"{name}.jpg")))
            for name in ("china", "flower") if os.path.exists(os.path.join(folder, f"{name}.jpg"))]


def backgrounds_dir() -> str:
    """The folder the ``lomiri-wallpapers`` photos are read from.

    ``$DIFFJAX_BACKGROUNDS_DIR`` when set and non-empty (e.g. the ``usr/share/backgrounds``
    folder of the packages unpacked with ``dpkg -x``, for a machine where they cannot be
    installed system-wide), else ``/usr/share/backgrounds``. Photos are decoded once per
    process, so the variable must be set before the corpus is first read.

    Returns:
      The folder's path. Listed photos missing from it are skipped, as when the
      package is not installed.

    Raises:
      ValueError: when the variable names something that is not a folder (a typo would
        otherwise silently train without these photos).
    """
    override = os.environ.get(BACKGROUNDS_ENV, "")
    if not override:
        return BACKGROUNDS
    if not os.path.isdir(override):
        raise ValueError(f"{BACKGROUNDS_ENV}={override!r} is not a folder; expected a folder holding the "
                         f"lomiri-wallpapers photos (e.g. usr/share/backgrounds of the unpacked packages)")
    return override


def _lomiri_photos() -> list[Photo]:
    folder = backgrounds_dir()
    return [Photo(os.path.splitext(f)[0], "lomiri-wallpapers", licence, 1.0, _open_file(os.path.join(folder, f)))
            for f, licence in LOMIRI_PHOTOS.items() if os.path.exists(os.path.join(folder, f))]


def _jigzo_preview(path: str) -> Image.Image:
    """The preview JPEG inside a jigzo ``.pzl`` puzzle file (its first JPEG stream), frame removed."""
    with open(path, "rb") as f:
        data = f.read()
    start = data.find(b"\xff\xd8\xff")
    if start < 0:
        raise ValueError(f"{path}: no JPEG stream in the puzzle file")
    with Image.open(io.BytesIO(data[start:])) as image:
        image = image.convert("RGB")
        w, h = image.size
        return _shrunk(image.crop((JIGZO_FRAME, JIGZO_FRAME, w - JIGZO_FRAME, h - JIGZO_FRAME)))


def _jigzo_photos() -> list[Photo]:
    paths = {os.path.basename(p)[: -len(".pzl")]: p for p in glob.glob(os.path.join(JIGZO, "*.pzl"))}
    return [Photo(name, "jigzo-data", licence, 1.0, _jigzo_preview(paths[name]))
            for name, licence in JIGZO_PHOTOS.items() if name in paths]


LOADERS = {
    "scikit-image": _skimage_photos,
    "matplotlib": _matplotlib_photos,
    "lomiri-wallpapers": _lomiri_photos,
    "scikit-learn": _sklearn_photos,
    "jigzo-data": _jigzo_photos,
}


@functools.lru_cache(maxsize=None)
def _load_source(source: str) -> tuple[Photo, ...]:
    return tuple(LOADERS[source]())


def load_photos(sources) -> list[Photo]:
    """The photos of ``sources`` that are installed, in a fixed order (decoded once per process).

    Args:
      sources: names from ``TRAIN_SOURCES`` and ``EVAL_SOURCES``.

    Returns:
      A list of :class:`Photo`; empty for a source whose package is absent.

    Raises:
      ValueError: on an unknown source name.
    """
    photos = []
    for source in sources:
        if source not in LOADERS:
            raise ValueError(f"unknown photo source {source!r}; expected one of {tuple(LOADERS)}")
        photos.extend(_load_source(source))
    return photos


# -- smooth / textured ---------------------------------------------------------------
def gradient_energy(images) -> np.ndarray:
    """Root-mean-square luma gradient of each image, in [0, 1] intensity units per pixel.

    The luma is BT.601 (``diffjax.degradations.LUMA_WEIGHTS``) of ``[-1, 1]`` RGB
    images (grey images are used as they are); the gradient is the forward difference
    along rows and columns.

    Args:
      images: ``(N, H, W, C)`` array in ``[-1, 1]``, ``C`` 1 or 3, ``H, W >= 2``.

    Returns:
      float64 ``(N,)``.

    Raises:
      ValueError: on another shape.
    """
    from diffjax.degradations import LUMA_WEIGHTS

    images = np.asarray(images, np.float64)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or min(images.shape[1:3]) < 2:
        raise ValueError(f"gradient_energy expects (N, H, W, 1 or 3) images with H, W >= 2, got {images.shape}")
    luma = images[..., 0] if images.shape[-1] == 1 else images @ np.asarray(LUMA_WEIGHTS)
    luma = (luma + 1.0) / 2.0
    dy = np.diff(luma, axis=1) ** 2
    dx = np.diff(luma, axis=2) ** 2
    return np.sqrt((dy.mean(axis=(1, 2)) + dx.mean(axis=(1, 2))) / 2.0)


def texture_labels(images, threshold: float = TEXTURE_THRESHOLD) -> np.ndarray:
    """True for *textured* images (``gradient_energy > threshold``), False for *smooth* ones.

    Args:
      images: ``(N, H, W, C)`` array in ``[-1, 1]``.
      threshold: the gradient energy separating the two subsets.

    Returns:
      bool ``(N,)``.
    """
    return gradient_energy(images) > threshold


# -- the dataset ---------------------------------------------------------------------
class PhotoCorpus(PhotoCrops):
    """Endless multi-scale ``S x S`` RGB crops of the corpus photos; ``num_examples`` is ``None``.

    Batches and ``eval_images`` are built as :class:`PhotoCrops` builds them (same
    streams, flips on ``train`` only), with this class's multi-scale ``_crop``.

    Args:
      split: ``"train"`` (``TRAIN_SOURCES``) or ``"test"`` (``EVAL_SOURCES``).
      image_size: crop side ``S`` (default 64), at most ``MAX_SIDE // 2``.
      seed: base seed (>= 0).
      sources: the sources of the split (default: all of the split's sources that are
        installed); every name must belong to the split.

    Raises:
      ValueError: on a bad split, size or source, or when no photo of the split is installed.
    """

    def __init__(self, split: str = "train", image_size: int | None = None, seed: int = 0, sources=None):
        allowed = {"train": TRAIN_SOURCES, "test": EVAL_SOURCES}
        if split not in allowed:
            raise ValueError(f"photo_corpus has splits 'train' and 'test', got split={split!r}")
        sources = allowed[split] if sources is None else tuple(sources)
        foreign = [s for s in sources if s not in allowed[split]]
        if foreign or not sources:
            raise ValueError(f"photo_corpus {split!r} sources must be a non-empty subset of {allowed[split]}, "
                             f"got {sources}")
        self.name, self.split = "photo_corpus", split
        self.seed = check_nonneg_int("seed", seed)
        size = 64 if image_size is None else check_nonneg_int("image_size", image_size, 1)
        self.photos = [p for p in load_photos(sources) if min(p.image.size) >= size]
        if size > MAX_SIDE // 2 or not self.photos:
            raise ValueError(f"photo_corpus: no {split!r} photo of {sources} is installed with both sides >= "
                             f"image_size={size} (image_size must be at most {MAX_SIDE // 2})")
        self.sources = tuple(sorted({p.source for p in self.photos}))
        weights = np.array([p.weight for p in self.photos])
        self._cumulative = np.cumsum(weights / weights.sum())
        self.image_shape = (size, size, 3)
        self.num_classes = 0
        self.num_examples = None
        self._flip = split == "train"

    def _crop(self, entropy: list[int], flip_allowed: bool) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng(entropy)
        which = min(int(np.searchsorted(self._cumulative, rng.random(), side="right")), len(self.photos) - 1)
        image = self.photos[which].image
        size = self.image_shape[0]
        max_scale = min(MAX_DOWNSCALE, min(image.size) / size)
        window = min(min(image.size), max(size, round(size * math.exp(rng.uniform(0.0, math.log(max_scale))))))
        left = int(rng.integers(image.size[0] - window + 1))
        top = int(rng.integers(image.size[1] - window + 1))
        crop = np.asarray(image.resize((size, size), Image.Resampling.BICUBIC,
                                       box=(left, top, left + window, top + window)))
        # Draw the flip bit even when unused, so the crop positions do not depend on it.
        if rng.random() < 0.5 and flip_allowed:
            crop = crop[:, ::-1]
        return crop, which

    def source_of_rows(self, step: int, global_batch_size: int, seed: int = 0) -> list[tuple[str, str]]:
        """``(source, photo name)`` of each row of global batch ``step`` (for checks)."""
        picks = [self._crop([TRAIN_STREAM, self.seed, seed, step, r], False)[1] for r in range(global_batch_size)]
        return [(self.photos[i].source, self.photos[i].name) for i in picks]
