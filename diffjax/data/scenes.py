"""An offline procedural scene set for segmentation: Fashion-MNIST items on textures.

Each scene is a ``S x S`` background (a random crop of one of scikit-image's bundled
textures or photographs, rescaled to ``S``, flipped and tinted at random) with one to
three Fashion-MNIST items scaled to 45-80 % of ``S``, coloured at random and pasted at
random positions; later items cover earlier ones. The label map holds 0 for background
and ``1 + c`` for an item of Fashion-MNIST class ``c`` (1 = T-shirt/top, ..., 10 = ankle
boot), wherever the item's own pixels (its intensity above :data:`ITEM_THRESHOLD`) were
pasted, so labels are exact by construction.

Splits are disjoint by source: ``train`` scenes use :data:`TRAIN_BACKGROUNDS` and
Fashion-MNIST's training items, ``test`` scenes use :data:`TEST_BACKGROUNDS` (never seen
in training) and its test items.

Every scene is a pure function of its numpy seed sequence:

* batches (``Scenes.batch``): ``(dataset seed, batch seed, step, row)``, endless;
* labelled scenes (``Scenes.labelled_scenes(n)``): ``(dataset seed, i)`` for ``i < n``, so the
  first 5 of 20 labelled scenes are the 5 labelled scenes;
* evaluation images (``Scenes.eval_images``): ``(dataset seed, eval seed, i)``.

``write_folder`` writes labelled scenes as a labelled folder (``scene_00000.png`` +
``scene_00000_label.png``), the format :mod:`diffjax.data.folder` reads; so does
``python -m diffjax.data.scenes --out DIR --num N``.

Fashion-MNIST comes through :func:`diffjax.data.builtin.load_fashion_mnist` (the Debian
package's IDX files, or wherever that loader is pointed).
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import numpy as np
from PIL import Image

from diffjax.data.builtin import load_fashion_mnist
from diffjax.data.pipeline import EVAL_STREAM, TRAIN_STREAM, Dataset, check_nonneg_int, to_unit_range

__all__ = [
    "Scenes",
    "SceneInfo",
    "write_folder",
    "TRAIN_BACKGROUNDS",
    "TEST_BACKGROUNDS",
    "CLASS_NAMES",
    "NUM_CLASSES",
    "DEFAULT_SIZE",
    "ITEM_THRESHOLD",
]

TRAIN_BACKGROUNDS = (
    "brick", "grass", "moon", "camera", "coffee", "astronaut", "rocket", "immunohistochemistry", "hubble_deep_field",
)
TEST_BACKGROUNDS = ("gravel", "chelsea", "coins")
CLASS_NAMES = (
    "background", "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
DEFAULT_SIZE = 32
ITEM_THRESHOLD = 40  # resized item intensity (0..255) above which a pixel belongs to the item
MAX_ITEMS = 3
LABELLED_STREAM = 2  # beside pipeline's TRAIN_STREAM / EVAL_STREAM


@dataclasses.dataclass(frozen=True)
class PastedItem:
    """One pasted item: its Fashion-MNIST index and class, box and pixel mask (before occlusion)."""

    index: int
    fashion_class: int
    top: int
    left: int
    mask: np.ndarray  # bool (k, k)


@dataclasses.dataclass(frozen=True)
class SceneInfo:
    """How a scene was made: background source and crop, and the items in pasting order."""

    background_name: str
    background: np.ndarray  # uint8 (S, S, 3), before items
    items: tuple[PastedItem, ...]


def _load_background(name: str) -> np.ndarray:
    import skimage.data  # local: only this module and photos need scikit-image

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


class Scenes(Dataset):
    """Endless RGB (or grey) scenes with per-pixel labels; see the module docstring.

    Args:
      split: ``"train"`` or ``"test"`` (held-out backgrounds and items).
      image_size: scene side ``S`` (default 32), at most 300.
      seed: base seed (>= 0).
      channels: 3 (RGB, default; 0 means the same) or 1 (grey, ITU-R 601-2 luma).
      fashion_mnist_dir: passed to :func:`load_fashion_mnist` as ``data_dir`` (``None``:
        the loader's default).

    Attributes (besides :class:`~diffjax.data.pipeline.Dataset`'s): ``label_classes``
    (11), ``labelled`` (True: batches carry ``"label_map"``), ``background_names``.
    """

    label_classes = NUM_CLASSES
    labelled = True

    def __init__(self, split="train", image_size=None, seed=0, channels=0, fashion_mnist_dir=None):
        if split not in ("train", "test"):
            raise ValueError(f"scenes has splits 'train' and 'test' (held out), got split={split!r}")
        if isinstance(channels, bool) or channels not in (0, 1, 3):
            raise ValueError(f"scenes: channels must be 0 or 3 (RGB) or 1 (grey), got {channels!r}")
        size = DEFAULT_SIZE if image_size is None else check_nonneg_int("image_size", image_size, 8)
        self.background_names = TRAIN_BACKGROUNDS if split == "train" else TEST_BACKGROUNDS
        self._backgrounds = [_load_background(n) for n in self.background_names]
        shortest = min(min(b.shape[:2]) for b in self._backgrounds)
        if size > shortest:
            raise ValueError(f"scenes: image_size={size} exceeds {shortest}, the shortest background side")
        items = load_fashion_mnist(split, None, 0, fashion_mnist_dir)
        self._items = items.stored_images()[..., 0]
        self._item_classes = items.labels()
        self.name, self.split = "scenes", split
        self._split_code = 0 if split == "train" else 1
        self.seed = check_nonneg_int("seed", seed)
        self.channels = 1 if channels == 1 else 3
        self.image_shape = (size, size, self.channels)
        self.num_classes = 0  # no image-level classes; per-pixel classes are label_classes
        self.num_examples = None

    # -- one scene ------------------------------------------------------------

    def render(self, entropy) -> tuple[np.ndarray, np.ndarray, SceneInfo]:
        """The scene of one seed sequence.

        Args:
          entropy: a numpy seed sequence (list of non-negative ints).

        Returns:
          ``(image, label_map, info)``: uint8 ``(S, S, channels)``, uint8 ``(S, S)`` and
          the :class:`SceneInfo` it was made from.
        """
        # The split enters the seed too: held-out scenes share no layout with training ones.
        rng = np.random.default_rng([self._split_code, *entropy])
        size = self.image_shape[0]
        which = int(rng.integers(len(self._backgrounds)))
        source = self._backgrounds[which]
        side = int(rng.integers(size, min(3 * size, *source.shape[:2]) + 1))
        top = int(rng.integers(source.shape[0] - side + 1))
        left = int(rng.integers(source.shape[1] - side + 1))
        crop = Image.fromarray(source[top : top + side, left : left + side])
        background = np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), np.float32)
        if rng.random() < 0.5:
            background = background[:, ::-1]
        background = background * rng.uniform(0.5, 1.0, 3)
        background = np.clip(np.rint(background), 0, 255).astype(np.uint8)

        image, labels = background.copy(), np.zeros((size, size), np.uint8)
        pasted = []
        for _ in range(int(rng.integers(1, MAX_ITEMS + 1))):
            index = int(rng.integers(len(self._items)))
            k = int(rng.integers(round(0.45 * size), round(0.8 * size) + 1))
            item = np.asarray(Image.fromarray(self._items[index]).resize((k, k), Image.Resampling.BILINEAR))
            mask = item > ITEM_THRESHOLD
            y, x = int(rng.integers(size - k + 1)), int(rng.integers(size - k + 1))
            colour = rng.uniform(0.15, 1.0, 3)
            # Shade the item by its own intensity so that its texture stays visible.
            rgb = colour * (80.0 + 175.0 * item[..., None] / 255.0)
            region = image[y : y + k, x : x + k]
            region[mask] = np.clip(np.rint(rgb[mask]), 0, 255).astype(np.uint8)
            fashion_class = int(self._item_classes[index])
            labels[y : y + k, x : x + k][mask] = fashion_class + 1
            pasted.append(PastedItem(index, fashion_class, y, x, mask))
        info = SceneInfo(self.background_names[which], background, tuple(pasted))
        return self._channels(image), labels, info

    def _channels(self, image: np.ndarray) -> np.ndarray:
        if self.channels == 3:
            return image
        grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]

    def _many(self, entropies) -> tuple[np.ndarray, np.ndarray]:
        scenes = [self.render(e)[:2] for e in entropies]
        return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])

    # -- the Dataset interface -----------------------------------------------------

    def _rows(self, step, global_batch_size, rows, seed):
        images, _ = self._many([TRAIN_STREAM, self.seed, seed, step, int(r)] for r in rows)
        return to_unit_range(images), np.zeros(len(rows), np.int32)

    def batch(self, step, global_batch_size, *, seed=0, process_index=0, process_count=1):
        """As :meth:`Dataset.batch`, plus ``"label_map"``: int32 ``(L, S, S)`` in ``[0, 11)``."""
        return super().batch(step, global_batch_size, seed=seed, process_index=process_index,
                             process_count=process_count)

    def _batch_of_rows(self, step, global_batch_size, rows, seed):
        images, label_maps = self._many([TRAIN_STREAM, self.seed, seed, step, int(r)] for r in rows)
        return {
            "image": to_unit_range(images),
            "label": np.zeros(len(rows), np.int32),
            "label_map": label_maps.astype(np.int32),
        }

    def eval_images(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` deterministic scenes, float32 ``(n, S, S, C)`` in [-1, 1] (own stream).

        Args:
          n: number of scenes (>= 1).
          seed: selects them (>= 0).

        Returns:
          The images.
        """
        n = check_nonneg_int("n", n, 1)
        seed = check_nonneg_int("seed", seed)
        return to_unit_range(self._many([EVAL_STREAM, self.seed, seed, i] for i in range(n))[0])

    def labelled_scenes(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``n`` labelled scenes of this split (a prefix of any larger ``n``).

        Args:
          n: number of scenes (>= 1).

        Returns:
          ``(images, label_maps)``: uint8 ``(n, S, S, C)`` and uint8 ``(n, S, S)``.
        """
        n = check_nonneg_int("n", n, 1)
        return self._many([LABELLED_STREAM, self.seed, i] for i in range(n))

    def labelled_info(self, i: int) -> SceneInfo:
        """How labelled scene ``i`` was made (for checks and figures)."""
        return self.render([LABELLED_STREAM, self.seed, check_nonneg_int("i", i)])[2]


def write_folder(
    out_dir: str,
    num: int,
    *,
    split: str = "train",
    seed: int = 0,
    image_size: int = DEFAULT_SIZE,
    channels: int = 3,
    labelled: bool = True,
    fashion_mnist_dir: str | None = None,
) -> list[str]:
    """Write the first ``num`` labelled scenes as a (labelled) folder.

    Files are ``scene_00000.png`` (and ``scene_00000_label.png``: 8-bit class ids,
    0 = background, 1-10 = Fashion-MNIST classes) ..., which
    ``load_dataset("folder", data_dir=out_dir, num_classes=11)`` reads back exactly.

    Args:
      out_dir: created if absent; files of the same names are overwritten.
      num: number of scenes (>= 1).
      split: ``"train"`` or ``"test"`` (held-out backgrounds and items).
      seed: the scene set's seed.
      image_size, channels, fashion_mnist_dir: as in :class:`Scenes`.
      labelled: also write the label maps.

    Returns:
      Paths of the images written.
    """
    num = check_nonneg_int("num", num, 1)
    scenes = Scenes(split, image_size, seed, channels, fashion_mnist_dir)
    images, label_maps = scenes.labelled_scenes(num)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, (image, label_map) in enumerate(zip(images, label_maps)):
        path = os.path.join(out_dir, f"scene_{i:05d}.png")
        Image.fromarray(image if image.shape[-1] == 3 else image[..., 0]).save(path)
        if labelled:
            Image.fromarray(label_map, mode="L").save(os.path.join(out_dir, f"scene_{i:05d}_label.png"))
        paths.append(path)
    return paths


def main(argv=None) -> None:
    """``python -m diffjax.data.scenes --out DIR --num N [--split test] [--seed S] [--size 32]``."""
    parser = argparse.ArgumentParser(description="Write procedural scenes as a labelled image folder.")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num", type=int, required=True, help="number of scenes")
    parser.add_argument("--split", default="train", choices=("train", "test"), help="test: held-out backgrounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="scene side in pixels")
    parser.add_argument("--grey", action="store_true", help="one channel instead of RGB")
    parser.add_argument("--unlabelled", action="store_true", help="write the images only")
    args = parser.parse_args(argv)
    try:
        paths = write_folder(args.out, args.num, split=args.split, seed=args.seed, image_size=args.size,
                             channels=1 if args.grey else 3, labelled=not args.unlabelled)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"error: {err}")
    print(f"wrote {len(paths)} scenes to {args.out}")


if __name__ == "__main__":
    main()
