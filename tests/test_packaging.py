"""What ``import diffjax`` exposes, and a non-editable install that carries the bundled configs.

The install test builds a wheel of this tree (``pip install --no-deps --target``,
the dependencies come from the running environment) and runs it from a folder
that holds no clone, so only the installed ``diffjax.configs`` can answer
``"ddpm_digits:smoke"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, cwd: str, pythonpath: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=pythonpath)
    return subprocess.run([sys.executable, *(["-c", code] if code else []), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_fresh_import_exposes_every_public_name_and_stays_light():
    code = """
import sys
import diffjax as dj
heavy = sorted(m for m in ("flax", "orbax", "orbax.checkpoint", "ml_collections", "tensorboardX") if m in sys.modules)
assert not heavy, heavy
import types
for name in ("palette", "ddep", "lsgm", "latent", "cascade", "sr3", "conditional", "segmentation",
             "pixel_classifier", "pnp"):
    assert isinstance(getattr(dj.tasks, name), types.ModuleType), name
for name in ("repaint", "sdedit", "egsde", "conditional_sample", "plug_and_play"):
    assert callable(getattr(dj.tasks, name)), name
assert dj.metrics.__name__ == "diffjax.metrics"
assert dj.data.__name__ == "diffjax.data"
assert dj.nn.__name__ == "diffjax.nn"
assert callable(dj.train) and callable(dj.load_run) and isinstance(dj.Run, type)
assert {"metrics", "data", "nn", "Run"} <= set(dir(dj))
print("ok")
"""
    result = _python(code, ROOT, ROOT)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """This tree installed (not editable) into a private folder; returns (site folder, empty work folder)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    # A copy, so the in-tree build leaves no build/ or egg-info behind in the clone.
    for name in ("diffjax", "configs"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    site = base / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                             "--no-index", "--target", str(site), str(src)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    work = base / "elsewhere"
    work.mkdir()
    return str(site), str(work)


def test_installed_package_finds_bundled_configs_by_name(installed):
    site, work = installed
    code = """
import os, diffjax as dj
from diffjax.run_config import bundled_configs_dir, load_config_file
assert dj.__file__.startswith(os.environ["SITE"]), dj.__file__
assert bundled_configs_dir().startswith(os.environ["SITE"]), bundled_configs_dir()
config = load_config_file("ddpm_digits:smoke")
assert config.data.name == "digits", config.data.name
for name in ("palette_inpainting:smoke", "ldm_fashion_mnist:smoke", "cdm_fashion_mnist:sr,smoke"):
    load_config_file(name)
try:
    dj.train("no_such_config", "w")
except ValueError as err:
    assert "bundled config" in str(err), err
else:
    raise AssertionError("an unknown name must be refused")
assert not os.path.exists("w")
print("ok")
"""
    os.environ["SITE"] = site
    try:
        result = _python(code, work, site)
    finally:
        del os.environ["SITE"]
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    # train.py (a copy outside the clone) resolves the name too: a bad override fails after loading it.
    shutil.copy(os.path.join(ROOT, "train.py"), os.path.join(work, "train.py"))
    result = _python("", work, site, "train.py", "--config", "ddpm_digits:smoke", "--workdir", "w",
                     "--config.training.bacth_size=4")
    assert result.returncode != 0
    assert "unknown config key 'bacth_size'" in result.stderr, result.stderr[-3000:]
    assert not os.path.exists(os.path.join(work, "w"))


@pytest.mark.slow  # two training steps: about 30 s on an idle 2-core CPU, minutes on a shared one
def test_installed_package_trains_a_bundled_config_by_name(installed):
    site, work = installed
    code = """
import diffjax as dj
summary = dj.train("ddpm_digits:smoke", "run_py", overrides={"training.num_steps": 2, "training.sample_every": 0,
                                                                "eval.enabled": False})
assert summary["step"] == 2, summary
assert isinstance(dj.load_run("run_py"), dj.Run)
print("ok")
"""
    result = _python(code, work, site)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
    shutil.copy(os.path.join(ROOT, "train.py"), os.path.join(work, "train.py"))
    result = _python("", work, site, "train.py", "--config", "ddpm_digits:smoke", "--workdir", "run_cli",
                     "--config.training.num_steps=2", "--config.training.sample_every=0", "--config.eval.enabled=False")
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.exists(os.path.join(work, "run_cli", "config.json"))
