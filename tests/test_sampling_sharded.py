"""A batch sharded over 8 fake CPU devices samples the same numbers as on one device.

The device count must be fixed before jax is imported, so the check runs in a
subprocess (tests/_sharded_sampling_worker.py).
"""

import json
import os
import subprocess
import sys

WORKER = os.path.join(os.path.dirname(__file__), "_sharded_sampling_worker.py")


def test_sharded_batch_matches_unsharded():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, WORKER], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(diffs) == {"euler_maruyama", "ddim"}
    for name, diff in diffs.items():
        assert diff < 1e-5, f"{name}: sharded and unsharded samples differ by {diff}"
