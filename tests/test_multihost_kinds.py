"""Multi-host training of the other run kinds: LSGM and DDeP pretraining on 2 processes x 4
devices (gloo, coordinator on 127.0.0.1) train like 1 process x 8 devices.

A file of its own, apart from ``test_multihost.py``: each test here starts three cold
processes that compile a whole training program, and with ``--dist loadfile`` one file
runs on one worker, so the two files can run side by side.
"""

from __future__ import annotations

import os

import pytest
from train_fixtures import read_losses
from worker_procs import assert_close_params, finish_job, load_params, metric_rows, start_job


def _kind_two_processes_like_one(tmp_path, task: str) -> tuple[str, str]:
    """3 steps of ``task`` on 2 processes x 4 devices and on 1 x 8: the same per-step losses (to 1e-4)."""
    two, one = str(tmp_path / f"{task}_2x4"), str(tmp_path / f"{task}_1x8")
    jobs = [start_job(2, 4, "--workdir", two, "--task", task), start_job(1, 8, "--workdir", one, "--task", task)]
    s_two, s_one = (finish_job(job) for job in jobs)
    assert (s_two["processes"], s_two["devices"], s_two["step"]) == (2, 8, 3)
    assert (s_one["processes"], s_one["devices"], s_one["step"]) == (1, 8, 3)
    assert [r["step"] for r in metric_rows(two)] == [1, 2, 3]  # process 0 writes, once per step
    assert read_losses(two) == pytest.approx(read_losses(one), rel=1e-4)
    return two, one


def test_lsgm_two_processes_train_like_one(tmp_path):
    """LSGM's loop reads each host's rows of the batch and votes on stopping, as the plain loop does."""
    _kind_two_processes_like_one(tmp_path, "lsgm")


def test_ddep_two_processes_train_like_one(tmp_path):
    """DDeP pretraining runs the one loop: per-host rows, one process-0 metrics.jsonl, the same weights."""
    two, one = _kind_two_processes_like_one(tmp_path, "ddep")
    assert_close_params(load_params(os.path.join(two, "segmentation.npz")),
                         load_params(os.path.join(one, "segmentation.npz")), rtol=1e-4, atol=1e-5)
