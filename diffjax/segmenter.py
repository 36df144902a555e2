"""Segmentation runs restored for prediction, and what their training shares: task names, labelled images,
per-pixel features, ``.npz`` weights (docs/segmentation.md)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from diffjax import builders, fingerprint, workdir_io
from diffjax.builders import load_model_config, restore_ema_model
from diffjax.run_base import Run
from diffjax.run_config import load_run_config
from diffjax.tasks import ddep, pixel_classifier as pc
from diffjax.tasks import segmentation as seg

__all__ = ["SEGMENTATION_TASKS", "FEATURE_KINDS", "DDEP_INITS", "STATE_FILE", "INFO_FILE", "labelled_data",
           "build_feature_fn", "Segmenter", "load_segmenter", "segmentation_image_shape", "label_palette"]

SEGMENTATION_TASKS = ("segmentation_features", "ddep_pretrain", "ddep_finetune")
FEATURE_KINDS = ("ddpm", "random_unet", "pixels")
DDEP_INITS = ("pretrained", "random")
STATE_FILE = "segmentation.npz"
INFO_FILE = "segmentation.json"


def _num_label_classes(config) -> int:
    """Classes of the label maps: ``config.data.num_classes`` (11 for scenes when 0)."""
    from diffjax.data.scenes import NUM_CLASSES

    k = int(config.data.num_classes)
    if config.segmentation.labelled_dir or config.data.name == "folder":
        if k < 2:
            raise ValueError("a labelled folder needs the number of classes of its name_label.png maps: "
                             f"--config.data.num_classes=K (K >= 2), got {k}")
        return k
    if k not in (0, NUM_CLASSES):
        raise ValueError(f"the scene set has {NUM_CLASSES} classes, got config.data.num_classes={k}")
    return NUM_CLASSES


def labelled_data(config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The labelled images of a segmentation run's ``split`` (``"train"`` or ``"test"``; docs/segmentation.md).

    From ``segmentation.labelled_dir`` (``name.png`` + ``name_label.png``) or, when empty, the scene set.
    Returns float32 ``(N, S, S, C)`` images in [-1, 1], uint8 ``(N, S, S)`` label maps (255 = ignore) and a
    one-line description of the source; ValueError for a folder without labels, fewer images than asked
    for, bad files (naming them), or a scene-set class count other than 11.
    """
    from diffjax.data.folder import load_folder
    from diffjax.data.pipeline import to_unit_range
    from diffjax.data.scenes import Scenes

    s, size = config.segmentation, (config.data.image_size or None)
    num_classes = _num_label_classes(config)
    if s.labelled_dir:
        if not os.path.isdir(s.labelled_dir):
            raise ValueError(f"config.segmentation.labelled_dir {s.labelled_dir} is not a folder")
        ds = load_folder(s.labelled_dir, split, size, config.training.seed, config.data.channels, num_classes,
                         config.data.eval_fraction)
        images, labels = ds.stored_images(), ds.label_maps()
        if split == "train" and s.num_labelled:
            if s.num_labelled > len(images):
                raise ValueError(f"config.segmentation.num_labelled={s.num_labelled} but {s.labelled_dir} holds "
                                 f"{len(images)} labelled training images (besides its held-out share)")
            images, labels = images[: s.num_labelled], labels[: s.num_labelled]
        where = f"{len(images)} {split} images of {s.labelled_dir}"
    else:
        n = s.num_labelled if split == "train" else s.num_eval
        if n < 1:
            raise ValueError("config.segmentation.num_labelled must be >= 1 for the scene set")
        scenes = Scenes(split, size, config.training.seed, config.data.channels)
        images, labels = scenes.labelled_scenes(n)
        where = f"{n} labelled scenes ({'held-out backgrounds' if split == 'test' else 'training backgrounds'})"
    return to_unit_range(np.asarray(images)), np.asarray(labels, np.uint8), where


