"""Training step, optimizer, EMA and the end-to-end main job (in-process)."""

from __future__ import annotations

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from train_fixtures import flat_params, read_losses, restore_state, tiny_config

from diffjax import builders
from diffjax.checkpoint import StopRequest
from diffjax.training import create_train_state, ema_decay_at, make_lr_schedule, make_optimizer, make_train_step


def test_lr_schedule_warmup_then_cosine():
    schedule = make_lr_schedule(1.0, warmup_steps=10, total_steps=110)
    np.testing.assert_allclose(schedule(0), 0.0)
    np.testing.assert_allclose(schedule(5), 0.5, rtol=1e-6)
    np.testing.assert_allclose(schedule(10), 1.0, rtol=1e-6)
    # Half-way through the cosine: (1 + cos(pi/2)) / 2 = 0.5.
    np.testing.assert_allclose(schedule(60), 0.5, rtol=1e-5)
    np.testing.assert_allclose(schedule(110), 0.0, atol=1e-7)


def test_ema_decay_warms_up_to_target():
    np.testing.assert_allclose(ema_decay_at(0, 0.999), 0.1, rtol=1e-6)
    np.testing.assert_allclose(ema_decay_at(10**6, 0.999), 0.999, rtol=1e-6)


def test_train_step_on_quadratic_matches_hand_computed_update():
    """One step of a linear 'network' against the closed-form AdamW update and EMA."""

    class Scale(nnx.Module):
        def __init__(self):
            self.w = nnx.Param(jnp.full((1, 1, 1, 1), 2.0))

        def __call__(self, x, c):
            return self.w[...] * x

    def loss_fn(apply_fn, x0, key, mask=None):
        return jnp.mean(apply_fn(x0, jnp.zeros(x0.shape[:1])) ** 2), {}

    lr = 0.1
    optimizer = make_optimizer(lr, warmup_steps=0, total_steps=1000, grad_clip=0.0)
    graphdef, state = create_train_state(Scale(), optimizer)
    step = jax.jit(make_train_step(graphdef, loss_fn, optimizer, ema_decay=0.5, lr_schedule=make_lr_schedule(lr, 0, 1000)))
    x = jnp.ones((4, 2, 2, 1))
    new_state, metrics = step(state, {"image": x, "label": jnp.zeros(4, jnp.int32)}, jax.random.key(0))
    # loss = w^2, grad = 2w = 4; Adam's first step moves by lr * sign(grad).
    np.testing.assert_allclose(metrics["loss"], 4.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], 4.0, rtol=1e-6)
    w = new_state.params["w"][...].reshape(())
    np.testing.assert_allclose(w, 2.0 - lr, rtol=1e-5)
    # EMA decay at step 0 is min(0.5, 1/10) = 0.1.
    np.testing.assert_allclose(new_state.ema_params["w"][...].reshape(()), 0.1 * 2.0 + 0.9 * (2.0 - lr), rtol=1e-5)
    assert int(new_state.step) == 1


def test_loss_falls_and_step_compiles_once():
    config = tiny_config(num_steps=100, batch_size=16)
    config.optim.lr = 2e-3
    config.optim.warmup_steps = 5
    sde = builders.build_sde(config)
    dataset = builders.build_dataset(config)
    model, _ = builders.build_model(config, nnx.Rngs(params=0), dataset.image_shape)
    optimizer = builders.build_optimizer(config)
    graphdef, state = create_train_state(model, optimizer)
    step_fn = make_train_step(graphdef, builders.build_loss(config, sde), optimizer, 0.99)
    step_fn = jax.jit(chex.assert_max_traces(step_fn, n=1), donate_argnums=0)
    key = jax.random.key(0)
    losses = []
    for i in range(config.training.num_steps):
        batch = jax.tree.map(jnp.asarray, dataset.batch(i, config.training.batch_size))
        state, metrics = step_fn(state, batch, key)
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10]), (losses[:10], losses[-10:])

    # The step's noise is fold_in(base_key, state.step): it changes with the run's seed and with
    # the step, and nothing else (same seed, step and batch: the same loss). Same shapes, so the
    # step above is reused, not traced again.
    batch = jax.tree.map(jnp.asarray, dataset.batch(0, config.training.batch_size))

    def loss_at(seed: int, step: int) -> float:
        copy = jax.tree.map(jnp.copy, state)
        copy = dataclasses.replace(copy, step=jnp.asarray(step, copy.step.dtype))
        return float(step_fn(copy, batch, jax.random.key(seed))[1]["loss"])

    assert loss_at(0, 7) == loss_at(0, 7)
    assert loss_at(1, 7) != loss_at(0, 7)  # the seed reaches the noise
    assert loss_at(0, 8) != loss_at(0, 7)  # so does the step


