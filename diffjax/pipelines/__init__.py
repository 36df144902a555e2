"""Host-side glue between a task and the training / sampling programs.

A pipeline turns a clean data batch into what a task's network trains on
(condition images, loss masks, ...) and, for ``sample.py``, turns input files
into outputs. The math of each task stays in :mod:`diffjax.tasks`; configs are
read only by :mod:`diffjax.builders`, which constructs pipelines from plain
arguments.
"""

from diffjax.pipelines.base import GeneratePipeline, Pipeline

__all__ = ["Pipeline", "GeneratePipeline"]
