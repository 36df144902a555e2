"""Training segmentation runs (docs/segmentation.md): ``segmentation_features`` (Baranchuk et al.: an MLP
ensemble on a network's per-pixel features), ``ddep_pretrain`` (DDeP: denoising pretraining of a UNet) and
``ddep_finetune`` (that UNet, or a fresh one, fine-tuned on the labelled images). Every run ends with the
held-out mIoU and pixel accuracy in ``metrics.json``; weights are plain ``.npz`` files (never pickled).
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

from diffjax import builders, distributed, fingerprint
from diffjax import workdir_io
from diffjax.builders import load_model_config
from diffjax.checkpoint import write_model_config
from diffjax.data.pipeline import host_rows
from diffjax.metrics import confusion_matrix, mean_iou_from_confusion
from diffjax.run_checks import check_int, check_workdir_path, check_workdir_writable
from diffjax.run_config import get_base_config, load_run_config, write_run_config  # noqa: F401  (load_run_config re-exported)
# Re-exported: tests and benchmarks reach _flat, _load_npz, _redraw_zero_kernels, Segmenter, ... here.
from diffjax.segmenter import (DDEP_INITS, FEATURE_KINDS, INFO_FILE, SEGMENTATION_TASKS, STATE_FILE,  # noqa: F401
                               Segmenter, _ddep_level, _flat, _load_npz, _num_label_classes, _redraw_zero_kernels,
                               _save_npz, _seg_unet_config, build_feature_fn, label_palette, labelled_data,
                               load_segmenter)
from diffjax.sharding import make_mesh
from diffjax.tasks import ddep, pixel_classifier as pc
from diffjax.tasks import segmentation as seg
from diffjax.trainer import LoopTask, check_run_workdir, host_batches, prepare_run, train_loop
from diffjax.training import create_train_state, make_train_step

__all__ = ["SEGMENTATION_TASKS", "FEATURE_KINDS", "DDEP_INITS", "STATE_FILE", "train_segmentation", "labelled_data",
           "build_feature_fn", "Segmenter", "load_segmenter", "label_palette"]


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
        check_int(s[name], f"config.segmentation.{name}", minimum)
    if not float(s.learning_rate) > 0:
        raise ValueError(f"config.segmentation.learning_rate must be positive, got {s.learning_rate!r}")
    ddep.check_noise_scales(s.noise_scales)


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
        workdir_io.write_text(os.path.join(workdir, INFO_FILE), json.dumps(info, indent=2, sort_keys=True))
        workdir_io.write_text(os.path.join(workdir, "metrics.json"), json.dumps(summary, indent=2))
        print(f"{config.task.name}: {json.dumps(summary)}")
    return summary


def _train_features(config, workdir) -> dict:
    s = config.segmentation
    images, labels, where = labelled_data(config, "train")
    eval_images, eval_labels, eval_where = labelled_data(config, "test")
    num_classes = _num_label_classes(config)
    feature_fn, info = build_feature_fn(config, images.shape[1:])
    check_workdir_writable(check_workdir_path(workdir))
    workdir_io.makedirs(workdir)
    write_run_config(workdir, config)
    if "backbone_workdir" in info and distributed.is_lead():  # sample.py refuses a backbone changed since (diffjax.fingerprint)
        fingerprint.record(workdir, "backbone", info["backbone_workdir"])
    t0 = time.perf_counter()
    if s.feature_memmap:  # on disk; the ensemble reads chunk_pixels pixels' features at a time
        path = workdir_io.scratch_path(workdir, "features.npy")  # a memmap needs a local file
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


RESUME_FILE = "ddep_resume.npz"  # a DDeP pretraining's training state and step, until it finishes


class _ResumeFile:
    """DDeP pretraining's checkpoint for :func:`diffjax.trainer.train_loop`: one ``ddep_resume.npz``.

    Replaced atomically at each save (process 0 writes) and removed once the run
    has written its finished weights (``segmentation.npz``); plain arrays, never pickled.
    """

    def __init__(self, workdir: str):
        self.directory = os.path.join(workdir, RESUME_FILE)

    def latest_step(self) -> int | None:
        if not workdir_io.exists(self.directory):
            return None
        stored = workdir_io.load_npz(self.directory)
        if not any(name.startswith("['state']") for name in stored):  # params / opt_state / step
            raise ValueError(
                f"{self.directory} was written by an older diffjax, whose DDeP pretraining keyed its steps "
                "with key(step) and stored no loop state; this version cannot continue it bit for bit. Delete "
                "the file to pretrain again from step 0 (or finish the run with the diffjax that started it)")
        return int(stored["['step']"])

    def save(self, step: int, state) -> None:
        if distributed.is_lead():
            _save_npz(self.directory, {"state": state, "step": np.int32(step)})

    def restore(self, target):
        stored = _load_npz(self.directory, {"state": target, "step": np.zeros((), np.int32)})["state"]
        return jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), stored, target)

    def wait(self) -> None:
        pass

    close = wait


def _unet_task(config, workdir, model, optimizer, loss_fn, batches, num_steps: int, batch_size: int,
               **kwargs) -> LoopTask:
    """The loop task of a DDeP stage: ``model`` trained with the plain train step (``loss_fn`` as in
    :func:`diffjax.training.make_train_step`), step ``s`` keyed by ``fold_in(key(training.seed), s)``."""
    model_config = dataclasses.asdict(model.config)

    def write_files():
        write_run_config(workdir, config)
        write_model_config(workdir, model_config)

    graphdef, init = create_train_state(model, optimizer)
    step = make_train_step(graphdef, loss_fn, optimizer, config.training.ema_decay)
    return LoopTask(make_mesh(), lambda: init, step, batches, num_steps, batch_size, write_files=write_files,
                    nonfinite_hint="a lower learning rate or --config.optim.grad_clip", **kwargs)


def _train_ddep_pretrain(config, workdir, stop=None) -> dict:
    from diffjax.nn import UNet

    s, tc = config.segmentation, config.training
    prepare_run(config)
    dataset = builders.build_dataset(config, "train")
    mc = _seg_unet_config(config, dataset.image_shape, None)
    model = UNet(mc, rngs=nnx.Rngs(params=tc.seed))
    check_run_workdir(check_workdir_path(workdir), dataclasses.asdict(mc))
    scales = tuple(float(v) for v in s.noise_scales)

    def loss_fn(apply_fn, x, key, mask=None):
        return ddep.ddep_denoising_loss(apply_fn, x, key, scales), {}

    task = _unet_task(config, workdir, model, builders.build_optimizer(config), loss_fn,
                      lambda start: host_batches(dataset, tc, start, lambda b, _: {"image": b["image"]}),
                      tc.num_steps, tc.batch_size, checkpointer=lambda workdir, _: _ResumeFile(workdir),
                      save_final=False, desc="ddep pretrain")
    result = train_loop(task, workdir, config, stop=stop)
    if result.start and distributed.is_lead():
        print(f"ddep pretrain: resumed {workdir} at step {result.start}", flush=True)
    summary = {"task": config.task.name, "step": result.step, "final_loss": result.metrics.get("loss"),
               "train_seconds": round(result.seconds, 2), "noise_scales": list(scales),
               "stopped_early": result.step < tc.num_steps, "resumed_from": result.start}
    if summary["stopped_early"]:  # the resume file holds the state; no finished weights yet
        return summary
    if distributed.is_lead():
        _save_npz(os.path.join(workdir, STATE_FILE), result.state.params)
        if workdir_io.exists(os.path.join(workdir, RESUME_FILE)):
            workdir_io.remove(os.path.join(workdir, RESUME_FILE))
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
    if not workdir_io.isdir(p):
        raise ValueError(f"config.segmentation.pretrain_workdir {p} does not exist")
    p_config = load_run_config(p)
    if p_config.task.name != "ddep_pretrain" or not workdir_io.exists(os.path.join(p, STATE_FILE)):
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
    return model, {"init": "pretrained", "pretrain_workdir": workdir_io.absolute(p)}


def _train_ddep_finetune(config, workdir, stop=None) -> dict:
    s, tc = config.segmentation, config.training
    images, labels, where = labelled_data(config, "train")
    eval_images, eval_labels, eval_where = labelled_data(config, "test")
    num_classes = _num_label_classes(config)
    model, info = _pretrained_unet(config, images.shape[1:], num_classes)
    check_workdir_writable(check_workdir_path(workdir))
    level = _ddep_level(config)
    batch = min(int(s.batch_size), len(images))
    prepare_run(config, batch)

    def batches(start):  # no checkpoints: always from step 0; every host draws the global batch, keeps its rows
        rng, rows = np.random.default_rng(tc.seed), host_rows(batch, jax.process_index(), jax.process_count())
        while True:
            idx = rng.choice(len(images), batch, replace=False)
            x, y = images[idx], labels[idx].astype(np.int32)
            flip = rng.random(batch) < 0.5  # horizontal flips: the only augmentation
            x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
            y = np.where(flip[:, None, None], y[:, :, ::-1], y)
            yield {"image": x[rows], "target": y[rows]}

    def loss_fn(apply_fn, x, key, mask=None, target=None):
        return ddep.segmentation_loss(apply_fn(x, jnp.full((x.shape[0],), level)), target), {}

    task = _unet_task(config, workdir, model, optax.adam(float(s.learning_rate)), loss_fn, batches, int(s.steps),
                      batch, checkpointer=None, desc="ddep finetune")
    result = train_loop(task, workdir, config, stop=stop)
    if result.stopped_early:
        return {"task": config.task.name, "step": result.step, "stopped_early": True}
    nnx.update(model, result.state.params, result.state.model_state)  # the model's own buffers were donated
    if distributed.is_lead():
        _save_npz(os.path.join(workdir, STATE_FILE), result.state.params)
    segmenter = Segmenter(config, model=model, level=level)
    summary = _evaluate(segmenter.predict, eval_images, eval_labels, num_classes, s.feature_batch_size)
    summary.update(task=config.task.name, init=s.init, num_labelled=len(images), final_loss=result.metrics["loss"],
                   train_seconds=round(result.seconds, 2), labelled=where, evaluated=eval_where)
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
    if config.task.name == "segmentation_features":
        return _train_features(config, os.fspath(workdir))
    # DDeP's stages train in the one loop (diffjax.trainer); the long one, pretraining, is checkpointed and resumes.
    trainers = {"ddep_pretrain": _train_ddep_pretrain, "ddep_finetune": _train_ddep_finetune}
    return trainers[config.task.name](config, os.fspath(workdir), stop)