def test_one_step_end_to_end_writes_every_output(tmp_path):
    """One step, then the main job's demo evaluation with its headline metric switched on.

    FD-AlexNet of 32 samples of the (nearly) untrained model, and of its EMA, must score
    far above the real-versus-real floor (32 training against 32 held-out digits) that
    ``metrics.json`` reports next to them. Measured: 22.1 for both against a floor of 0.31.
    """
    import json

    from train import train_and_evaluate

    config = tiny_config(num_steps=1)
    config.training.sample_every = 1
    config.training.num_grid_samples = 4
    config.eval.enabled = True
    config.eval.num_samples = 32
    config.eval.fd_alexnet = True
    workdir = str(tmp_path / "run")
    summary = train_and_evaluate(config, workdir)
    assert summary["step"] == 1 and np.isfinite(summary["final_loss"])
    for name in ("config.json", "model_config.json", "metrics.jsonl", "metrics.json",
                 "samples/step_000001.png", "eval/samples_ema.png", "eval/samples_initial.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "metrics.json")) as f:
        written = json.load(f)
    for name in ("fd_alexnet_ema", "fd_alexnet_initial", "fd_alexnet_train_vs_heldout"):
        assert written[name] == pytest.approx(summary[name]) and np.isfinite(written[name]), name
    floor = written["fd_alexnet_train_vs_heldout"]
    print({k: round(v, 2) for k, v in written.items() if k.startswith("fd_")})
    assert floor > 0
    assert written["fd_alexnet_initial"] > 20 * floor
    assert written["fd_alexnet_ema"] > 20 * floor
    assert os.listdir(os.path.join(workdir, "tb"))
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "1"))


def test_stop_and_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    from train import train_and_evaluate

    from diffjax.logging_utils import MetricWriter

    config = tiny_config(num_steps=4)
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train_and_evaluate(config, full)

    # The metrics log is made durable at every checkpoint (a bucket's log uploads then).
    flushes, real_flush = [], MetricWriter.flush
    monkeypatch.setattr(MetricWriter, "flush", lambda self: (flushes.append(1), real_flush(self))[1])
    stop = StopRequest()
    stop.request()  # as if SIGTERM arrived during the first step
    summary = train_and_evaluate(config, part, stop=stop)
    assert summary["stopped_early"] and summary["step"] == 1
    assert len(flushes) == 1  # with the checkpoint of the stop
    assert os.path.isdir(os.path.join(part, "checkpoints", "1"))
    summary = train_and_evaluate(config, part)  # resumes from step 1
    assert summary["step"] == 4 and not summary["stopped_early"]

    assert read_losses(full) == pytest.approx(read_losses(part), rel=1e-6)
    a, b = flat_params(restore_state(full, config)), flat_params(restore_state(part, config))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_nan_loss_stops_with_step_and_checkpoint(tmp_path):
    from train import train_and_evaluate

    config = tiny_config(num_steps=3)
    config.optim.lr = 1e30  # first update sends the weights to inf
    config.optim.grad_clip = 0.0
    config.training.ckpt_every = 1
    with pytest.raises(FloatingPointError, match=r"at step \d.*checkpoint"):
        train_and_evaluate(config, str(tmp_path / "nan"))


def test_sigterm_sets_the_stop_flag():
    import signal

    stop = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    finally:
        stop.uninstall()
