"""Runs from Python: what ``train.py`` and ``sample.py`` do, importable (docs/runs.md).

* :func:`train` trains a run (a ConfigDict or a ``"path.py[:arg]"`` config file,
  with overrides) into a workdir; ``train.py`` is a thin command line over the
  same :func:`diffjax.run_kinds.train_and_evaluate`.
* :func:`load_run` restores a run's EMA parameters onto the devices present as a
  :class:`Run`: ``run.generate(n)``, ``run.restore(images, masks)`` (arrays in,
  arrays out) and ``run.score_fn`` for :func:`diffjax.sample` / :mod:`diffjax.tasks`.
* :func:`sample_from_workdir` is ``sample.py``: the same :class:`Run` methods,
  writing PNG files.

Tasks dispatch through explicit dicts keyed by ``config.task.name``:
:data:`GENERATORS` / :data:`RESTORERS` (the array methods) and :data:`TASKS` /
:data:`RESTORE_TASKS` (the command line's: ``task(config, workdir, output,
num)`` and ``task(config, workdir, output, input_dir)``). A task added later
plugs in with one entry in each.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from diffjax import builders, distributed
from diffjax.builders import load_model_config, restore_ema_model
from diffjax.outputs import check_output_dir
from diffjax.logging_utils import save_class_samples, save_grid, save_png, save_samples, to_uint8
from diffjax.run_base import Run, check_num, check_workdir_path, lead_print, write_named
from diffjax.run_config import apply_overrides, get_base_config, load_run_config, resolve_config
from diffjax import ldm as _ldm  # latent diffusion's entries of the task tables (docs/ldm.md)
from diffjax.run_lsgm import run_lsgm_generate
from diffjax.run_segmentation import run_segment
from diffjax.run_kinds import kind_of, train_and_evaluate

__all__ = [
    "train",
    "load_run",
    "Run",
    "GENERATORS",
    "RESTORERS",
    "sample_from_workdir",
    "sample_from_folder",
    "TASKS",
    "RESTORE_TASKS",
    "run_translate",
    "restore_ema_model",
    "load_model_config",
]


def train(config, workdir: str, overrides: dict | None = None) -> dict:
    """Train a run into ``workdir`` (resuming it if it holds checkpoints), then evaluate it.

    The same as ``python train.py --config CONFIG --workdir WORKDIR
    [--config.a.b=v ...]``, in this process (join a multi-host job first with
    :func:`diffjax.distributed.initialize` if there is one).

    Args:
      config: an ``ml_collections.ConfigDict`` (e.g. ``configs/ddpm_digits.py``'s
        ``get_config("smoke")``), a config file as ``"path/to/config.py[:arg]"``,
        or a bundled config by name (``"ddpm_digits:smoke"``, from any directory).
      workdir: directory for checkpoints, logs, samples and metrics.
      overrides: dotted keys to values applied on top, checked like the command
        line's ``--config.a.b=v`` (e.g. ``{"training.num_steps": 100}``).

    Returns:
      The run's summary: ``step``, ``final_loss``, ``stopped_early`` and, when
      the demo evaluation ran, its metrics.

    Raises:
      ValueError: a config that is neither a ConfigDict nor an existing file, an
        unknown override key (naming the closest valid one) or a mistyped value,
        a config that does not match the schema, a workdir that cannot be
        written or holds a different model — all before anything is written.
      FloatingPointError: the loss became NaN/inf and
        ``config.training.nonfinite`` is ``"stop"``.
    """
    workdir = check_workdir_path(workdir)
    return train_and_evaluate(resolve_config(config, overrides), workdir)


# What run.generate / run.restore do for each config.task.name, over every kind
# (each kind's Run class holds its own entries).
GENERATORS = {**Run.GENERATORS, **_ldm.LatentRun.GENERATORS}
RESTORERS = {**Run.RESTORERS, **_ldm.LatentRun.RESTORERS}


def load_run(workdir: str, overrides: dict | None = None) -> Run:
    """Restore a finished or running run from its workdir (the EMA parameters of its latest checkpoint).

    The parameters are put on whatever devices are present (replicated), so a
    run trained on a TPU pod loads on a laptop's CPU and the other way round.

    Args:
      workdir: the ``--workdir`` of a ``train.py`` / :func:`train` run.
      overrides: dotted keys to values applied to the stored config, checked
        like ``sample.py``'s ``--config.a.b=v`` (e.g. ``{"sampling.steps": 20}``).

    Returns:
      A :class:`Run` of the task's kind (:func:`diffjax.run_kinds.kind_of`):
      :class:`Run` for diffusion runs, :class:`diffjax.ldm.LatentRun` (plus
      ``encode`` / ``decode``) for latent ones, :class:`diffjax.run_lsgm.LSGMRun`
      (``generate``, ``nll_bound``, ``score_fn``) for LSGM and
      :class:`diffjax.run_segmentation.Segmenter` (``predict``, ``log_probs``)
      for segmentation; ``run.capabilities`` lists what it can do, and any
      other capability raises ValueError saying so.

    Raises:
      ValueError: a missing workdir, one without ``config.json``,
        ``model_config.json`` or a checkpoint, an unknown override key (naming
        the closest valid one) or a mistyped value, or a DDeP pretraining run
        (it does not segment; fine-tune it first).
    """
    workdir = check_workdir_path(workdir)
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir} does not exist; expected the --workdir of a train.py run")
    from diffjax.interop.diffusers_latent import load_folder_run
    from diffjax.interop.diffusers_run import is_diffusers_folder

    if is_diffusers_folder(workdir):  # a published diffusers pipeline / UNet folder
        if overrides:
            raise ValueError(f"{workdir} is a diffusers folder, which has no diffjax config to override "
                             f"({sorted(overrides)}); use diffjax.interop.load_diffusers_run(path, pipeline=..., "
                             "steps=..., eta=...) for another sampling loop")
        # LDM pipelines and ADM super-resolution folders get their own run kinds
        return load_folder_run(workdir)
    config = apply_overrides(load_run_config(workdir), overrides)
    return kind_of(config).load(config, workdir)


# -- sample.py: the same, writing files -----------------------------------------


def run_generate(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Samples from the EMA parameters, as PNG files and a grid.

    An unconditional run writes ``NNNNNN.png``; a class-conditional one writes
    ``num`` images per class, ``NNNNNN_classK.png``, and ``grid.png``.

    Args:
      config: the run config with any sampling overrides.
      workdir: the training run's directory.
      output: folder for ``000000.png``, ... and ``grid.png``.
      num: number of images.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.

    Raises:
      ValueError: ``num < 1`` or a workdir without a checkpoint.
    """
    check_num(num)
    run = Run(config, workdir)
    classes = run.model_config.num_classes
    # A class-conditional network: num images per class, as the latent runs (ldm.run_ldm_generate).
    labels = np.repeat(np.arange(classes), num) if classes else None
    total = num * classes if classes else num
    batch = min(config.sampling.batch_size, total)
    with tqdm(total=-(-total // batch), desc="sample batches", disable=not distributed.is_lead()) as bar:
        images = run._generate(total, jax.random.key(config.sampling.seed), labels=labels,
                               progress=lambda done, total: bar.update(1))
    if distributed.is_lead():
        if classes:
            save_class_samples(output, images, labels)
        else:
            save_samples(output, images)
    per_class = f", {num} per class for {classes} classes" if classes else ""
    lead_print(f"wrote {total} samples (checkpoint step {run.step}, sampler {config.sampling.sampler}{per_class}) "
               f"to {output}")
    return {"output": output, "num": total, "step": run.step}


def run_restore(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Restore every image of ``input_dir`` with the run's Palette / RePaint task.

    Every input is checked (:func:`diffjax.pipelines.restoration.read_inputs`)
    before the model is restored; outputs are written once all are done.
    Images larger than the model are restored in blended tiles.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.

    Raises:
      ValueError: bad inputs (naming the file), or a workdir without a checkpoint.
    """
    from diffjax.pipelines.restoration import read_inputs, write_outputs

    mc = load_model_config(workdir)
    inputs = read_inputs(input_dir, (mc.image_size, mc.image_size, mc.in_channels),
                         builders.build_pipeline(config).input_kinds)
    run = Run(config, workdir)
    images = run._restore_inputs(inputs)
    if distributed.is_lead():
        write_outputs(output, inputs, images)
    lead_print(f"restored {len(inputs)} images (task {config.task.name}, checkpoint step {run.step}) into {output}")
    return {"output": output, "num": len(inputs), "step": run.step}


def run_sr3(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Super-resolve every PNG of ``input_dir`` into a PNG of the same name in ``output`` (docs/sr.md).

    Inputs are all checked before anything is sampled or written; outputs larger
    than the network's input are sampled as blended tiles.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.

    Raises:
      ValueError: bad inputs (naming every offending file), or a workdir without a checkpoint.
    """
    from diffjax.pipelines.sr3 import read_low_res_folder

    pipeline = builders.build_pipeline(config)
    mc = load_model_config(workdir)
    inputs = read_low_res_folder(input_dir, channels=mc.in_channels, scale=pipeline.scale, tile=mc.image_size)
    run = Run(config, workdir)
    steps = f"{config.sampling.sampler}, {config.sampling.get('steps', '?')} steps per image"
    with tqdm(total=len(inputs), desc=f"super-resolve ({steps})", unit="image",
              disable=not distributed.is_lead()) as bar:
        images = run._super_resolve([low for _, low in inputs], key=jax.random.key(config.sampling.seed),
                                    progress=lambda done, total: bar.update(1))
    write_named(output, inputs, images)
    lead_print(f"super-resolved {len(images)} images x{pipeline.scale} (checkpoint step {run.step}) into {output}")
    return {"output": output, "num": len(images), "step": run.step}


def run_cascade(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Class labels -> base stage -> SR stages; writes each stage's images (docs/sr.md).

    Returns:
      ``{"output": folder, "num": num, "stages": number of stages}``.

    Raises:
      ValueError: a missing or looping ``previous_workdir`` chain, or a stage without a checkpoint.
    """
    run = Run(config, workdir)
    with tqdm(desc=f"cascade stages ({num} images)", disable=not distributed.is_lead()) as bar:
        images, labels = run._cascade(num, jax.random.key(config.sampling.seed), progress=lambda i: bar.update(1))
    if distributed.is_lead():
        for i, stage_images in enumerate(images):
            folder = os.path.join(output, f"stage{i}_{stage_images.shape[1]}px")
            for j, img in enumerate(to_uint8(stage_images)):
                save_png(os.path.join(folder, f"{j:06d}_class{labels[j]}.png"), img)
            save_grid(os.path.join(folder, "grid.png"), stage_images[:256])
    lead_print(f"cascade of {len(images)} stages wrote {num} images per stage into {output}")
    return {"output": output, "num": num, "stages": len(images)}


def run_translate(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Translate every PNG of ``input_dir`` with ``config.translation.method`` (SDEdit / EGSDE).

    Every check (method, score run, classifier run, input files) runs before
    the model is restored and before anything is written (docs/translation.md).

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step, "method": method}``.

    Raises:
      ValueError: see :meth:`Run.translate`, and input files of another size.
    """
    from diffjax.pipelines.translation import TRANSLATION_METHODS, read_translation_inputs, score_run_problem

    method = config.translation.method
    if method not in TRANSLATION_METHODS:
        raise ValueError(f"translation.method must be one of {list(TRANSLATION_METHODS)}, got {method!r}")
    problem = score_run_problem(config)
    if problem:
        raise ValueError(f"{workdir}: {problem}")
    mc = load_model_config(workdir)
    inputs = read_translation_inputs(input_dir, (mc.image_size, mc.image_size, mc.in_channels))
    run = Run(config, workdir)
    classifier = run._translation_classifier(method)
    images = np.stack([image for _, image in inputs])
    batch = min(config.sampling.batch_size, len(images))
    with tqdm(total=-(-len(images) // batch), desc=f"{method} batches", disable=not distributed.is_lead()) as bar:
        out = run._translate(images, method, classifier, key=jax.random.key(config.sampling.seed),
                             progress=lambda done: bar.update(1))
    write_named(output, inputs, out)
    lead_print(f"{method}: translated {len(images)} images (t0 {config.translation.t0}, checkpoint step {run.step}) "
               f"into {output}")
    return {"output": output, "num": len(images), "step": run.step, "method": method}


# What sample.py does for each config.task.name. A task plugs in with one entry:
# TASKS generate from noise, task(config, workdir, output, num) -> summary dict;
# RESTORE_TASKS restore --input IN_DIR, task(config, workdir, output, input_dir).
# A task in both (RePaint) generates without --input and restores with it.

TASKS = {
    "generate": run_generate,
    "repaint": run_generate,
    "cascade": run_cascade,
    "ldm": _ldm.run_ldm_generate,
    "lsgm": run_lsgm_generate,
}
RESTORE_TASKS = {
    "sr3": run_sr3,
    "repaint": run_restore,
    "palette_inpainting": run_restore,
    "palette_uncropping": run_restore,
    "palette_colorization": run_restore,
    "palette_jpeg": run_restore,
    "palette_multitask": run_restore,
    "conditional_sr": run_sr3,
    "conditional_inpainting": run_restore,
    "autoencoder": _ldm.run_reconstruct,
    "ldm_sr": _ldm.run_ldm_sr,
    "ldm_inpainting": _ldm.run_ldm_inpaint,
    # Segmentation runs write name_label.png + name_uncertainty.png (docs/segmentation.md).
    "segmentation_features": run_segment,
    "ddep_finetune": run_segment,
    "ddep_pretrain": run_segment,  # refuses: a pretraining run does not segment
}


def sample_from_folder(workdir: str, *, output: str | None = None, num: int = 16, seed: int = 0,
                       input_dir: str | None = None) -> dict:
    """``sample.py --workdir W`` for a diffusers folder (a ``python -m diffjax.convert`` workdir).

    Generates with the folder's own pipeline loop (``dj.load_run(W).generate``).

    Args:
      workdir: the folder.
      output: output folder (default ``WORKDIR/generated``).
      num: images to generate.
      seed: the key of ``run.generate``.
      input_dir: low-resolution images for an ``LDMSuperResolutionPipeline`` folder (default output
        ``WORKDIR/restored``).

    Returns:
      ``{"output": folder, "num": images written}``.
    """
    if input_dir is not None:
        from diffjax.interop.diffusers_latent import super_resolve_folder

        output = check_output_dir(output or os.path.join(workdir, "restored"), [input_dir])
        return super_resolve_folder(load_run(workdir), input_dir, output, seed=seed)
    check_num(num)
    output = check_output_dir(output or os.path.join(workdir, "generated"), [workdir])
    images = load_run(workdir).generate(num, key=seed)
    if distributed.is_lead():
        save_samples(output, images * 2 - 1)  # generate gives [0, 1]; save_samples takes [-1, 1]
    lead_print(f"wrote {num} samples to {output}")
    return {"output": output, "num": num}


def sample_from_workdir(config: ml_collections.ConfigDict, workdir: str, *, output: str | None = None,
                        num: int | None = None, input_dir: str | None = None) -> dict:
    """What ``sample.py`` does: dispatch on ``config.task.name`` through :data:`TASKS` / :data:`RESTORE_TASKS`.

    Args:
      config: the run's config (:func:`diffjax.run_config.load_run_config`) with
        any overrides (e.g. ``sampling.sampler``).
      workdir: the training run's directory.
      output: output folder (default ``WORKDIR/generated``, or ``WORKDIR/restored``
        for restoration).
      num: images to generate (default ``config.sampling.num_samples``).
      input_dir: a folder of inputs, for restoration tasks.

    Returns:
      The task's summary dict (``output``, ``num``, ...).

    Raises:
      ValueError: an unknown task, ``input_dir`` missing for a restoration-only
        task or given to a generating one, a config off the schema, or bad inputs.
    """
    task = config.task.name
    if config.get("translation") is not None and config.translation.method:
        # SDEdit / EGSDE on an unconditional score run (docs/translation.md).
        if input_dir is None:
            raise ValueError(f"translation.method={config.translation.method!r} translates images: pass --input IN_DIR")
        builders.validate_config(config, get_base_config())
        output = check_output_dir(output or os.path.join(workdir, "translated"), [input_dir])
        return run_translate(config, workdir, output, input_dir)
    if task in RESTORE_TASKS and (input_dir is not None or task not in TASKS):
        if input_dir is None:
            raise ValueError(f"this run's task {task!r} restores images: pass --input IN_DIR (and --output OUT_DIR)")
        builders.validate_config(config, get_base_config())
        output = check_output_dir(output or os.path.join(workdir, "restored"), [input_dir])
        return RESTORE_TASKS[task](config, workdir, output, input_dir)
    if task not in TASKS:
        raise ValueError(f"unknown sampling task {task!r}; expected one of {sorted(TASKS)}")
    if input_dir is not None:
        raise ValueError(f"--input is for restoration and translation; this run's task {task!r} generates from noise "
                         "unless a translation method is set: add --config.translation.method=sdedit (or egsde) "
                         "to translate the images of --input")
    builders.validate_config(config, get_base_config())
    output = check_output_dir(output or os.path.join(workdir, "generated"))
    num = config.sampling.num_samples if num is None else num
    return TASKS[task](config, workdir, output, num)
