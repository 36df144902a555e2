"""Segmentation runs: what ``train.py`` and ``sample.py`` do for the segmentation tasks.

Three tasks (``config.task.name``), all set up by ``config.segmentation`` (docs/segmentation.md):

* ``segmentation_features`` (Baranchuk et al.): per-pixel features of a network
  (``features="ddpm"``: the UNet of an unconditional run named by ``backbone_workdir``;
  ``"random_unet"``: a randomly initialised UNet of the same shape; ``"pixels"``: the raw
  pixels) train an ensemble of small MLPs (:mod:`diffjax.tasks.pixel_classifier`) on a few
  labelled images.
* ``ddep_pretrain`` (DDeP): a UNet learns to denoise unlabelled images under scaled additive
  noise (:mod:`diffjax.tasks.ddep`).
* ``ddep_finetune``: the pretrained UNet (``pretrain_workdir``) with a new output layer, or
  a fresh one (``init="random"``, the baseline), is fine-tuned on the labelled images.

Labelled images come from ``labelled_dir`` (a labelled folder, :mod:`diffjax.data.folder`;
its held-out share is the evaluation set) or, when empty, from the procedural scene set
(:mod:`diffjax.data.scenes`: training scenes for the labels, scenes on held-out backgrounds
for the evaluation). Every run ends with the mIoU and pixel accuracy of the held-out images
in ``metrics.json``. Weights are stored as plain ``.npz`` files (never pickled).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from PIL import Image

from diffjax import builders, distributed, fingerprint
from diffjax.checkpoint import write_model_config
from diffjax.metrics import confusion_matrix, mean_iou_from_confusion
from diffjax.builders import load_model_config, restore_ema_model
from diffjax.run_base import Run, check_workdir_path, check_workdir_writable
from diffjax.run_config import get_base_config, load_run_config, write_run_config
from diffjax.tasks import ddep, pixel_classifier as pc
from diffjax.tasks import segmentation as seg

__all__ = [
    "SEGMENTATION_TASKS",
    "FEATURE_KINDS",
    "DDEP_INITS",
    "STATE_FILE",
    "train_segmentation",
    "labelled_data",
    "build_feature_fn",
    "Segmenter",
    "load_segmenter",
    "run_segment",
    "label_palette",
]

SEGMENTATION_TASKS = ("segmentation_features", "ddep_pretrain", "ddep_finetune")
FEATURE_KINDS = ("ddpm", "random_unet", "pixels")
DDEP_INITS = ("pretrained", "random")
STATE_FILE = "segmentation.npz"
INFO_FILE = "segmentation.json"


# -- checks and data ---------------------------------------------------------------


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"config.segmentation.{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_section(config: ml_collections.ConfigDict) -> None:
    builders.validate_config(config, get_base_config())
    s = config.segmentation
    if config.task.name not in SEGMENTATION_TASKS:
        raise ValueError(f"task.name must be one of {SEGMENTATION_TASKS} here, got {config.task.name!r}")
    if s.features not in FEATURE_KINDS:
        raise ValueError(f"config.segmentation.features must be one of {list(FEATURE_KINDS)}, got {s.features!r}")
    if s.init not in DDEP_INITS:
        raise ValueError(f"config.segmentation.init must be one of {list(DDEP_INITS)}, got {s.init!r}")
    for name, minimum in (("num_labelled", 0), ("feature_batch_size", 1), ("num_members", 1), ("steps", 1),
                          ("batch_size", 2 if config.task.name == "segmentation_features" else 1), ("num_eval", 1),
                          ("chunk_pixels", 2)):
        _positive_int(name, s[name], minimum)
    if not float(s.learning_rate) > 0:
        raise ValueError(f"config.segmentation.learning_rate must be positive, got {s.learning_rate!r}")
    ddep.check_noise_scales(s.noise_scales)


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
    """The labelled images of a segmentation run: ``(images, label_maps, description)``.

    Args:
      config: the run's config; ``segmentation.labelled_dir`` names a labelled folder
        (``name.png`` + ``name_label.png``, ``data.num_classes`` classes), or is empty for
        the scene set.
      split: ``"train"`` (the first ``segmentation.num_labelled`` images: a folder's files
        not held out; the scene set's labelled training scenes) or ``"test"`` (a folder's
        held-out share, ``data.eval_fraction``; ``segmentation.num_eval`` scenes on the
        held-out backgrounds).

    Returns:
      float32 ``(N, S, S, C)`` images in [-1, 1], uint8 ``(N, S, S)`` label maps (255 =
      ignore) and a one-line description of the source.

    Raises:
      ValueError: a folder without labels, fewer images than asked for, bad files
        (naming them), or a scene-set class count other than 11.
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


