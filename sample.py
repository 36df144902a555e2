"""Sample from a trained run: ``python sample.py --workdir DIR [--num N] [--output DIR] [--config.sampling.X=v]``.

Reads the run's ``config.json`` and ``model_config.json`` from ``--workdir``,
restores the EMA parameters of the latest checkpoint and runs the sampler of
``config.sampling`` (any of ``diffjax.builders.SAMPLERS``; overrides such as
``--config.sampling.sampler=dpm_solver_pp --config.sampling.steps=20`` apply).

What it does is chosen by ``config.task.name`` (the task the run trained for):
:data:`TASKS` generate from noise (``000000.png``, ... and ``grid.png`` into
``--output``, default ``WORKDIR/generated``; the cascade writes each stage),
:data:`RESTORE_TASKS` restore every image of ``--input IN_DIR`` (SR3, Palette,
RePaint).

Multi-host: start one ``sample.py`` per host with ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or the ``JAX_*`` environment
variables; automatic on TPU VMs), as for ``train.py``. Every process restores
the checkpoint collectively, whatever layout wrote it, and runs the same
sampling program over all devices; only process 0 writes files.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from diffjax import builders, distributed
from diffjax.checkpoint import Checkpointer, abstract_state, model_config_path
from diffjax.generate import generate_batches, make_generate_fn
from diffjax.logging_utils import save_grid, save_png, to_uint8
from diffjax.sharding import data_sharding, make_mesh, replicated
from diffjax.training import TrainState

CONFIG_FILE = "config.json"


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in ``workdir`` was trained with (written by ``train.py``).

    Keys added to the schema after the run was trained take their defaults.

    Raises:
      ValueError: if ``workdir`` holds no ``config.json``.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"{workdir} holds no {CONFIG_FILE}: expected the --workdir of a train.py run "
            "(python train.py --config configs/X.py --workdir DIR)"
        )
    with open(path) as f:
        stored = ml_collections.ConfigDict(json.load(f))
    return builders.fill_missing_keys(stored, _schema())


def load_model_config(workdir: str):
    """The ``UNetConfig`` stored next to the run's checkpoints."""
    from diffjax.nn import UNetConfig

    path = model_config_path(workdir)
    if not os.path.exists(path):
        raise ValueError(f"{workdir} holds no model_config.json: expected the --workdir of a train.py run")
    with open(path) as f:
        return UNetConfig(**json.load(f))


def restore_ema_model(config: ml_collections.ConfigDict, workdir: str, mesh, step: int | None = None):
    """Restore the EMA parameters of checkpoint ``step`` (default: the latest).

    Returns:
      ``(graphdef, ema_params, model_state, model_config, step)``.
    """
    from diffjax.nn import UNet

    model_config = load_model_config(workdir)
    optimizer = builders.build_optimizer(config)
    # Abstract model: shapes only, no weights drawn.
    model = nnx.eval_shape(lambda: UNet(model_config, rngs=nnx.Rngs(0)))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)

    def init():
        p, r = _zeros_like(params), _zeros_like(model_state)
        return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=optimizer.init(p),
                          ema_params=p, model_state=r)

    checkpointer = Checkpointer(workdir, keep=max(1, config.training.keep_checkpoints), async_save=False)
    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"no checkpoint in {checkpointer.directory}: train first with train.py")
        state = checkpointer.restore(abstract_state(init, replicated(mesh)), step=step)
    finally:
        checkpointer.close()
    return graphdef, state.ema_params, state.model_state, model_config, int(state.step)


def lead_print(message: str) -> None:
    if distributed.is_lead():
        print(message)


def _zeros_like(tree):
    return jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), tree)