def _redraw_zero_kernels(model: nnx.Module, key) -> None:
    """Zero-initialised convolutions redrawn (fan-in scaling): a *random* feature baseline is not the identity."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    out = []
    for i, leaf in enumerate(leaves):
        if leaf.ndim == 4 and not bool(jnp.any(leaf)):
            fan_in = leaf.shape[0] * leaf.shape[1] * leaf.shape[2]
            leaf = jax.random.normal(jax.random.fold_in(key, i), leaf.shape, leaf.dtype) / np.sqrt(fan_in)
        out.append(leaf)
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, out))


def _backbone(config, image_shape):
    """``(model, sde, time_input, info)`` of the features' UNet (trained or random)."""
    from diffjax.nn import UNet
    from diffjax.sharding import make_mesh
    from diffjax.training import model_from_state

    s = config.segmentation
    backbone = s.backbone_workdir
    if s.features == "ddpm" and not backbone:
        raise ValueError("features='ddpm' needs a trained unconditional run: "
                         "--config.segmentation.backbone_workdir=DDPM_RUN (e.g. python train.py "
                         "--config configs/ddpm_scenes.py --workdir DDPM_RUN); or features=pixels|random_unet")
    if backbone:
        if not workdir_io.isdir(backbone):
            raise ValueError(f"config.segmentation.backbone_workdir {backbone} does not exist")
        b_config = load_run_config(backbone)
        # RePaint runs (python -m diffjax.convert writes one) train the same unconditional network.
        if b_config.task.name not in ("generate", "repaint") or b_config.data.use_labels:
            raise ValueError(f"backbone run {backbone} has task {b_config.task.name!r}"
                             f"{' with class labels' if b_config.data.use_labels else ''}; the features need an "
                             "unconditional run (task 'generate', e.g. configs/ddpm_scenes.py)")
        mc = load_model_config(backbone)
        if (mc.image_size, mc.image_size, mc.in_channels) != tuple(image_shape):
            raise ValueError(f"backbone run {backbone} takes {mc.image_size}x{mc.image_size}x{mc.in_channels} "
                             f"images but the labelled images are {'x'.join(map(str, image_shape))}; "
                             "set --config.data.image_size / --config.data.channels to the backbone's")
    else:
        b_config = config
        mc = _seg_unet_config(config, image_shape, None)
    sde = builders.build_sde(b_config)
    if s.features == "ddpm":
        graphdef, params, state, mc, step = restore_ema_model(b_config, backbone, make_mesh())
        model = model_from_state(graphdef, params, state)
        info = {"backbone_workdir": workdir_io.absolute(backbone), "backbone_step": step}
    else:
        model = UNet(mc, rngs=nnx.Rngs(params=config.training.seed))
        _redraw_zero_kernels(model, jax.random.key(config.training.seed))
        info = {"random_unet_seed": int(config.training.seed)}
    unknown = [b for b in s.blocks if b not in model.activation_names()]
    if unknown or not s.blocks:
        raise ValueError(f"config.segmentation.blocks {list(s.blocks)}: unknown {unknown}; the UNet has "
                         f"{list(model.activation_names())}")
    return model, sde, b_config.loss.time_input, info


def build_feature_fn(config: ml_collections.ConfigDict, image_shape) -> tuple:
    """``(feature_fn, info)``: the jitted per-pixel features ``(B, S, S, C) -> (B, S, S, F)`` of a
    ``segmentation_features`` config, and what they came from (the backbone's workdir and checkpoint
    step, or the random network's seed) for the stored run.

    Raises:
      ValueError: ``features="ddpm"`` without a backbone run, a backbone that is missing,
        conditional, of another image size or channel count, unknown blocks or bad times.
    """
    from diffjax.parametrization import network_time_input

    s = config.segmentation
    if s.features == "pixels":
        return jax.jit(lambda images: jnp.asarray(images, jnp.float32)), {"features": "pixels"}
    model, sde, time_input, info = _backbone(config, image_shape)
    graphdef, state = nnx.split(model)
    noise = seg.fixed_noise(jax.random.key(int(s.noise_seed)), image_shape)
    times, blocks = tuple(s.times), tuple(s.blocks)

    def features(state, images):
        net = nnx.merge(graphdef, state)
        act = lambda x, t: net.activations(x, network_time_input(sde, t, time_input))  # noqa: E731
        return seg.ddpm_feature_fn(act, sde, times=times, blocks=blocks, noise=noise)(images)

    jitted = jax.jit(features)
    return (lambda images: jitted(state, images)), {"features": s.features, **info}