# -- features ----------------------------------------------------------------------


def _redraw_zero_kernels(model: nnx.Module, key) -> None:
    """Give the zero-initialised convolutions (residual branches, output) random weights.

    The UNet starts its residual branches at zero (an identity network); a *random*
    network as a feature baseline should compute something, so those kernels are drawn
    like the others (variance scaling on the fan-in).
    """
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
        if not os.path.isdir(backbone):
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
        info = {"backbone_workdir": os.path.abspath(backbone), "backbone_step": step}
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
    """The run's per-pixel feature function ``features(images) -> (B, S, S, F)``, jitted, and a record.

    Args:
      config: a ``segmentation_features`` config (``segmentation.features``, ``times``,
        ``blocks``, ``noise_seed``, ``backbone_workdir``).
      image_shape: ``(S, S, C)`` of the images.

    Returns:
      ``(feature_fn, info)``: ``info`` records what the features came from (the backbone's
      workdir and checkpoint step, or the random network's seed) for the stored run.

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


# -- storing trees as .npz -----------------------------------------------------------


def _flat(tree) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _save_npz(path: str, tree) -> None:
    tmp = path + ".tmp.npz"
    np.savez(tmp, **_flat(tree))
    os.replace(tmp, path)


def _load_npz(path: str, like, skip=lambda name: False):
    """Arrays of ``path`` in the structure of ``like`` (leaves named by their key paths)."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = dict(stored)
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


# -- training ----------------------------------------------------------------------


def _evaluate(predict_fn, images, labels, num_classes, batch_size) -> dict:
    cm = np.zeros((num_classes, num_classes), np.int64)
    for start in range(0, len(images), batch_size):
        pred, _ = predict_fn(images[start:start + batch_size])
        cm += np.asarray(confusion_matrix(np.asarray(pred), labels[start:start + batch_size].astype(np.int32),
                                          num_classes), np.int64)
    return {"miou": float(mean_iou_from_confusion(cm)),
            "pixel_accuracy": float(np.trace(cm) / max(cm.sum(), 1)), "num_eval_images": int(len(images))}


