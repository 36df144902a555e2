"""Every config file loads, matches the schema and builds all its parts."""

from __future__ import annotations

import glob
import importlib.util
import os

import pytest
from flax import nnx

from configs.default import get_base_config
from train_fixtures import tiny_config

from diffjax import builders, samplers, sde as sde_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "ddpm_*.py")))


def _load(path, arg):
    spec = importlib.util.spec_from_file_location("cfg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


@pytest.mark.parametrize("arg", [None, "smoke"])
@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_config_loads_and_builds(path, arg):
    config = _load(path, arg)
    builders.validate_config(config, get_base_config())
    assert isinstance(builders.build_sde(config), sde_lib.SDE)
    assert isinstance(builders.build_sampler(config), samplers.Sampler)
    builders.build_loss(config)
    builders.build_optimizer(config)
    dataset = builders.build_dataset(config, "train")
    assert dataset.image_shape[:2] == (config.data.image_size,) * 2
    # Shapes only: building the full-size networks for real would take minutes.
    model = nnx.eval_shape(lambda: builders.build_model(config, nnx.Rngs(0), dataset.image_shape)[0])
    assert nnx.state(model, nnx.Param)


def test_config_rejects_unknown_argument():
    with pytest.raises(ValueError, match="smoke"):
        _load(CONFIG_FILES[0], "smok")


def test_every_sampler_name_builds():
    config = tiny_config()
    for name in builders.SAMPLERS:
        config.sampling.sampler = name
        assert isinstance(builders.build_sampler(config), builders.SAMPLERS[name])


def test_unknown_names_list_the_valid_ones():
    config = tiny_config()
    config.sampling.sampler = "ddmi"
    with pytest.raises(ValueError, match=r"unknown sampler 'ddmi'; expected one of \[.*'ddim'"):
        builders.build_sampler(config)
    config.sde.name = "vpp"
    with pytest.raises(ValueError, match=r"unknown sde 'vpp'; expected one of \[.*'vp'"):
        builders.build_sde(config)


def test_schema_check_catches_typos_and_missing_keys():
    config = tiny_config()
    config.unlock()
    config.training.bacth_size = 3
    del config.eval["split"]
    with pytest.raises(ValueError) as err:
        builders.validate_config(config, get_base_config())
    assert "unknown key config.training.bacth_size" in str(err.value)
    assert "missing key config.eval.split" in str(err.value)


def test_override_check_names_the_closest_key():
    config = tiny_config()
    builders.check_override_keys(["--config.training.batch_size=4", "--workdir=x"], config)
    with pytest.raises(ValueError, match=r"'bacth_size'.*Did you mean 'batch_size'"):
        builders.check_override_keys(["--config.training.bacth_size=4"], config)
    with pytest.raises(ValueError, match=r"unknown config key 'trainin'"):
        builders.check_override_keys(["--config.trainin.batch_size=4"], config)


def test_model_keys_must_be_unet_fields():
    config = tiny_config()
    with config.unlocked():
        config.model.widht = 3
    with pytest.raises(ValueError, match="unknown model keys.*widht"):
        builders.build_model_config(config, (8, 8, 1))


def test_stored_config_missing_newer_keys_takes_their_defaults():
    """A run trained before a key was added to the schema stays readable."""
    from configs.default import get_base_config

    from diffjax import builders

    old = get_base_config()
    del old.training["nonfinite"]
    del old["task"]
    old.data.unknown_key = 1
    filled = builders.fill_missing_keys(old, get_base_config())
    assert filled.training.nonfinite == get_base_config().training.nonfinite
    assert filled.task.name == "generate"
    with pytest.raises(ValueError, match="unknown key config.data.unknown_key"):
        builders.validate_config(filled, get_base_config())


@pytest.mark.parametrize(
    "name, arg",
    [("translation_fashion_mnist", a) for a in ("score", "classifier", "score_smoke", "classifier_smoke")]
    + [("translation_photos", a) for a in (None, "smoke", "paper")],
)
def test_translation_configs_build(name, arg):
    from diffjax.nn import Classifier, UNet

    config = _load(os.path.join(ROOT, "configs", f"{name}.py"), arg)
    builders.validate_config(config, get_base_config())
    builders.build_loss(config)
    builders.build_sampler(config)
    dataset = builders.build_dataset(config, "train")
    model = nnx.eval_shape(
        lambda: builders.build_model(config, nnx.Rngs(0), dataset.image_shape, dataset.num_classes)[0])
    if name == "translation_fashion_mnist":
        want = (9,) if arg.startswith("score") else (7, 9)
        assert tuple(config.data.classes) == want and dataset.num_classes == len(want)
        assert isinstance(model, UNet if arg.startswith("score") else Classifier)
    with pytest.raises(ValueError):
        _load(os.path.join(ROOT, "configs", "translation_fashion_mnist.py"), None)
