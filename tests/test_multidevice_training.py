"""Data parallelism: 8 fake CPU devices train exactly like 1, and checkpoints move between them.

Each run is a subprocess, since the device count is fixed when jax starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from train_fixtures import read_losses

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multidevice_worker.py")


def _start(devices: int, *args: str) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen([sys.executable, WORKER, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, expect_rc: int = 0) -> tuple[str, str]:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == expect_rc, f"worker exited {proc.returncode}\n{out}\n{err[-3000:]}"
    return out, err


def _params(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_same_params(a: dict, b: dict, rtol: float = 2e-5, atol: float = 2e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def test_eight_devices_match_one_and_checkpoints_cross_device_counts(tmp_path):
    one, eight, moved = (str(tmp_path / n) for n in ("one", "eight", "moved"))
    first = [_start(1, "--workdir", one, "--out", one + ".npz"), _start(8, "--workdir", eight, "--out", eight + ".npz")]
    eight_out = _finish(first[1])[0]
    # Stopped after one step on 8 devices, to be resumed on 1. Started once the other 8-device
    # run is done, so it loads that run's compiled program from the suite's compilation cache
    # (tests/conftest.py) instead of compiling the same program beside it.
    last = _start(8, "--workdir", moved, "--stop-after-first-step")
    outs = [json.loads(out.strip().splitlines()[-1]) for out in (_finish(first[0])[0], eight_out, _finish(last)[0])]
    assert [o["devices"] for o in outs] == [1, 8, 8]
    assert outs[2]["step"] == 1

    out, _ = _finish(_start(1, "--workdir", moved, "--out", moved + ".npz"))
    assert json.loads(out.strip().splitlines()[-1]) == {"devices": 1, "step": 3}

    assert read_losses(one) == pytest.approx(read_losses(eight), rel=2e-5)
    assert read_losses(one) == pytest.approx(read_losses(moved), rel=2e-5)
    reference = _params(one + ".npz")
    _assert_same_params(reference, _params(eight + ".npz"))
    _assert_same_params(reference, _params(moved + ".npz"))


def test_batch_not_divisible_by_devices_fails_before_writing(tmp_path):
    workdir = str(tmp_path / "run")
    _, err = _finish(_start(8, "--workdir", workdir, "--batch", "12"), expect_rc=3)
    assert "global batch size 12 is not divisible by the number of devices 8" in err
    assert "--config.training.batch_size" in err and "16" in err
    assert not os.path.exists(workdir)
