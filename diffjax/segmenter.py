"""A trained segmentation run restored for prediction, and ``sample.py``'s label maps (docs/segmentation.md)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from diffjax import distributed, fingerprint
from diffjax import workdir_io
from diffjax.builders import load_model_config
from diffjax.run_base import Run
from diffjax.run_config import load_run_config
from diffjax.seg_features import INFO_FILE, STATE_FILE, _ddep_level, _load_npz, build_feature_fn
from diffjax.tasks import pixel_classifier as pc

__all__ = ["Segmenter", "load_segmenter", "label_palette", "run_segment"]


class Segmenter(Run):
    """A trained segmentation run, restored for prediction (build one with :func:`load_segmenter`).

    A :class:`diffjax.Run` whose capabilities are :meth:`predict` and :meth:`log_probs`
    (the others raise ValueError saying so).

    Attributes:
      config: the run's config.
      num_classes: classes of its label maps.
      image_shape: ``(S, S, C)`` the run takes.
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | None = None, *, model=None,
                 level: float | None = None):
        """Restore ``workdir``'s run for ``config`` (or wrap a fine-tuned ``model`` just trained)."""
        self.config, self.workdir, self.task = config, workdir, config.task.name
        if model is not None:
            self._kind, self._model, self._level = "unet", model, level
            self.num_classes, self.image_shape = model.config.output_channels, (
                model.config.image_size, model.config.image_size, model.config.in_channels)
            self._build()
            return
        info = json.loads(workdir_io.read_text(os.path.join(workdir, INFO_FILE)))
        self.num_classes, self.image_shape = int(info["num_classes"]), tuple(info["image_shape"])
        state_path = os.path.join(workdir, STATE_FILE)
        if config.task.name == "segmentation_features":
            self._kind = "ensemble"
            if info.get("backbone_workdir"):
                fingerprint.check(workdir, "backbone", info["backbone_workdir"])
            self._feature_fn, now = build_feature_fn(config, self.image_shape)
            if now.get("backbone_step") != info.get("backbone_step"):
                raise ValueError(f"backbone run {info.get('backbone_workdir')} is now at checkpoint step "
                                 f"{now.get('backbone_step')} but the classifiers were trained on step "
                                 f"{info.get('backbone_step')}'s features; retrain the segmentation run")
            like = pc.init_ensemble(jax.random.key(0), config.segmentation.num_members, int(info["num_features"]),
                                    self.num_classes)
            self._ensemble = _load_npz(state_path, like)
        else:
            from diffjax.nn import UNet
        
            self._kind, self._level = "unet", _ddep_level(config)
            self._model = UNet(load_model_config(workdir), rngs=nnx.Rngs(0))
            nnx.update(self._model, _load_npz(state_path, nnx.state(self._model, nnx.Param)))
        self._build()

    def __repr__(self) -> str:
        return (f"Segmenter(workdir={self.workdir!r}, task={self.task!r}, num_classes={self.num_classes}, "
                f"image_shape={self.image_shape})")

    @property
    def capabilities(self) -> tuple[str, ...]:
        return ("predict", "log_probs")

    def _build(self):
        if self._kind == "ensemble":
            self._predict = jax.jit(lambda feats: pc.predict(self._ensemble, feats))

            @jax.jit
            def mean_log_probs(feats):
                logits = pc.ensemble_logits(self._ensemble, feats.reshape(-1, feats.shape[-1]))
                mean = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)
                return jnp.log(jnp.maximum(mean, 1e-12)).reshape(*feats.shape[:-1], -1)

            self._log_probs = lambda x: mean_log_probs(self._feature_fn(x))
            return
        graphdef, state = nnx.split(self._model)
        level = self._level
        self._log_probs = jax.jit(lambda x: jax.nn.log_softmax(
            nnx.merge(graphdef, state)(x, jnp.full((x.shape[0],), level)), axis=-1))

        @jax.jit
        def run(state, x):
            logits = nnx.merge(graphdef, state)(x, jnp.full((x.shape[0],), level))
            p = jax.nn.softmax(logits, axis=-1)
            entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
            return jnp.argmax(logits, axis=-1).astype(jnp.int32), entropy

        self._predict = lambda x: run(state, x)

    def predict(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, uncertainty)`` of ``(N, S, S, C)`` images in [-1, 1], each ``(N, S, S)``.

        The uncertainty is the entropy (nats) of the ensemble's mean softmax
        (``segmentation_features``) or of the network's softmax (``ddep_finetune``).

        Raises:
          ValueError: images of another shape than the run's.
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"images must be (N, {', '.join(map(str, self.image_shape))}), got {images.shape}")
        if self._kind == "ensemble":
            labels, entropy = self._predict(self._feature_fn(images))
        else:
            labels, entropy = self._predict(images)
        return np.asarray(labels), np.asarray(entropy)

    def log_probs(self, images) -> np.ndarray:
        """``(N, S, S, K)`` per-pixel class log-probabilities (the ensemble's mean softmax, or
        the network's softmax), e.g. for :func:`diffjax.tasks.pnp.refine_segmentation`.

        Raises:
          ValueError: images of another shape than the run's.
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"images must be (N, {', '.join(map(str, self.image_shape))}), got {images.shape}")
        return np.asarray(self._log_probs(images))


def load_segmenter(workdir: str) -> Segmenter:
    """Restore the trained ``segmentation_features`` or ``ddep_finetune`` run in ``workdir``.

    Raises:
      ValueError: a workdir without a finished segmentation run, a pretraining run (it
        does not segment), or a backbone run that changed since.
    """
    if not workdir_io.isdir(workdir):
        raise ValueError(f"workdir {workdir} does not exist")
    config = load_run_config(workdir)
    if config.task.name not in ("segmentation_features", "ddep_finetune"):
        raise ValueError(f"{workdir} is a {config.task.name!r} run; segmenting needs a segmentation_features or "
                         "ddep_finetune run")
    if not workdir_io.exists(os.path.join(workdir, STATE_FILE)):
        raise ValueError(f"{workdir} holds no {STATE_FILE}: its training did not finish")
    return Segmenter(config, workdir)


def label_palette() -> list[int]:
    """The 256-colour palette of written label maps (flat RGB list; class 0 black, 255 white)."""
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    rng = np.random.default_rng(0)
    colours = base + [tuple(int(v) for v in rng.integers(40, 256, 3)) for _ in range(256 - len(base))]
    colours[255] = (255, 255, 255)
    return [v for c in colours for v in c]


def run_segment(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """``sample.py --input IN --output OUT`` for segmentation runs: a label map per image.

    Writes ``name_label.png`` (8-bit palette PNG whose indices are the class ids, readable
    as a labelled folder's map) and ``name_uncertainty.png`` (grey: the entropy scaled so
    that 255 is ``log K``, the most uncertain) for every PNG ``name.png`` of ``input_dir``.
    Every input is checked before anything is computed or written.

    Returns:
      ``{"output": folder, "num": images segmented, "task": task}``.

    Raises:
      ValueError: a pretraining run, a missing folder, no PNG, or images of another size
        (naming every such file).
    """
    from diffjax.logging_utils import save_png
    from diffjax.outputs import is_own_output, save_image
    from diffjax.pipelines.translation import read_translation_inputs

    if config.task.name == "ddep_pretrain":
        raise ValueError(f"{workdir} is a DDeP pretraining run, which denoises and does not segment; fine-tune it "
                         "with configs/segmentation_ddep.py:finetune --config.segmentation.pretrain_workdir=... first")
    info_path = os.path.join(workdir, INFO_FILE)
    if not workdir_io.exists(info_path):
        raise ValueError(f"{workdir} holds no {INFO_FILE}: its segmentation training did not finish")
    shape = tuple(json.loads(workdir_io.read_text(info_path))["image_shape"])
    # A folder holding an earlier run's name_label.png / name_uncertainty.png: segment only the images.
    inputs = read_translation_inputs(input_dir, shape, exclude=is_own_output)
    segmenter = Segmenter(config, workdir)
    batch = int(config.segmentation.feature_batch_size)
    images = np.stack([image for _, image in inputs])
    labels, entropy = [], []
    for start in range(0, len(images), batch):
        lab, ent = segmenter.predict(images[start:start + batch])
        labels.append(lab)
        entropy.append(ent)
    labels, entropy = np.concatenate(labels), np.concatenate(entropy)
    if distributed.is_lead():
        workdir_io.makedirs(output)
        palette = label_palette()
        scale = 255.0 / np.log(segmenter.num_classes)
        for (name, _), lab, ent in zip(inputs, labels, entropy):
            stem = os.path.splitext(name)[0]
            img = Image.fromarray(lab.astype(np.uint8), mode="P")
            img.putpalette(palette)
            save_image(os.path.join(output, f"{stem}_label.png"), img)
            save_png(os.path.join(output, f"{stem}_uncertainty.png"),
                     np.clip(np.rint(ent * scale), 0, 255).astype(np.uint8)[..., None])
        print(f"segmented {len(inputs)} images ({config.task.name}) into {output}")
    return {"output": output, "num": len(inputs), "task": config.task.name}
