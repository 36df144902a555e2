"""Tiny run configs and helpers shared by the training, checkpoint and CLI tests."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from configs.ddpm_digits import get_config


def tiny_config(num_steps: int = 4, batch_size: int = 8):
    """The digits smoke config cut further: a few steps, no grids, no evaluation."""
    c = get_config("smoke")
    # Native 8x8 digits and a one-level UNet: compiles in seconds on a CPU.
    c.data.image_size = 8
    c.model.base_channels = 8
    c.model.channel_mult = (1,)
    c.model.attn_resolutions = ()
    c.training.num_steps = num_steps
    c.training.batch_size = batch_size
    c.training.log_every = 1
    c.training.ckpt_every = num_steps
    c.training.keep_checkpoints = 10
    c.training.sample_every = 0
    c.training.progress_bar = False
    c.optim.warmup_steps = 1
    c.eval.enabled = False
    c.sampling.steps = 2
    c.sampling.num_samples = 4
    c.sampling.batch_size = 4
    return c


def read_losses(workdir: str) -> dict[int, float]:
    """``{step: loss}`` from a run's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["loss"] for r in rows}


def flat_params(tree) -> dict[str, np.ndarray]:
    """Leaves of a pytree keyed by their path, as numpy arrays."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def restore_state(workdir: str, config, step: int | None = None):
    """The TrainState of a run's checkpoint, restored onto this process's devices."""
    from train import _Run

    from diffjax.checkpoint import Checkpointer, abstract_state
    from diffjax.sharding import replicated

    run = _Run(config)
    init = run.take_initial_state()
    checkpointer = Checkpointer(workdir, async_save=False)
    try:
        return checkpointer.restore(abstract_state(lambda: init, replicated(run.mesh)), step)
    finally:
        checkpointer.close()


def snapshot(directory: str) -> dict[str, tuple[int, float]]:
    """Every file under ``directory`` with its size and mtime (to prove nothing changed)."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            st = os.stat(path)
            out[os.path.relpath(path, directory)] = (st.st_size, st.st_mtime_ns)
    return out


def assert_trees_equal(got, want, sharding=None) -> None:
    """Same tree structure (no missing or extra leaf) and bit-equal leaves.

    ``zip`` over two leaf lists stops at the shorter one, so a restore that drops a
    leaf would pass a leaf-by-leaf loop; the structures are compared first.
    """
    assert jax.tree.structure(got) == jax.tree.structure(want), (
        f"tree structures differ:\n{jax.tree.structure(got)}\n{jax.tree.structure(want)}")
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))
        if sharding is not None:
            assert a.sharding == sharding, jax.tree_util.keystr(path)
