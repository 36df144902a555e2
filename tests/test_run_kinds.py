"""The one table from task name to run kind, and the protocol every kind gives."""

from __future__ import annotations

import glob
import os

import pytest

from train_fixtures import tiny_config

from diffjax import builders, ldm, run_kinds, run_lsgm, run_segmentation
from diffjax.run_base import Run
from diffjax.run_config import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_task_has_exactly_one_kind_and_every_kind_loads_a_run():
    tasks = set(builders.PIPELINES) | {"lsgm"} | set(run_segmentation.SEGMENTATION_TASKS)
    assert set(run_kinds.TASK_KINDS) == tasks
    assert set(run_kinds.TASK_KINDS.values()) == set(run_kinds.KINDS)
    for kind in run_kinds.KINDS.values():
        assert callable(kind.train) and callable(kind.load)
    assert run_kinds.KINDS["diffusion"].load is Run
    assert issubclass(run_kinds.KINDS["latent"].load, Run) and run_kinds.KINDS["latent"].load is ldm.LatentRun
    assert issubclass(run_lsgm.LSGMRun, Run) and issubclass(run_segmentation.Segmenter, Run)
    for task in ldm.LATENT_TASKS:
        assert run_kinds.TASK_KINDS[task] == "latent"


def test_every_bundled_config_names_a_known_kind():
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        name = os.path.basename(path)[:-3]
        if name in ("__init__", "default", "palette_common"):
            continue
        try:
            config = load_config_file(path)
        except ValueError:  # configs that need an argument (e.g. cdm_fashion_mnist:base)
            continue
        assert run_kinds.kind_of(config).name in run_kinds.KINDS, name


def test_an_unknown_task_is_refused_before_anything_is_written(tmp_path):
    config = tiny_config(num_steps=1)
    config.task.name = "segmentation_magic"
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match=r"unknown task 'segmentation_magic'; expected one of \[.*'generate'.*'lsgm'"):
        run_kinds.train_and_evaluate(config, workdir)
    assert not os.path.exists(workdir)
