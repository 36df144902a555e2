"""Training at scale: gradient accumulation, rematerialisation and FSDP give the plain run's numbers.

The multi-device checks run in subprocesses (tests/scale_worker.py) on 8 fake CPU devices.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.ad_checkpoint import print_saved_residuals

from worker_procs import finish, start

from diffjax.nn import UNet, UNetConfig
from diffjax.sharding import fsdp_spec, per_device_bytes
from diffjax.training import split_microbatches

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scale_worker.py")


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _check_accum(*args: str) -> None:
    out = _last_json(finish(start(8, "accum", *args, script=WORKER))[0])
    assert out["devices"] == 8
    assert out["max_update"] > 1e-3  # the step moved the parameters, so equal states mean equal updates
    assert out["max_state_diff"] < 1e-6
    assert out["loss"][0] == pytest.approx(out["loss"][1], rel=1e-6)
    assert out["grad_norm"][0] == pytest.approx(out["grad_norm"][1], rel=1e-6)
    assert out["mean_c"][0] == pytest.approx(out["mean_c"][1], rel=1e-6)


def test_grad_accum_matches_one_batch_on_eight_devices():
    # Smoke size: the UNet of width 8 (the full-size test below uses 32), 4 microbatches of 8 rows.
    _check_accum("--grad-accum", "4", "--base-channels", "8", "--batch", "32")


@pytest.mark.slow
def test_grad_accum_matches_one_batch_on_eight_devices_full_size():
    # Mutation tried: summing instead of averaging the microbatch gradients -> max_state_diff ~0.1.
    _check_accum("--grad-accum", "4")


def test_microbatches_are_strided_rows():
    batch = {"image": np.arange(12).reshape(12, 1)}
    micro = split_microbatches(batch, 3)["image"]
    assert micro.shape == (3, 4, 1)
    np.testing.assert_array_equal(micro[1, :, 0], [1, 4, 7, 10])
    with pytest.raises(ValueError, match="grad_accum=5"):
        split_microbatches(batch, 5)


def _unet(remat: bool, size: int, base: int, mult: tuple[int, ...]):
    cfg = UNetConfig(image_size=size, in_channels=3, base_channels=base, channel_mult=mult, num_res_blocks=1,
                     attn_resolutions=(size // len(mult),), remat=remat)
    graphdef, params, rest = nnx.split(UNet(cfg, rngs=nnx.Rngs(params=0)), nnx.Param, ...)
    # Off the zero-initialised output layer, so the gradients are non-trivial.
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape, p.dtype), params)
    return graphdef, params, rest


def _saved_bytes(fn, *args) -> int:
    """Bytes of float32 residuals ``jax.ad_checkpoint.print_saved_residuals`` lists for ``fn``."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_saved_residuals(fn, *args)
    shapes = re.findall(r"f32\[([\d,]+)\]", buf.getvalue())
    assert shapes, buf.getvalue()
    return sum(4 * int(np.prod([int(d) for d in s.split(",")])) for s in shapes)


def _check_remat(size: int, base: int, mult: tuple[int, ...], batch: int) -> None:
    x = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
    c = jnp.linspace(0.1, 0.9, batch)
    results = {}
    for remat in (False, True):
        graphdef, params, rest = _unet(remat, size, base, mult)

        def loss(p, graphdef=graphdef, rest=rest):
            return jnp.mean((nnx.merge(graphdef, p, rest)(x, c) - x) ** 2)

        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        # Bytes the backward pass keeps from the forward pass (what remat trades for compute).
        saved = _saved_bytes(loss, params)
        results[remat] = (value, grads, saved)
    (v0, g0, s0), (v1, g1, s1) = results[False], results[True]
    assert float(v0) == pytest.approx(float(v1), rel=1e-6)
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    assert s1 < 0.5 * s0, (s0, s1)


def test_remat_same_loss_and_grads_with_fewer_saved_activations():
    # Smoke size (half the compile of the full one): one level of residual blocks with attention,
    # an 8x8 UNet of width 8, batch 2; the same assertions.
    _check_remat(size=8, base=8, mult=(1,), batch=2)


@pytest.mark.slow
def test_remat_same_loss_and_grads_with_fewer_saved_activations_full_size():
    _check_remat(size=16, base=16, mult=(1, 2), batch=4)


def test_fsdp_spec_cuts_the_largest_divisible_axis():
    assert fsdp_spec((3, 3, 32, 64), 8) == jax.sharding.PartitionSpec(None, None, None, "data")
    assert fsdp_spec((3, 3, 12, 20), 8) == jax.sharding.PartitionSpec()  # nothing divisible
    assert fsdp_spec((64,), 8) == jax.sharding.PartitionSpec()  # too small to be worth it
    assert fsdp_spec((4096,), 1) == jax.sharding.PartitionSpec()


def test_per_device_bytes_come_from_the_sharding_not_the_shards():
    # The shards of a multi-process array with one device per process cannot be read (a JAX limit),
    # so the count uses shard shapes only: float32, int32 and a key array, and a numpy leaf.
    tree = {"w": jnp.ones((4, 8)), "n": jnp.zeros((), jnp.int32), "key": jax.random.key(0), "np": np.ones(3, np.int16)}
    assert per_device_bytes(tree) == 4 * 8 * 4 + 4 + jax.random.key(0).dtype.itemsize + 3 * 2


def _params(path: str) -> dict:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
def test_fsdp_matches_replicated_and_restores_on_one_device(tmp_path):
    # Mutation tried: FSDP specs on an axis the device count does not divide -> the run fails to start.
    fsdp, rep = str(tmp_path / "fsdp"), str(tmp_path / "rep")
    procs = [start(8, "train", "--fsdp", "--grad-accum", "2", "--workdir", fsdp, "--out", fsdp + ".npz",
                   script=WORKER),
             start(8, "train", "--grad-accum", "2", "--workdir", rep, "--out", rep + ".npz", script=WORKER)]
    out_f, out_r = (_last_json(finish(p)[0]) for p in procs)
    assert out_f["step"] == out_r["step"] == 3
    # About an eighth of the replicated bytes per device (small biases and norms stay whole).
    assert out_f["param_bytes"] < 0.2 * out_r["param_bytes"]
    assert out_f["opt_bytes"] < 0.2 * out_r["opt_bytes"]
    a, b = _params(fsdp + ".npz"), _params(rep + ".npz")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=2e-6, err_msg=k)
    # The FSDP checkpoint restores replicated on a single device, for sampling.
    out = _last_json(finish(start(1, "restore", "--workdir", fsdp, "--out", fsdp + "1.npz", script=WORKER))[0])
    assert out["devices"] == 1
    one = _params(fsdp + "1.npz")
    for k in a:
        np.testing.assert_array_equal(one[k], a[k], err_msg=k)