def _finish(config, workdir, summary: dict, info: dict) -> dict:
    if distributed.is_lead():
        with open(os.path.join(workdir, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True)
        with open(os.path.join(workdir, "metrics.json"), "w") as f:
            json.dump(summary, f, indent=2)
        print(f"{config.task.name}: {json.dumps(summary)}")
    return summary


def _start(config, workdir):
    check_workdir_writable(check_workdir_path(workdir))


def _train_features(config, workdir) -> dict:
    s = config.segmentation
    images, labels, where = labelled_data(config, "train")
    eval_images, eval_labels, eval_where = labelled_data(config, "test")
    num_classes = _num_label_classes(config)
    feature_fn, info = build_feature_fn(config, images.shape[1:])
    _start(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    write_run_config(workdir, config)
    if "backbone_workdir" in info and distributed.is_lead():  # sample.py refuses a backbone changed since (diffjax.fingerprint)
        fingerprint.record(workdir, "backbone", info["backbone_workdir"])
    t0 = time.perf_counter()
    if s.feature_memmap:  # on disk; the ensemble reads chunk_pixels pixels' features at a time
        path = os.path.join(workdir, "features.npy")
        shape = (len(images), *images.shape[1:3], seg.feature_channels(feature_fn, images.shape[1:]))
        seg.compute_features(feature_fn, images, s.feature_batch_size, out=seg.open_feature_memmap(path, shape))
        feats = np.load(path, mmap_mode="r")
    else:
        feats = seg.compute_features(feature_fn, images, s.feature_batch_size)
    feature_seconds = time.perf_counter() - t0
    f = feats.shape[-1]
    key = jax.random.key(config.training.seed)
    ensemble = pc.init_ensemble(jax.random.fold_in(key, 0), s.num_members, f, num_classes)
    t0 = time.perf_counter()
    ensemble, losses = pc.train_ensemble_streamed(
        ensemble, feats.reshape(-1, f), labels.reshape(-1).astype(np.int32), key=jax.random.fold_in(key, 1),
        steps=int(s.steps), batch_size=int(s.batch_size), learning_rate=float(s.learning_rate),
        chunk_pixels=int(s.chunk_pixels))
    train_seconds = time.perf_counter() - t0
    if distributed.is_lead():
        _save_npz(os.path.join(workdir, STATE_FILE), ensemble)
    predict = jax.jit(pc.predict)
    summary = _evaluate(lambda x: predict(ensemble, feature_fn(x)), eval_images, eval_labels, num_classes,
                        s.feature_batch_size)
    summary.update(task=config.task.name, features=s.features, num_labelled=len(images), num_features=int(f),
                   final_loss=float(losses[-1].mean()), feature_seconds=round(feature_seconds, 2),
                   train_seconds=round(train_seconds, 2), labelled=where, evaluated=eval_where)
    info.update(num_classes=num_classes, num_features=int(f), image_shape=list(images.shape[1:]))
    return _finish(config, workdir, summary, info)


def _seg_unet_config(config, image_shape, out_channels):
    """A plain UNet of ``config.model`` for ``image_shape`` (no condition, no labels)."""
    from diffjax.nn import UNetConfig

    kwargs = dict(config.model.items())
    kwargs.update(channel_mult=tuple(kwargs["channel_mult"]), attn_resolutions=tuple(kwargs["attn_resolutions"]),
                  image_size=int(image_shape[0]), in_channels=int(image_shape[2]), out_channels=out_channels)
    return UNetConfig(**kwargs)


def _ddep_level(config) -> float:
    """The conditioning scalar of a fine-tuned network: the pretraining's (smallest) noise level."""
    return ddep.check_noise_scales(config.segmentation.noise_scales)[0]


def _fit(model, loss_fn, batches, optimizer, steps, log_every, label, *, start=0, opt_state=None, save=None,
         save_every=0, stop=None):
    """Adam steps ``start .. steps - 1`` of ``loss_fn`` on ``model`` (updated in place).

    Step ``i`` draws its randomness from ``jax.random.key(i)``, so a run resumed at
    ``start`` with the saved ``opt_state`` (and batches from ``start``) replays the
    uninterrupted one. ``save(step, params, opt_state)`` is called every ``save_every``
    steps and when ``stop`` is requested (then the loop ends early).

    Returns:
      ``(losses logged, last step done)``.
    """
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt_state = optimizer.init(params) if opt_state is None else opt_state

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest), batch, key))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses, done = [], start
    for i in range(start, steps):
        params, opt_state, loss = step(params, opt_state, next(batches), jax.random.key(i))
        done = i + 1
        if done % log_every == 0 or done == steps:
            losses.append(float(loss))
            if distributed.is_lead():
                print(f"{label} step {done}/{steps}: loss {losses[-1]:.4f}", flush=True)
        stopping = stop is not None and stop.requested
        if save is not None and done < steps and (stopping or (save_every and done % save_every == 0)):
            save(done, params, opt_state)
        if stopping:
            break
    nnx.update(model, params)
    return losses, done


RESUME_FILE = "ddep_resume.npz"  # a DDeP pretraining's weights, Adam state and step, until it finishes