def _flat(tree) -> dict:
    # A replicated array of a multi-host job is read from this host's copy.
    host = lambda x: np.asarray(x.addressable_data(0) if isinstance(x, jax.Array) and not x.is_fully_addressable else x)  # noqa: E731
    return {jax.tree_util.keystr(path): host(leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _save_npz(path: str, tree) -> None:
    workdir_io.save_npz(path, _flat(tree))  # whole or not at all, local or on a bucket


def _load_npz(path: str, like, skip=lambda name: False):
    """Arrays of ``path`` in the structure of ``like`` (leaves named by their key paths)."""
    arrays = workdir_io.load_npz(path)
    leaves = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(like)[0]:
        name = jax.tree_util.keystr(key_path)
        if skip(name):
            leaves.append(leaf)
            continue
        if name not in arrays or arrays[name].shape != tuple(leaf.shape):
            got = arrays[name].shape if name in arrays else "nothing"
            raise ValueError(f"{path}: expected {name} of shape {tuple(leaf.shape)}, found {got}")
        leaves.append(jnp.asarray(arrays[name], leaf.dtype))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


def _seg_unet_config(config, image_shape, out_channels):
    """A plain UNet of ``config.model`` for ``image_shape`` (no condition, no labels)."""
    from diffjax.nn import UNetConfig

    kwargs = builders.unet_model_keys(config)
    kwargs.update(image_size=int(image_shape[0]), in_channels=int(image_shape[2]), out_channels=out_channels)
    return UNetConfig(**kwargs)


def _ddep_level(config) -> float:
    """The conditioning scalar of a fine-tuned network: the pretraining's (smallest) noise level."""
    return ddep.check_noise_scales(config.segmentation.noise_scales)[0]


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

    def _checked(self, images) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"images must be (N, {', '.join(map(str, self.image_shape))}), got {images.shape}")
        return images

    def predict(self, images) -> tuple[np.ndarray, np.ndarray]:
        """``(labels, uncertainty)`` of ``(N, S, S, C)`` images in [-1, 1], each ``(N, S, S)``.

        The uncertainty is the entropy (nats) of the ensemble's mean softmax
        (``segmentation_features``) or of the network's softmax (``ddep_finetune``).

        Raises:
          ValueError: images of another shape than the run's.
        """
        images = self._checked(images)
        labels, entropy = self._predict(self._feature_fn(images) if self._kind == "ensemble" else images)
        return np.asarray(labels), np.asarray(entropy)

    def log_probs(self, images) -> np.ndarray:
        """``(N, S, S, K)`` per-pixel class log-probabilities (the ensemble's mean softmax, or
        the network's softmax), e.g. for :func:`diffjax.tasks.pnp.refine_segmentation`.

        Raises:
          ValueError: images of another shape than the run's.
        """
        return np.asarray(self._log_probs(self._checked(images)))


def segmentation_image_shape(config: ml_collections.ConfigDict, workdir: str) -> tuple[int, int, int]:
    """The checks of :func:`load_segmenter` (nothing restored); the run's ``(S, S, C)``."""
    if config.task.name == "ddep_pretrain":
        raise ValueError(f"{workdir} is a DDeP pretraining run, which denoises and does not segment: fine-tune it "
                         "with configs/segmentation_ddep.py:finetune (--config.segmentation.pretrain_workdir="
                         f"{workdir}) and use that run")
    if config.task.name not in ("segmentation_features", "ddep_finetune"):
        raise ValueError(f"{workdir} is a {config.task.name!r} run; segmenting needs a segmentation_features or "
                         "ddep_finetune run")
    if not all(workdir_io.exists(os.path.join(workdir, name)) for name in (STATE_FILE, INFO_FILE)):
        raise ValueError(f"{workdir} holds no {STATE_FILE} and {INFO_FILE}: its training did not finish")
    return tuple(json.loads(workdir_io.read_text(os.path.join(workdir, INFO_FILE)))["image_shape"])


def load_segmenter(workdir: str, config: ml_collections.ConfigDict | None = None) -> Segmenter:
    """Restore the trained ``segmentation_features`` or ``ddep_finetune`` run in ``workdir``.

    Args:
      workdir: the run's ``--workdir``.
      config: its config with any overrides (default: the stored ``config.json``).

    Raises:
      ValueError: a workdir without a finished segmentation run, a pretraining run (it
        does not segment), or a backbone run that changed since.
    """
    if not workdir_io.isdir(workdir):
        raise ValueError(f"workdir {workdir} does not exist")
    config = load_run_config(workdir) if config is None else config
    segmentation_image_shape(config, workdir)
    return Segmenter(config, workdir)


def label_palette() -> list[int]:
    """The 256-colour palette of written label maps (flat RGB list; class 0 black, 255 white)."""
    base = [(0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212)]
    rng = np.random.default_rng(0)
    colours = base + [tuple(int(v) for v in rng.integers(40, 256, 3)) for _ in range(256 - len(base))]
    colours[255] = (255, 255, 255)
    return [v for c in colours for v in c]
