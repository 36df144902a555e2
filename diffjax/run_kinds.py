"""Run kinds (one diffusion network, latent, LSGM, segmentation) and the one table from ``config.task.name``
to a kind: :func:`kind_of` is the only dispatch on the task name (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import ml_collections

from diffjax import builders
from diffjax import ldm, run_lsgm, run_segmentation, run_training
from diffjax.run_base import Run

__all__ = ["RunKind", "KINDS", "TASK_KINDS", "kind_of", "train_and_evaluate"]


@dataclasses.dataclass(frozen=True)
class RunKind:
    """What a run kind does, as plain functions (no state).

    Attributes:
      name: the kind's name.
      train: ``train(config, workdir, *, stop=None) -> summary``: the kind's checks
        (all before anything is written), then its trainer, resuming from ``workdir``.
      load: ``load(config, workdir) -> Run``: the restored run (a :class:`diffjax.Run`).
    """

    name: str
    train: Callable[..., dict]
    load: Callable[[ml_collections.ConfigDict, str], Run]


KINDS = {
    "diffusion": RunKind("diffusion", run_training.train_diffusion, Run),
    "latent": RunKind("latent", run_training.train_diffusion, ldm.LatentRun),
    "lsgm": RunKind("lsgm", run_lsgm.train_lsgm, lambda config, workdir: run_lsgm.LSGMRun(workdir, config)),
    "segmentation": RunKind("segmentation", run_segmentation.train_segmentation,
                            lambda config, workdir: run_segmentation.load_segmenter(workdir, config)),
}

#: ``config.task.name`` -> the name of its kind in :data:`KINDS`.
TASK_KINDS = {
    **{task: "latent" if task in ldm.LATENT_TASKS else "diffusion" for task in builders.PIPELINES},
    "lsgm": "lsgm",
    **{task: "segmentation" for task in run_segmentation.SEGMENTATION_TASKS},
}


def kind_of(config: ml_collections.ConfigDict) -> RunKind:
    """The :class:`RunKind` of ``config.task.name``.

    Raises:
      ValueError: an unknown task, listing the known ones.
    """
    task = config.task.name
    if task not in TASK_KINDS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_KINDS)}")
    return KINDS[TASK_KINDS[task]]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, stop=None) -> dict:
    """Train a run of any kind (resuming from ``workdir`` if it holds checkpoints), then evaluate.

    What ``train.py`` and :func:`diffjax.train` run (summary and errors as there): the kind of
    ``config.task.name`` (:func:`kind_of`) checks the config and workdir before anything is written,
    then trains with its trainer. ``stop`` is the preemption flag to poll (default: a fresh one on
    SIGTERM); one already set stops the run after one step, with a checkpoint (after two with several
    processes: their vote on stopping is one step late).
    """
    from diffjax.interop.diffusers_run import is_diffusers_folder

    if os.path.isdir(workdir) and is_diffusers_folder(workdir):
        # A converted checkpoint (python -m diffjax.convert) holds a diffusers network, not a diffjax one.
        raise ValueError(f"workdir {workdir} holds a diffusers checkpoint (python -m diffjax.convert): it samples "
                         "(dj.load_run, sample.py) but does not train; give train.py a new workdir")
    return kind_of(config).train(config, workdir, stop=stop)
