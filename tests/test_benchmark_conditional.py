"""benchmarks/conditional.py's command line: refusals before training, and a smoke run (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "conditional.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


@pytest.mark.parametrize("runs", ["", "cde,sr4", "cmd"])
def test_bad_run_list_is_refused_before_training(runs, tmp_path):
    result = _bench("--root", str(tmp_path), "--runs", runs)
    assert result.returncode == 2
    assert "--runs must be a comma-separated subset of cde,cdiffe,cmde,sr3" in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_quick_run_prints_both_tables_and_a_json_line(tmp_path):
    result = _bench("--root", str(tmp_path), "--quick", "--runs", "cde,cmde")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["method"].split()[0] for r in report["photo_rows"]] == ["bicubic", "CDE", "CMDE"]
    assert report["checkpoint_steps"] == {"cde": 4, "cmde": 4}
    methods = {(r["method"], r["steps"]) for r in report["gaussian_rows"]}
    assert {("cde", 10), ("cdiffe", 10), ("cmde", 10)} <= methods
    assert "| CMDE" in result.stdout and "| cdiffe |" in result.stdout