def run_generate(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Unconditional samples from the EMA parameters, as PNG files and a grid.

    Args:
      config: the run config with any sampling overrides.
      workdir: the training run's directory.
      output: folder for ``000000.png``, ... and ``grid.png``.
      num: number of images.

    Returns:
      ``{"output": folder, "num": num, "step": checkpoint step}``.
    """
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    mesh = make_mesh()
    sde = builders.build_sde(config)
    sampler = builders.build_sampler(config)
    graphdef, ema_params, model_state, model_config, step = restore_ema_model(config, workdir, mesh)
    batch = min(config.sampling.batch_size, num)
    image_shape = (model_config.image_size, model_config.image_size, model_config.in_channels)
    # Split each batch over every device of every host when it divides evenly;
    # the images do not depend on the split, only the speed does.
    generate = jax.jit(
        make_generate_fn(
            graphdef, model_state, sde, sampler, image_shape, batch,
            prediction=config.model.prediction,
            time_input=config.loss.time_input,
            denoise=config.sampling.denoise,
            batch_sharding=data_sharding(mesh) if batch % mesh.devices.size == 0 else None,
        ),
        out_shardings=replicated(mesh),
    )
    with tqdm(total=-(-num // batch), desc="sample batches", disable=not distributed.is_lead()) as bar:
        images = generate_batches(
            generate, ema_params, jax.random.key(config.sampling.seed), num, batch,
            progress=lambda done, total: bar.update(1),
        )
    if distributed.is_lead():
        os.makedirs(output, exist_ok=True)
        for i, img in enumerate(to_uint8(images)):
            save_png(os.path.join(output, f"{i:06d}.png"), img)
        save_grid(os.path.join(output, "grid.png"), images[:256])
    lead_print(f"wrote {num} samples (checkpoint step {step}, sampler {config.sampling.sampler}) to {output}")
    return {"output": output, "num": num, "step": step}


# What sample.py does for each config.task.name; restoration tasks
# (--input IN_DIR) add their entries here.
TASKS = {"generate": run_generate}


def run_restore(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Restore every image of ``input_dir`` with the run's Palette / RePaint task.

    Every input is checked (:func:`diffjax.pipelines.restoration.read_inputs`)
    before the model is restored; outputs are written once all are done.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.
    """
    from diffjax.parametrization import model_score_fn
    from diffjax.pipelines.restoration import read_inputs, restore_inputs, write_outputs
    from diffjax.training import model_from_state

    pipeline = builders.build_pipeline(config)
    mc = load_model_config(workdir)
    image_shape = (mc.image_size, mc.image_size, mc.in_channels)
    inputs = read_inputs(input_dir, image_shape, pipeline.input_kinds)
    sde = builders.build_sde(config)
    graphdef, ema_params, model_state, _, step = restore_ema_model(config, workdir, make_mesh())

    def make_score_fn(params, cond):
        model = model_from_state(graphdef, params, model_state)
        apply = (lambda x, c: model(x, c)) if cond is None else (lambda x, c: model(x, c, cond=cond))
        return model_score_fn(apply, sde, prediction=config.model.prediction, time_input=config.loss.time_input)

    images = restore_inputs(pipeline, inputs, make_score_fn=make_score_fn, params=ema_params, sde=sde,
                            sampler=builders.build_sampler(config), image_shape=image_shape,
                            key=jax.random.key(config.sampling.seed), batch_size=config.sampling.batch_size,
                            denoise=config.sampling.denoise, seed=config.sampling.seed)
    if distributed.is_lead():
        write_outputs(output, inputs, images)
    lead_print(f"restored {len(inputs)} images (task {config.task.name}, checkpoint step {step}) into {output}")
    return {"output": output, "num": len(inputs), "step": step}


# Tasks that restore --input IN_DIR (RePaint's run also generates without --input).
RESTORE_TASKS = {name: run_restore for name in ("repaint", "palette_inpainting", "palette_uncropping",
                                                 "palette_colorization", "palette_jpeg", "palette_multitask")}
TASKS["repaint"] = run_generate


def run_sr3(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Super-resolve every PNG of ``input_dir`` into a PNG of the same name in ``output`` (docs/sr.md).

    Inputs are all checked before anything is sampled or written; outputs larger
    than the network's input are sampled as blended tiles.
    """
    from diffjax.logging_utils import save_png, to_uint8
    from diffjax.pipelines.sr3 import make_sr_fn, read_low_res_folder
    from diffjax.tasks.sr3 import upsample

    pipeline = builders.build_pipeline(config)
    mc = load_model_config(workdir)
    inputs = read_low_res_folder(input_dir, channels=mc.in_channels, scale=pipeline.scale, tile=mc.image_size)
    graphdef, params, model_state, _, step = restore_ema_model(config, workdir, make_mesh())
    aug = getattr(pipeline, "sample_aug_level", 0.0) if pipeline.uses_aug_level else None
    sr = jax.jit(make_sr_fn(graphdef, model_state, builders.build_sde(config), builders.build_sampler(config),
                            channels=mc.in_channels, tile=mc.image_size, overlap=pipeline.tile_overlap,
                            prediction=config.model.prediction, time_input=config.loss.time_input,
                            denoise=config.sampling.denoise, aug_level=aug, clip_x0=pipeline.clip_denoised,
                            projection=getattr(pipeline, "projection", "none")))
    key, results = jax.random.key(config.sampling.seed), []
    steps = f"{config.sampling.sampler}, {config.sampling.get('steps', '?')} steps per image"
    for i, (name, low) in enumerate(tqdm(inputs, desc=f"super-resolve ({steps})", unit="image",
                                             disable=not distributed.is_lead())):
        results.append((name, np.asarray(sr(params, upsample(low[None], pipeline.scale), jax.random.fold_in(key, i),
                                            low[None]))[0]))
    if distributed.is_lead():
        os.makedirs(output, exist_ok=True)
        for name, image in results:
            save_png(os.path.join(output, name), to_uint8(image))
    lead_print(f"super-resolved {len(results)} images x{pipeline.scale} (checkpoint step {step}) into {output}")
    return {"output": output, "num": len(results), "step": step}


def run_cascade(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Class labels -> base stage -> SR stages; writes each stage's images (docs/sr.md)."""
    from diffjax.logging_utils import save_grid, save_png, to_uint8
    from diffjax.pipelines.cascade import Stage, sample_cascade

    stages, seen, run_dir, run_config = [], set(), workdir, config
    while True:  # walk down from this SR stage to the base
        if os.path.abspath(run_dir) in seen:
            raise ValueError(f"the cascade's previous_workdir links loop back to {run_dir}")
        seen.add(os.path.abspath(run_dir))
        pipeline = builders.build_pipeline(run_config)
        graphdef, params, model_state, mc, _ = restore_ema_model(run_config, run_dir, make_mesh())
        stages.insert(0, Stage(graphdef, params, model_state, builders.build_sde(run_config),
                               builders.build_sampler(run_config), (mc.image_size, mc.image_size, mc.in_channels),
                               run_config.model.prediction, run_config.loss.time_input, run_config.sampling.denoise,
                               pipeline if run_config.task.name == "cascade" else None, mc.num_classes))
        if run_config.task.name != "cascade":
            break
        if not pipeline.previous_workdir:
            raise ValueError(f"{run_dir}: set --config.task.cascade.previous_workdir to the stage below's workdir")
        run_dir = pipeline.previous_workdir
        run_config = load_run_config(run_dir)
    labels = np.arange(num) % max(stages[0].num_classes, 1)
    with tqdm(total=len(stages), desc=f"cascade stages ({num} images)", disable=not distributed.is_lead()) as bar:
        images = sample_cascade(stages, labels, jax.random.key(config.sampling.seed), progress=lambda i: bar.update(1))
    if distributed.is_lead():
        for i, stage_images in enumerate(images):
            folder = os.path.join(output, f"stage{i}_{stage_images.shape[1]}px")
            for j, img in enumerate(to_uint8(stage_images)):
                save_png(os.path.join(folder, f"{j:06d}_class{labels[j]}.png"), img)
            save_grid(os.path.join(folder, "grid.png"), stage_images[:256])
    lead_print(f"cascade of {len(stages)} stages wrote {num} images per stage into {output}")
    return {"output": output, "num": num, "stages": len(stages)}


RESTORE_TASKS["sr3"] = run_sr3
TASKS["cascade"] = run_cascade


def sample_from_workdir(config: ml_collections.ConfigDict, workdir: str, *, output: str | None = None,
                        num: int | None = None, input_dir: str | None = None) -> dict:
    """Dispatch on ``config.task.name`` (the in-process entry point tests use)."""
    task = config.task.name
    if task in RESTORE_TASKS and (input_dir is not None or task not in TASKS):
        if input_dir is None:
            raise ValueError(f"this run's task {task!r} restores images: pass --input IN_DIR (and --output OUT_DIR)")
        builders.validate_config(config, _schema())
        return RESTORE_TASKS[task](config, workdir, output or os.path.join(workdir, "restored"), input_dir)
    if task not in TASKS:
        raise ValueError(f"unknown sampling task {task!r}; expected one of {sorted(TASKS)}")
    if input_dir is not None:
        raise ValueError(f"--input is for restoration tasks; this run's task {task!r} generates from noise")
    builders.validate_config(config, _schema())
    output = output or os.path.join(workdir, "generated")
    num = config.sampling.num_samples if num is None else num
    return TASKS[task](config, workdir, output, num)


def _schema():
    from configs.default import get_base_config

    return get_base_config()


def _workdir_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--workdir="):
            return arg.split("=", 1)[1]
        if arg == "--workdir" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def cli(argv: list[str]) -> None:
    """Parse flags against the config stored in ``--workdir`` and sample."""
    from absl import app, flags
    from absl import logging as absl_logging
    from ml_collections import config_flags

    workdir = _workdir_from_argv(argv)
    if workdir is None:
        raise SystemExit("sample.py needs --workdir DIR (the directory of a train.py run)")
    try:
        base = load_run_config(workdir)
        builders.check_override_keys(argv, base)
    except ValueError as err:
        raise SystemExit(str(err))
    # The stored config is the default, so --config.sampling.* overrides type-check against it.
    config_flag = config_flags.DEFINE_config_dict("config", base, "the run's config (overridable)", lock_config=True)
    flags.DEFINE_string("workdir", None, "directory of a train.py run")
    num_flag = flags.DEFINE_integer("num", None, "number of samples (default config.sampling.num_samples)")
    output_flag = flags.DEFINE_string("output", None, "output folder (default WORKDIR/generated)")
    input_flag = flags.DEFINE_string("input", None, "input folder, for restoration tasks")
    coordinator_flag = flags.DEFINE_string(
        "coordinator_address", None, "multi-host: host:port of process 0 (default $JAX_COORDINATOR_ADDRESS)")
    num_processes_flag = flags.DEFINE_integer("num_processes", None, "multi-host: number of processes")
    process_id_flag = flags.DEFINE_integer("process_id", None, "multi-host: this process's index")

    def main(_):
        absl_logging.set_verbosity(absl_logging.WARNING)
        try:
            # Before any array exists: every process restores the checkpoint
            # collectively and runs the same sampling program; process 0 writes.
            distributed.initialize(coordinator_flag.value, num_processes_flag.value, process_id_flag.value)
            sample_from_workdir(config_flag.value, workdir, output=output_flag.value, num=num_flag.value,
                                input_dir=input_flag.value)
        except ValueError as err:
            # Bad input is the user's to fix: print the message, not a traceback.
            raise SystemExit(f"error: {err}")

    app.run(main, argv)


if __name__ == "__main__":
    cli(sys.argv)