def _train_ddep_pretrain(config, workdir, stop=None) -> dict:
    from diffjax.checkpoint import StopRequest, check_model_config
    from diffjax.nn import UNet

    s, tc = config.segmentation, config.training
    dataset = builders.build_dataset(config, "train")
    mc = _seg_unet_config(config, dataset.image_shape, None)
    model = UNet(mc, rngs=nnx.Rngs(params=tc.seed))
    optimizer = builders.build_optimizer(config)
    resume_path = os.path.join(workdir, RESUME_FILE)
    start, opt_state = 0, None
    _start(config, workdir)
    if os.path.exists(resume_path):  # an interrupted run: continue it (same model, same steps)
        check_model_config(workdir, dataclasses.asdict(mc))
        params = nnx.state(model, nnx.Param)
        stored = _load_npz(resume_path, {"params": params, "opt_state": optimizer.init(params),
                                         "step": np.zeros((), np.int32)})
        nnx.update(model, stored["params"])
        start, opt_state = int(stored["step"]), stored["opt_state"]
        if distributed.is_lead():
            print(f"ddep pretrain: resuming {workdir} at step {start}", flush=True)
    else:
        os.makedirs(workdir, exist_ok=True)
        write_run_config(workdir, config)
        write_model_config(workdir, dataclasses.asdict(mc))
    batches = dataset.iterator(tc.batch_size, start_step=start, seed=tc.seed)
    stop = (stop or StopRequest()).install()
    scales = tuple(float(v) for v in s.noise_scales)

    def loss_fn(net, batch, key):
        return ddep.ddep_denoising_loss(lambda x, lvl: net(x, lvl), batch, key, scales)

    def save(step, params, opt_state):
        if distributed.is_lead():
            _save_npz(resume_path, {"params": params, "opt_state": opt_state, "step": np.int32(step)})

    t0 = time.perf_counter()
    try:
        losses, done = _fit(model, loss_fn, (b["image"] for b in batches), optimizer, int(tc.num_steps),
                            int(tc.log_every), "ddep pretrain", start=start, opt_state=opt_state, save=save,
                            save_every=int(tc.ckpt_every), stop=stop)
    finally:
        batches.close()
        stop.uninstall()
    summary = {"task": config.task.name, "step": done, "final_loss": losses[-1] if losses else None,
               "train_seconds": round(time.perf_counter() - t0, 2), "noise_scales": list(scales),
               "stopped_early": done < int(tc.num_steps), "resumed_from": start}
    if summary["stopped_early"]:  # the resume file holds the state; no finished weights yet
        return summary
    if distributed.is_lead():
        _save_npz(os.path.join(workdir, STATE_FILE), nnx.state(model, nnx.Param))
        if os.path.exists(resume_path):
            os.remove(resume_path)
    return _finish(config, workdir, summary, {"image_shape": list(dataset.image_shape)})


def _pretrained_unet(config, image_shape, num_classes):
    """The fine-tune's starting network and a record of where it came from."""
    from diffjax.nn import UNet, UNetConfig

    s = config.segmentation
    if s.init == "random":
        mc = _seg_unet_config(config, image_shape, num_classes)
        return UNet(mc, rngs=nnx.Rngs(params=config.training.seed)), {"init": "random"}
    p = s.pretrain_workdir
    if not p:
        raise ValueError("init='pretrained' needs the pretraining run: --config.segmentation.pretrain_workdir=P "
                         "(python train.py --config configs/segmentation_ddep.py:pretrain --workdir P), "
                         "or --config.segmentation.init=random for the baseline")
    if not os.path.isdir(p):
        raise ValueError(f"config.segmentation.pretrain_workdir {p} does not exist")
    p_config = load_run_config(p)
    if p_config.task.name != "ddep_pretrain" or not os.path.exists(os.path.join(p, STATE_FILE)):
        raise ValueError(f"{p} is not a finished DDeP pretraining run (task {p_config.task.name!r}); train one with "
                         "configs/segmentation_ddep.py:pretrain")
    pmc = load_model_config(p)
    if (pmc.image_size, pmc.image_size, pmc.in_channels) != tuple(image_shape):
        raise ValueError(f"pretraining run {p} takes {pmc.image_size}x{pmc.image_size}x{pmc.in_channels} images "
                         f"but the labelled images are {'x'.join(map(str, image_shape))}")
    mc = UNetConfig(**{**dataclasses.asdict(pmc), "out_channels": num_classes})
    model = UNet(mc, rngs=nnx.Rngs(params=config.training.seed))
    # Every weight but the output layer's (a new one with a channel per class).
    params = _load_npz(os.path.join(p, STATE_FILE), nnx.state(model, nnx.Param),
                       skip=lambda name: "conv_out" in name)
    nnx.update(model, params)
    return model, {"init": "pretrained", "pretrain_workdir": os.path.abspath(p)}


