"""benchmarks/restoration.py's command line: task subsets, one-run training, bad flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _restoration(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "restoration.py"), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("tasks", ["", "inpainting,deblur", "colorization,"])
def test_bad_task_list_is_refused(tasks, tmp_path):
    result = _restoration("--root", str(tmp_path), "--tasks", tasks)
    assert result.returncode == 2
    assert "--tasks must be a comma-separated subset of inpainting,uncropping,colorization,jpeg" in result.stderr
    assert os.listdir(tmp_path) == []  # refused before anything is trained


@pytest.mark.slow
def test_train_only_then_one_task(tmp_path, tmp_path_factory):
    """``--train_only`` trains one run and stops; ``--tasks`` then reuses it and trains nothing else."""
    root = str(tmp_path)
    trained = _restoration("--root", root, "--quick", "--train_only", "palette_colorization")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert os.listdir(root) == ["palette_colorization"]

    figure = str(tmp_path_factory.mktemp("figure") / "restoration_lpips.png")
    result = _restoration("--root", root, "--quick", "--tasks", "colorization", "--figure", figure)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.listdir(root) == ["palette_colorization"]
    with open(figure, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"  # the main figure, beside the table
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(r["task"], r["method"]) for r in report["rows"]] == [
        ("colorization", "Palette"), ("colorization", "grayscale input")]
    assert report["rows"][1]["lpips"] > 0
