"""Preemption: SIGTERM saves and exits 0; SIGKILL at any moment, even mid-save, loses nothing.

Each attempt is a ``multihost_worker.py`` subprocess on one CPU device with a
checkpoint every step; ``metrics.jsonl`` (one line per step, appended by every
attempt) records which steps each attempt trained. The finished run must equal
an uninterrupted one bit for bit.
"""

from __future__ import annotations

import glob
import os
import random
import signal

import numpy as np
import pytest
from multihost_worker import SLOW_SAVE_ENV, STALL_MARKER
from worker_procs import finish, load_params, metric_rows, start, wait_for

STEPS = 24


def _args(workdir: str, *extra: str) -> list[str]:
    return ["--workdir", workdir, "--steps", str(STEPS), "--ckpt-every", "1", *extra]


def _complete_checkpoints(workdir: str) -> list[int]:
    # Orbax renames a finished checkpoint to its bare step number; anything else is in progress.
    names = os.listdir(os.path.join(workdir, "checkpoints")) if os.path.isdir(os.path.join(workdir, "checkpoints")) else []
    return sorted(int(n) for n in names if n.isdigit())


def _assert_bit_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


class Attempts:
    """Runs attempts on one workdir and records the steps each one trained.

    ``args`` go to every attempt (e.g. ``("--task", "lsgm")``); ``steps`` is the run's
    length and ``saved_steps(workdir)`` lists its complete checkpoints.
    """

    def __init__(self, workdir: str, *args: str, steps: int = STEPS, saved_steps=None):
        self.workdir, self.args, self.steps = workdir, args, steps
        self.saved_steps = saved_steps or _complete_checkpoints
        self.trained: list[list[int]] = []  # steps logged by each attempt
        self.resumed_from: list[int] = []  # latest complete checkpoint when each attempt started

    def start(self, *extra: str, env: dict | None = None):
        self._rows_before = len(metric_rows(self.workdir))
        self.resumed_from.append(max(self.saved_steps(self.workdir), default=0))
        args = ["--workdir", self.workdir, "--steps", str(self.steps), "--ckpt-every", "1", *self.args, *extra]
        self.proc = start(1, *args, env=env)
        return self.proc

    def logged_steps(self) -> list[int]:
        return [r["step"] for r in metric_rows(self.workdir)[self._rows_before:]]

    def wait_until_step(self, step: int) -> None:
        wait_for(lambda: any(s >= step for s in self.logged_steps()), self.proc, what=f"step {step}")

    def end(self, expect_rc: int) -> str:
        _, err = finish(self.proc, expect_rc)
        self.trained.append(self.logged_steps())
        return err

    def check_no_step_lost_or_repeated(self, reference_losses: dict[int, float]) -> None:
        """Each attempt trained a contiguous run of steps starting right after the checkpoint it
        resumed from; together they reach STEPS; a step trained again (its first result was lost
        with the killed process) gives exactly the loss it gave the first time and in the reference."""
        for start_ckpt, steps in zip(self.resumed_from, self.trained):
            if steps:
                assert steps == list(range(start_ckpt + 1, steps[-1] + 1)), (start_ckpt, steps)
        assert self.trained[-1][-1] == self.steps
        for row in metric_rows(self.workdir):
            assert row["loss"] == reference_losses[row["step"]], row


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: final parameters and per-step losses."""
    workdir = str(tmp_path_factory.mktemp("preempt") / "reference")
    finish(start(1, *_args(workdir, "--out", workdir + ".npz")))
    return load_params(workdir + ".npz"), {r["step"]: r["loss"] for r in metric_rows(workdir)}


def test_sigterm_saves_and_exits_cleanly_then_sigkill_loses_nothing(tmp_path, reference):
    ref_params, ref_losses = reference
    run = Attempts(str(tmp_path / "run"))

    run.start()
    run.wait_until_step(2)
    run.proc.send_signal(signal.SIGTERM)
    err = run.end(expect_rc=0)
    stopped_at = run.trained[-1][-1]
    assert f"stopped by SIGTERM after step {stopped_at}; checkpoint saved in" in err
    assert stopped_at < STEPS and _complete_checkpoints(run.workdir)[-1] == stopped_at

    # Repeated SIGKILLs (the fast version of the slow soak): two kills in a row.
    for ahead in (3, 2):
        run.start()
        run.wait_until_step(run.resumed_from[-1] + ahead)
        run.proc.send_signal(signal.SIGKILL)
        run.end(expect_rc=-signal.SIGKILL)

    run.start("--out", str(tmp_path / "final.npz"))
    run.end(expect_rc=0)
    assert run.resumed_from[1] == stopped_at and run.resumed_from[2] > stopped_at
    run.check_no_step_lost_or_repeated(ref_losses)
    _assert_bit_identical(load_params(str(tmp_path / "final.npz")), ref_params)


def test_kill_during_a_save_resumes_from_the_previous_complete_checkpoint(tmp_path, reference):
    ref_params, ref_losses = reference
    run = Attempts(str(tmp_path / "run"))
    stalled = 3
    run.start(env={SLOW_SAVE_ENV: str(stalled)})
    marker = os.path.join(run.workdir, "checkpoints", STALL_MARKER.format(step=stalled))
    wait_for(lambda: os.path.exists(marker), run.proc, what=f"the save of step {stalled} to stall")
    # Mid-save: checkpoint 3's files are on disk under a temporary name, not yet renamed.
    assert glob.glob(os.path.join(run.workdir, "checkpoints", f"{stalled}.orbax-checkpoint-tmp*"))
    run.proc.send_signal(signal.SIGKILL)
    run.end(expect_rc=-signal.SIGKILL)
    assert _complete_checkpoints(run.workdir)[-1] == stalled - 1

    run.start("--out", str(tmp_path / "final.npz"))
    run.end(expect_rc=0)
    assert run.trained[-1][0] == stalled  # resumed from step 2, the last complete checkpoint
    run.check_no_step_lost_or_repeated(ref_losses)
    _assert_bit_identical(load_params(str(tmp_path / "final.npz")), ref_params)


@pytest.mark.slow
def test_sigkill_at_random_steps_soak(tmp_path, reference):
    ref_params, ref_losses = reference
    rng = random.Random(1234)
    run = Attempts(str(tmp_path / "run"))
    for _ in range(5):
        run.start()
        target = min(STEPS - 1, run.resumed_from[-1] + rng.randint(1, 8))
        run.wait_until_step(target)
        run.proc.send_signal(signal.SIGKILL)
        run.end(expect_rc=-signal.SIGKILL)
    run.start("--out", str(tmp_path / "final.npz"))
    run.end(expect_rc=0)
    run.check_no_step_lost_or_repeated(ref_losses)
    _assert_bit_identical(load_params(str(tmp_path / "final.npz")), ref_params)
