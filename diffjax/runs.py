"""Runs from Python: what ``train.py`` and ``sample.py`` do, importable (docs/runs.md).

:func:`train` and :func:`load_run` are ``dj.train`` / ``dj.load_run``; :func:`sample_from_workdir`
is ``sample.py``, dispatching on ``config.task.name`` through :data:`TASKS` (from noise) and
:data:`RESTORE_TASKS` (``--input``) to :mod:`diffjax.run_files`' writers.
"""

from __future__ import annotations

import os

import ml_collections

from diffjax import builders, distributed
from diffjax import workdir_io
from diffjax.builders import load_model_config, restore_ema_model  # noqa: F401  (re-exported)
from diffjax.outputs import check_output_dir
from diffjax.logging_utils import save_samples
from diffjax.run_base import Run, check_num, check_workdir_path, lead_print
from diffjax.run_config import apply_overrides, get_base_config, load_run_config, resolve_config
from diffjax import ldm as _ldm  # latent diffusion's entries of the task tables (docs/ldm.md)
from diffjax.run_files import write_cascade, write_generated, write_restored, write_segmented, write_translated
from diffjax.run_kinds import kind_of, train_and_evaluate
from diffjax.segmenter import SEGMENTATION_TASKS

run_translate = write_translated  # the name sample.py's translation writer had

__all__ = ["train", "load_run", "Run", "GENERATORS", "RESTORERS", "sample_from_workdir", "sample_from_folder", "TASKS",
           "RESTORE_TASKS", "run_translate", "restore_ema_model", "load_model_config"]


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
    if not workdir_io.isdir(workdir):
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


# What sample.py does for each config.task.name: TASKS generate from noise, writer(config, workdir, output, num);
# RESTORE_TASKS restore --input IN_DIR, writer(config, workdir, output, input_dir). RePaint is in both: it
# generates without --input and restores with it. DDeP pretraining is listed to refuse (it does not segment).
TASKS = {**dict.fromkeys(("generate", "repaint", "ldm", "lsgm"), write_generated), "cascade": write_cascade}
RESTORE_TASKS = {**dict.fromkeys(_ldm.LatentRun.FILE_RESTORERS, write_restored),
                 **dict.fromkeys(SEGMENTATION_TASKS, write_segmented)}


def sample_from_folder(workdir: str, *, output: str | None = None, num: int = 16, seed: int = 0,
                       input_dir: str | None = None) -> dict:
    """``sample.py --workdir W`` for a diffusers folder (a ``python -m diffjax.convert`` workdir).

    Writes ``num`` images of the folder's own pipeline loop (``dj.load_run(W).generate(num, key=seed)``) to
    ``output`` (default ``WORKDIR/generated``), or super-resolves the low-resolution images of ``input_dir`` for
    an ``LDMSuperResolutionPipeline`` folder (default ``WORKDIR/restored``). Returns ``{"output", "num"}``.
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

    ``config`` is the run's stored config with any overrides; ``num`` defaults to ``config.sampling.num_samples``,
    ``output`` to ``WORKDIR/generated`` (``restored``, ``translated``); ``input_dir`` holds the inputs of a
    restoration or translation. Returns the writer's summary (``output``, ``num``, ...); ValueError for an
    unknown task, ``input_dir`` missing or given where it does not belong, a config off the schema, bad inputs.
    """
    task = config.task.name
    # SDEdit / EGSDE on an unconditional score run (docs/translation.md).
    method = config.translation.method if config.get("translation") is not None else ""
    if method or (task in RESTORE_TASKS and (input_dir is not None or task not in TASKS)):
        if input_dir is None:
            raise ValueError(f"translation.method={method!r} translates images: pass --input IN_DIR" if method else
                             f"this run's task {task!r} restores images: pass --input IN_DIR (and --output OUT_DIR)")
        writer, arg = (write_translated if method else RESTORE_TASKS[task]), input_dir
        folder = "translated" if method else "restored"
    else:
        if task not in TASKS:
            raise ValueError(f"unknown sampling task {task!r}; expected one of {sorted(TASKS)}")
        if input_dir is not None:
            raise ValueError(f"--input is for restoration and translation; this run's task {task!r} generates from "
                             "noise unless a translation method is set: add --config.translation.method=sdedit (or "
                             "egsde) to translate the images of --input")
        writer, folder, arg = TASKS[task], "generated", (config.sampling.num_samples if num is None else num)
    builders.validate_config(config, get_base_config())
    return writer(config, workdir, check_output_dir(output or os.path.join(workdir, folder), [input_dir]), arg)
