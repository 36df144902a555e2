"""An endless stream of random square crops from scikit-image's bundled photographs.

Every photo ships inside the scikit-image wheel, so this dataset works offline. Grey
textures are repeated to three channels so that every crop is RGB.

Splits are disjoint *by source photo*: ``train`` crops only
``TRAIN_PHOTOS`` and ``test`` crops only ``TEST_PHOTOS`` (the cat photo ``chelsea``
and the ``gravel`` texture), so test crops never share a pixel with training crops.

Row ``r`` of global batch ``step`` is drawn from its own numpy generator seeded by
``(dataset seed, batch seed, step, r)``: which photo (uniform), the crop corner
(uniform), and, for ``train`` only, a horizontal flip with probability 1/2.
"""

from __future__ import annotations

import numpy as np

from diffjax.data.pipeline import EVAL_STREAM, TRAIN_STREAM, Dataset, check_nonneg_int, to_unit_range

__all__ = ["PhotoCrops", "TRAIN_PHOTOS", "TEST_PHOTOS", "DEFAULT_CROP_SIZE"]

TRAIN_PHOTOS = (
    "astronaut",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "brick",
    "grass",
)
TEST_PHOTOS = ("chelsea", "gravel")
DEFAULT_CROP_SIZE = 64


def _load_rgb(photo: str) -> np.ndarray:
    import skimage.data  # local: only this dataset needs scikit-image

    image = np.asarray(getattr(skimage.data, photo)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.shape[-1] != 3:
        raise ValueError(f"skimage.data.{photo}() gave {image.dtype} {image.shape}; expected uint8 RGB")
    return np.ascontiguousarray(image)


class PhotoCrops(Dataset):
    """Random ``S x S`` RGB crops of the bundled photos; ``num_examples`` is ``None``.

    Args:
      split: ``"train"`` or ``"test"``.
      image_size: crop side ``S`` (default 64); at most the shortest side of the split's
        photos (300 pixels for ``test``).
      seed: base seed (>= 0).
    """

    def __init__(self, split: str = "train", image_size: int | None = None, seed: int = 0):
        if split not in ("train", "test"):
            raise ValueError(f"photos has splits 'train' and 'test', got split={split!r}")
        self.name, self.split = "photos", split
        self.seed = check_nonneg_int("seed", seed)
        size = DEFAULT_CROP_SIZE if image_size is None else check_nonneg_int("image_size", image_size, 1)
        self.photo_names = TRAIN_PHOTOS if split == "train" else TEST_PHOTOS
        self._photos = [_load_rgb(p) for p in self.photo_names]
        shortest = min(min(p.shape[:2]) for p in self._photos)
        if size > shortest:
            raise ValueError(
                f"photos: crop size image_size={size} exceeds the shortest side ({shortest}) "
                f"of the {split!r} photos {self.photo_names}; use image_size <= {shortest}"
            )
        self.image_shape = (size, size, 3)
        self.num_classes = 0
        self.num_examples = None
        self._flip = split == "train"

    def _crop(self, entropy: list[int], flip_allowed: bool) -> tuple[np.ndarray, int]:
        rng = np.random.default_rng(entropy)
        which = int(rng.integers(len(self._photos)))
        photo = self._photos[which]
        size = self.image_shape[0]
        top = int(rng.integers(photo.shape[0] - size + 1))
        left = int(rng.integers(photo.shape[1] - size + 1))
        crop = photo[top : top + size, left : left + size]
        # Draw the flip bit even when unused, so the crop positions do not depend on it.
        if rng.random() < 0.5 and flip_allowed:
            crop = crop[:, ::-1]
        return crop, which

    def _rows(self, step, global_batch_size, rows, seed):
        crops = [
            self._crop([TRAIN_STREAM, self.seed, seed, step, int(r)], self._flip)[0] for r in rows
        ]
        images = to_unit_range(np.stack(crops))
        return images, np.zeros(len(rows), np.int32)

    def eval_images(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` deterministic unflipped crops, float32 ``(n, S, S, 3)`` in [-1, 1].

        Args:
          n: number of crops.
          seed: selects the crops (>= 0); a stream separate from training batches.

        Returns:
          The crops.
        """
        n = check_nonneg_int("n", n, 1)
        seed = check_nonneg_int("seed", seed)
        crops = [self._crop([EVAL_STREAM, self.seed, seed, 0, i], False)[0] for i in range(n)]
        return to_unit_range(np.stack(crops))

    def source_of_rows(self, step: int, global_batch_size: int, seed: int = 0) -> list[str]:
        """Names of the photos the rows of global batch ``step`` were cropped from (for checks)."""
        return [
            self.photo_names[self._crop([TRAIN_STREAM, self.seed, seed, step, r], False)[1]]
            for r in range(global_batch_size)
        ]
