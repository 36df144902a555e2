"""``train.py --help`` lists the bundled configs and the main keys; ``sample.py --help`` works
without ``--workdir`` and lists the tasks, the flags and the samplers."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _help(script: str, flag: str = "--help") -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, script, flag], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_train_help_lists_every_config_and_the_main_keys():
    text = _help("train.py")
    configs = sorted(p.stem for p in (ROOT / "configs").glob("*.py")
                     if p.stem not in ("__init__", "default", "palette_common"))
    assert len(configs) >= 25
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.split()}
    assert set(configs) <= listed, set(configs) - listed
    for key in ("data.name", "data.data_dir", "training.num_steps", "sampling.sampler"):
        assert key in text
    assert "--workdir" in text and "docs/configs.md" in text


def test_sample_help_needs_no_workdir_and_lists_tasks_and_flags():
    from diffjax import builders, runs

    text = _help("sample.py", "-h")
    for flag in ("--workdir", "--num", "--output", "--input", "--config."):
        assert flag in text
    for task in list(runs.TASKS) + list(runs.RESTORE_TASKS) + list(builders.SAMPLERS):
        assert task in text, task


def test_help_is_only_taken_when_asked():
    from diffjax.cli_help import exit_if_help

    assert exit_if_help(["train.py", "--config", "configs/ddpm_digits.py", "--workdir", "w"], "train") is None
    try:
        exit_if_help(["train.py", "--help"], "train", configs_dir=ROOT / "configs")
    except SystemExit as stop:
        assert stop.code == 0
    else:
        raise AssertionError("--help did not exit")
