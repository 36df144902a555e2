"""Checkpoint fallback: a damaged newest step is skipped with a one-line warning, the newest intact one used."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import pytest

from train_fixtures import assert_trees_equal

from diffjax.checkpoint import UNREADABLE_DIR, Checkpointer, abstract_state
from diffjax.sharding import make_mesh, replicated
from diffjax.training import TrainState


def _state(step: int, scale: float) -> TrainState:
    params = {"w": jnp.full((3, 2), scale), "b": jnp.arange(2.0) * scale}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params, opt_state=(jnp.asarray(scale * 10),),
                      ema_params=jax.tree.map(lambda p: p / 2, params), model_state={})


def damage_step(directory: str, step: int) -> None:
    """Truncate every data file of checkpoint ``step`` (as a disk filling up mid-write would)."""
    hit = 0
    for root, _, files in os.walk(os.path.join(directory, str(step))):
        for name in files:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            if size > 8:
                with open(path, "r+b") as f:
                    f.truncate(size // 3)
                hit += 1
    assert hit, f"no file to damage under step {step}"


def _saved(tmp_path, steps=(1, 2)):
    ckpt = Checkpointer(str(tmp_path), async_save=False)
    for s in steps:
        ckpt.save(s, _state(s, float(s)))
    ckpt.wait()
    return ckpt


def _target():
    return abstract_state(lambda: _state(0, 0.0), replicated(make_mesh()))


def test_damaged_newest_step_falls_back_with_one_line_warning(tmp_path, caplog):
    ckpt = _saved(tmp_path)
    damage_step(ckpt.directory, 2)
    with caplog.at_level(logging.WARNING, logger="diffjax.checkpoint"):
        restored = ckpt.restore(_target())
    assert_trees_equal(restored, _state(1, 1.0))
    warnings = [r.getMessage() for r in caplog.records if r.name == "diffjax.checkpoint"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert "step 2" in warnings[0] and "using step 1" in warnings[0]
    # Training goes on from step 1 and writes step 2 again: the damaged one is moved aside, never deleted.
    assert ckpt.save(2, _state(2, 5.0))
    ckpt.wait()
    assert os.listdir(tmp_path / UNREADABLE_DIR) == ["2"]
    assert_trees_equal(ckpt.restore(_target()), _state(2, 5.0))
    ckpt.close()


def test_no_intact_step_says_so_and_lists_steps(tmp_path):
    ckpt = _saved(tmp_path)
    damage_step(ckpt.directory, 1)
    damage_step(ckpt.directory, 2)
    with pytest.raises(ValueError) as info:
        ckpt.restore(_target())
    message = str(info.value)
    assert "no checkpoint in" in message and "can be restored" in message and "[1, 2]" in message and "\n" not in message
    ckpt.close()


def test_explicit_step_is_not_replaced(tmp_path):
    ckpt = _saved(tmp_path)
    damage_step(ckpt.directory, 2)
    with pytest.raises(ValueError, match="checkpoint 2 .* cannot be restored"):
        ckpt.restore(_target(), step=2)
    ckpt.close()
