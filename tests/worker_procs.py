"""Start and watch ``multihost_worker.py`` subprocesses (shared by the multi-host and preemption tests)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multihost_worker.py")
ROOT = os.path.dirname(HERE)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(devices: int, *args: str, env: dict | None = None, script: str = WORKER) -> subprocess.Popen:
    """One worker process (or ``script``) on ``devices`` fake CPU devices."""
    full_env = dict(os.environ, **(env or {}))
    full_env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    full_env["JAX_PLATFORMS"] = "cpu"
    return subprocess.Popen([sys.executable, script, *args], env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def start_job(processes: int, devices_each: int, *args: str, script: str = WORKER) -> list[subprocess.Popen]:
    """A ``processes``-process job (coordinator on 127.0.0.1), process 0 first.

    ``script`` is the worker or a path under the repository root (``"sample.py"``);
    all of them take the same multi-host flags.
    """
    path = os.path.join(ROOT, script)
    if processes == 1:
        return [start(devices_each, *args, script=path)]
    address = f"127.0.0.1:{free_port()}"
    return [
        start(devices_each, *args, f"--coordinator_address={address}", f"--num_processes={processes}",
              f"--process_id={i}", script=path)
        for i in range(processes)
    ]


def finish(proc: subprocess.Popen, expect_rc: int = 0, timeout: float = 600) -> tuple[str, str]:
    """Wait for a worker; assert its exit code; return (stdout, stderr)."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == expect_rc, f"worker exited {proc.returncode}, expected {expect_rc}\n{out}\n{err[-4000:]}"
    return out, err


def finish_job(procs: list[subprocess.Popen]) -> dict:
    """Wait for every process of a job; return process 0's JSON summary line."""
    outs = [finish(p)[0] for p in procs]
    return json.loads(outs[0].strip().splitlines()[-1])


def load_params(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def assert_close_params(a: dict, b: dict, rtol: float = 2e-5, atol: float = 2e-6) -> None:
    """Two ``{name: array}`` parameter sets with the same names and close values."""
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=atol, err_msg=name)


def metric_rows(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 600, what: str = "condition") -> None:
    """Poll ``predicate()`` until true; fail if ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"worker exited {proc.returncode} before {what}\n{out}\n{err[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
