"""Every file in configs/ loads with its default argument and matches the base schema.

Building (networks, data) is covered per family by the configs' own smoke tests; this
catches a config that no longer loads or has drifted from the schema (a typo'd key
would otherwise only surface when a user runs it).
"""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest

from configs.default import get_base_config

from diffjax import builders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_MODULES = {"default.py", "__init__.py", "palette_common.py"}  # not runnable configs
# Configs that are several stages of one method and need an argument to pick one.
STAGE_ARGS = {"cdm_fashion_mnist.py": ("base", "sr"), "segmentation_ddep.py": ("pretrain", "finetune"),
              "translation_fashion_mnist.py": ("score", "classifier")}
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                      if os.path.basename(p) not in SCHEMA_MODULES)


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_loads_with_its_default_argument(path):
    spec = importlib.util.spec_from_file_location("cfg_" + os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for arg in STAGE_ARGS.get(os.path.basename(path), (None,)):
        builders.validate_config(module.get_config(arg), get_base_config())
