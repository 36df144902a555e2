"""The one training loop (diffjax.trainer) gives LSGM and DDeP what the diffusion loop has.

* A run killed twice with SIGKILL and resumed ends bit-identical to an
  uninterrupted one (checkpoint every step; each attempt a
  ``multihost_worker.py`` subprocess, as in test_preemption.py), for LSGM and for
  DDeP pretraining (whose checkpoint is its ``ddep_resume.npz``).
* LSGM honours ``training.nonfinite``: a NaN batch is skipped and counted
  (``"skip"``) or stops the run naming the step and the last good checkpoint
  (``"stop"``), as the diffusion loop does (test_bad_inputs.py).
"""

from __future__ import annotations

import os
import signal

import jax
import numpy as np
import pytest
from test_bad_inputs import _NaNAtStep
from test_preemption import Attempts, _assert_bit_identical
from worker_procs import finish, load_params, metric_rows, start

STEPS = 8
RESUME_FILE = "ddep_resume.npz"


def _ddep_saved_steps(workdir: str) -> list[int]:
    """The step of DDeP's resume file (replaced atomically at each save), if there is one."""
    path = os.path.join(workdir, RESUME_FILE)
    if not os.path.exists(path):
        return []
    with np.load(path) as stored:
        return [int(stored["['step']"])]


def _final(task: str, workdir: str) -> dict:
    # LSGM: the EMAs the worker wrote (--out); DDeP: the finished run's weights.
    return load_params(workdir + ".npz" if task == "lsgm" else os.path.join(workdir, "segmentation.npz"))


# Slow: five cold processes (the reference and four attempts), each compiling the kind's train step.
@pytest.mark.slow
@pytest.mark.parametrize("task", ["lsgm", "ddep"])
def test_killed_twice_with_sigkill_then_resumed_ends_bit_identical(tmp_path, task):
    saved = _ddep_saved_steps if task == "ddep" else None
    reference = str(tmp_path / "reference")
    # The uninterrupted run goes on beside the attempts.
    # LSGM's EMAs come back through --out; DDeP's finished weights are its segmentation.npz.
    out = (lambda workdir: ("--out", workdir + ".npz")) if task == "lsgm" else (lambda workdir: ())
    ref = start(1, "--workdir", reference, "--steps", str(STEPS), "--ckpt-every", "1", "--task", task,
                *out(reference))
    run = Attempts(str(tmp_path / "run"), "--task", task, steps=STEPS, saved_steps=saved)
    for ahead in (3, 2):
        run.start()
        run.wait_until_step(run.resumed_from[-1] + ahead)
        run.proc.send_signal(signal.SIGKILL)
        run.end(expect_rc=-signal.SIGKILL)
    run.start(*out(run.workdir))
    run.end(expect_rc=0)
    finish(ref)
    assert 0 < run.resumed_from[1] <= run.resumed_from[2]  # both later attempts resumed from a checkpoint
    run.check_no_step_lost_or_repeated({r["step"]: r["loss"] for r in metric_rows(reference)})
    _assert_bit_identical(_final(task, run.workdir), _final(task, reference))
    if task == "ddep":
        assert not os.path.exists(os.path.join(run.workdir, RESUME_FILE))  # removed once finished


def _lsgm_config():
    from configs.lsgm_fashion_mnist import get_config

    c = get_config("smoke")
    c.training.num_steps, c.training.ckpt_every, c.training.log_every = 4, 1, 1
    c.training.keep_checkpoints, c.training.progress_bar = 10, False
    return c


def test_lsgm_honours_training_nonfinite(monkeypatch, tmp_path):
    from diffjax import builders
    from diffjax.run_kinds import train_and_evaluate
    from diffjax.run_lsgm import load_lsgm

    real = builders.build_dataset
    # Train step 3 reads data step 2, whose first pixel is NaN: the bound is NaN there.
    monkeypatch.setattr(builders, "build_dataset", lambda c, split="train": _NaNAtStep(real(c, split), 2))
    config = _lsgm_config()
    config.training.nonfinite = "skip"
    skipped = str(tmp_path / "skip")
    assert train_and_evaluate(config, skipped)["step"] == 4
    assert {r["step"]: r["nonfinite_steps"] for r in metric_rows(skipped)} == {1: 0, 2: 0, 3: 1, 4: 1}
    _, vae, prior, step, _ = load_lsgm(skipped)
    assert step == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves((vae, prior)))

    config.training.nonfinite = "stop"
    stopped = str(tmp_path / "stop")
    with pytest.raises(FloatingPointError, match=r"non-finite \(NaN/inf\) loss, gradient or parameters at step 3 "
                                                 r"(.|\n)*the last good checkpoint is step 2 in (.|\n)*"
                                                 r"--config\.lsgm\.vae_lr(.|\n)*--config\.training\.nonfinite=skip"):
        train_and_evaluate(config, stopped)
    assert sorted(os.listdir(os.path.join(stopped, "checkpoints"))) == ["1", "2"]
