"""Checkpointer: round trip, keep-last-N, restore onto shardings, model-config guard."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import pytest

from train_fixtures import assert_trees_equal, snapshot

from diffjax.checkpoint import Checkpointer, abstract_state, check_model_config, write_model_config
from diffjax.sharding import make_mesh, replicated
from diffjax.training import TrainState


def _state(step: int, scale: float) -> TrainState:
    params = {"w": jnp.full((3, 2), scale), "b": jnp.arange(2.0) * scale}
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        opt_state=(jnp.asarray(scale * 10),),
        ema_params=jax.tree.map(lambda p: p / 2, params),
        model_state={},
    )


def test_round_trip_keeps_last_n_and_restores_onto_mesh(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=2)
    assert ckpt.latest_step() is None
    for step in (1, 2, 3):
        ckpt.save(step, _state(step, float(step)))
    ckpt.wait()
    assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3

    sharding = replicated(make_mesh())
    target = abstract_state(lambda: _state(0, 0.0), sharding)
    restored = ckpt.restore(target)
    ckpt.close()
    expected = _state(3, 3.0)
    assert_trees_equal(restored, expected, sharding)


def test_restore_without_checkpoint_says_so(tmp_path):
    ckpt = Checkpointer(str(tmp_path))
    with pytest.raises(ValueError, match="no checkpoint"):
        ckpt.restore(abstract_state(lambda: _state(0, 0.0), replicated(make_mesh())))
    ckpt.close()


def test_restore_into_a_different_structure_is_refused(tmp_path):
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, _state(1, 1.0))
    ckpt.wait()
    bigger = lambda: _state(0, 0.0).replace(params={"w": jnp.zeros((5, 5)), "b": jnp.zeros(2)})  # noqa: E731
    with pytest.raises(ValueError, match="new --workdir"):
        ckpt.restore(abstract_state(bigger, replicated(make_mesh())))
    ckpt.close()


def test_model_config_guard_names_the_difference(tmp_path):
    workdir = str(tmp_path)
    config = {"base_channels": 8, "channel_mult": (1, 2), "image_size": 16}
    check_model_config(workdir, config)  # no stored config: accepted
    write_model_config(workdir, config)
    check_model_config(workdir, dict(config))  # tuples and lists compare equal via JSON
    before = snapshot(workdir)
    with pytest.raises(ValueError, match=r"base_channels: checkpoint has 8, this config has 16(.|\n)*new --workdir"):
        check_model_config(workdir, dict(config, base_channels=16))
    assert snapshot(workdir) == before
    with open(os.path.join(workdir, "model_config.json")) as f:
        assert json.load(f)["channel_mult"] == [1, 2]


def test_model_config_field_added_later_takes_its_default(tmp_path):
    # A run written before a field existed resumes when the field has its default,
    # and is refused when the new config sets another value.
    workdir = str(tmp_path)
    write_model_config(workdir, {"base_channels": 8})
    defaults = {"base_channels": 64, "attention_impl": "einsum"}
    check_model_config(workdir, {"base_channels": 8, "attention_impl": "einsum"}, defaults)
    with pytest.raises(ValueError, match="attention_impl: checkpoint has 'einsum', this config has 'dot_product'"):
        check_model_config(workdir, {"base_channels": 8, "attention_impl": "dot_product"}, defaults)
    with pytest.raises(ValueError, match="attention_impl: checkpoint has '<missing>'"):
        check_model_config(workdir, {"base_channels": 8, "attention_impl": "einsum"})  # no defaults given