def _train_ddep_finetune(config, workdir) -> dict:
    s, tc = config.segmentation, config.training
    images, labels, where = labelled_data(config, "train")
    eval_images, eval_labels, eval_where = labelled_data(config, "test")
    num_classes = _num_label_classes(config)
    model, info = _pretrained_unet(config, images.shape[1:], num_classes)
    _start(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    write_run_config(workdir, config)
    write_model_config(workdir, dataclasses.asdict(model.config))
    level = _ddep_level(config)
    batch = min(int(s.batch_size), len(images))

    def batches():
        rng = np.random.default_rng(tc.seed)
        while True:
            idx = rng.choice(len(images), batch, replace=False)
            x, y = images[idx], labels[idx].astype(np.int32)
            flip = rng.random(batch) < 0.5  # horizontal flips: the only augmentation
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
            y = np.where(flip[:, None, None], y[:, :, ::-1], y)
            yield x, y

    def loss_fn(net, xy, key):
        x, y = xy
        return ddep.segmentation_loss(net(x, jnp.full((x.shape[0],), level)), y)

    t0 = time.perf_counter()
    losses, _ = _fit(model, loss_fn, batches(), optax.adam(float(s.learning_rate)), int(s.steps),
                  int(tc.log_every), "ddep finetune")
    train_seconds = time.perf_counter() - t0
    if distributed.is_lead():
        _save_npz(os.path.join(workdir, STATE_FILE), nnx.state(model, nnx.Param))
    segmenter = Segmenter(config, model=model, level=level)
    summary = _evaluate(segmenter.predict, eval_images, eval_labels, num_classes, s.feature_batch_size)
    summary.update(task=config.task.name, init=s.init, num_labelled=len(images), final_loss=losses[-1],
                   train_seconds=round(train_seconds, 2), labelled=where, evaluated=eval_where)
    info.update(num_classes=num_classes, image_shape=list(images.shape[1:]))
    return _finish(config, workdir, summary, info)


def train_segmentation(config: ml_collections.ConfigDict, workdir: str, *, stop=None) -> dict:
    """Train a segmentation run (``train.py`` with a segmentation config calls this).

    Args:
      config: a config whose ``task.name`` is one of :data:`SEGMENTATION_TASKS`.
      workdir: directory for ``config.json``, ``segmentation.npz`` (the ensemble or the
        network's weights), ``segmentation.json`` and ``metrics.json``.
      stop: the preemption flag the DDeP pretraining polls (default: a fresh one on
        SIGTERM). That stage saves its weights, Adam state and step to
        ``ddep_resume.npz`` every ``training.ckpt_every`` steps and when stopped; run the
        same command again to continue it (bit for bit as if never stopped). The other
        two stages take seconds to minutes and simply rerun.

    Returns:
      The summary written to ``metrics.json``: ``miou``, ``pixel_accuracy`` on the held-out
      images (not for pretraining), ``final_loss`` and timings. A stopped pretraining
      returns ``stopped_early=True`` and writes no ``metrics.json``.

    Raises:
      ValueError: a config off the schema or with bad segmentation settings, a missing or
        mismatched backbone / pretraining run, bad labelled files — before anything is
        written.
    """
    _check_section(config)
    if config.task.name == "ddep_pretrain":  # the long stage: checkpointed, resumable, stops on SIGTERM
        return _train_ddep_pretrain(config, os.fspath(workdir), stop)
    trainers = {"segmentation_features": _train_features, "ddep_finetune": _train_ddep_finetune}
    return trainers[config.task.name](config, os.fspath(workdir))


# -- inference -----------------------------------------------------------------------


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
        with open(os.path.join(workdir, INFO_FILE)) as f:
            info = json.load(f)
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
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir} does not exist")
    config = load_run_config(workdir)
    if config.task.name not in ("segmentation_features", "ddep_finetune"):
        raise ValueError(f"{workdir} is a {config.task.name!r} run; segmenting needs a segmentation_features or "
                         "ddep_finetune run")
    if not os.path.exists(os.path.join(workdir, STATE_FILE)):
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
    if not os.path.exists(info_path):
        raise ValueError(f"{workdir} holds no {INFO_FILE}: its segmentation training did not finish")
    with open(info_path) as f:
        shape = tuple(json.load(f)["image_shape"])
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
        os.makedirs(output, exist_ok=True)
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
