"""The trainer of the one-network kinds (diffusion, latent) and their end-of-training demo evaluation.

What a run writes to its workdir and the order in which it resumes: docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from diffjax import builders, distributed
from diffjax import workdir_io
from diffjax.checkpoint import StopRequest, write_model_config
from diffjax.data.pipeline import host_rows
from diffjax.generate import generate_batches, make_generate_fn
from diffjax.logging_utils import save_grid
from diffjax.plots import plot_training_curves
from diffjax.run_checks import NONFINITE_MODES, check_int, check_workdir_writable  # noqa: F401  (re-exported)
from diffjax.run_config import write_run_config
from diffjax.sharding import replicated
from diffjax.trainer import LoopTask, check_run_workdir, host_batches, prepare_run, train_loop
from diffjax.training import create_train_state, make_train_step

__all__ = ["train_diffusion", "evaluate", "TrainingSetup", "check_workdir_writable", "NONFINITE_MODES"]


class TrainingSetup:
    """Everything a run builds from its config before touching the workdir."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.mesh, tc = prepare_run(config), config.training
        # grad_accum must split every device's rows into equal microbatches.
        k, devices = check_int(tc.get("grad_accum", 1), "config.training.grad_accum"), self.mesh.devices.size
        if tc.batch_size % (k * devices):
            raise ValueError(f"config.training.batch_size={tc.batch_size} must be a multiple of grad_accum ({k}) x "
                             f"devices ({devices}) = {k * devices}")
        self.sde = builders.build_sde(config)
        self.loss_fn = builders.build_loss(config, self.sde)
        self.sampler = builders.build_sampler(config)
        self.dataset = builders.build_dataset(config, "train")
        self.pipeline = builders.build_pipeline(config)
        self.optimizer = builders.build_optimizer(config)
        self.lr_schedule = builders.build_lr_schedule(config)
        model, self.model_config = self.build_model()
        self.graphdef, self._init_state = create_train_state(model, self.optimizer)
        # A copy: the training state's own buffers are donated to the train step.
        self.model_state = jax.tree.map(jnp.copy, self._init_state.model_state)
        self._generate_fns = {}

    def take_initial_state(self):
        """The step-0 state (handed over once, since its buffers get donated)."""
        state, self._init_state = self._init_state, None
        return state

    def build_model(self):
        """The network and its ``UNetConfig``, initialised from ``config.training.seed``."""
        rngs = nnx.Rngs(params=self.config.training.seed)
        return builders.build_model(self.config, rngs, self.dataset.image_shape, self.dataset.num_classes)

    def generate_fn(self, batch_size: int):
        """Jitted ``generate(params, key)`` for ``batch_size`` images (compiled once per size)."""
        if batch_size not in self._generate_fns:
            c, rep = self.config, replicated(self.mesh)
            jitted = jax.jit(make_generate_fn(self.graphdef, self.model_state, self.sde, self.sampler,
                                              self.dataset.image_shape, batch_size, prediction=c.model.prediction,
                                              time_input=c.loss.time_input, denoise=c.sampling.denoise),
                             in_shardings=(rep, rep))
            # Parameters of an FSDP run are gathered once per call (a no-op when already replicated).
            self._generate_fns[batch_size] = lambda params, key: jitted(jax.device_put(params, rep), key)
        return self._generate_fns[batch_size]


def train_diffusion(config: ml_collections.ConfigDict, workdir: str, *, stop: StopRequest | None = None) -> dict:
    """Train a run of one diffusion network (resuming from ``workdir`` if it holds checkpoints), then evaluate.

    The trainer of the diffusion and latent kinds (:mod:`diffjax.run_kinds`);
    :func:`diffjax.run_kinds.train_and_evaluate` picks it from the task (its
    arguments, summary and errors are documented there).
    """
    run = TrainingSetup(config)
    model_config = dataclasses.asdict(run.model_config)
    defaults = {f.name: f.default for f in dataclasses.fields(run.model_config)
                if f.default is not dataclasses.MISSING}
    check_run_workdir(workdir, model_config, defaults)
    latent = getattr(run.pipeline, "needs_autoencoder", False)
    if latent:  # latent diffusion: check the autoencoder, read (resume) or measure the latent scale
        run.pipeline.prepare_run(workdir, run.dataset, config.training)

    # -- nothing was written before this line --------------------------------
    tc = config.training

    def write_files():
        write_model_config(workdir, model_config)
        write_run_config(workdir, config)
        if latent:
            run.pipeline.write_run_files(workdir)

    # The network draws its dropout masks and its condition drop (classifier-free guidance) from the step's key.
    train_step = make_train_step(run.graphdef, run.loss_fn, run.optimizer, tc.ema_decay, lr_schedule=run.lr_schedule,
                                 use_labels=config.data.use_labels, grad_accum=tc.grad_accum,
                                 use_dropout=config.model.dropout > 0 or config.model.condition_dropout > 0)
    rows = host_rows(tc.batch_size, jax.process_index(), jax.process_count())
    # The iterator's batch for train step `step` is data step `step - 1`.
    prepare = lambda batch, data_step: run.pipeline.prepare_batch(batch, step=data_step, seed=tc.seed, rows=rows)  # noqa: E731
    # Sample grids and the FD demo are for pixel-space score networks (as before: every other network).
    pixel_model = run.pipeline.network != "autoencoder" and not latent
    grid = (run.generate_fn(tc.num_grid_samples)
            if pixel_model and tc.sample_every > 0 and tc.num_grid_samples > 0 else None)
    task = LoopTask(run.mesh, run.take_initial_state, train_step, lambda start: host_batches(run.dataset, tc, start, prepare),
                    tc.num_steps, tc.batch_size, write_files=write_files, fsdp=config.sharding.fsdp,
                    grid_fn=None if grid is None else lambda state, key: grid(state.ema_params, key))
    result = train_loop(task, workdir, config, stop=stop)
    state, stopped_early = result.state, result.stopped_early
    summary = {"step": int(state.step), "final_loss": result.metrics.get("loss"), "stopped_early": stopped_early}
    if not stopped_early and config.eval.enabled and run.pipeline.network == "autoencoder":
        from diffjax.ldm import evaluate_autoencoder  # reconstruction PSNR / LPIPS on held-out crops

        summary.update(evaluate_autoencoder(run, state, workdir))
    elif not stopped_early and config.eval.enabled and pixel_model:
        summary.update(evaluate(run, state, workdir))
    if distributed.is_lead():
        plot_training_curves(workdir)  # loss, logged scalars (and eval) as PNGs in workdir/plots/
        print(f"outputs in {workdir_io.absolute(workdir)}: checkpoints/, metrics.jsonl, tb/, samples/, plots/"
              + (", eval/, metrics.json" if "fd_alexnet_ema" in summary or "eval_dir" in summary else ""))
    return summary


def evaluate(run: TrainingSetup, state, workdir: str) -> dict:
    """Demo evaluation: samples from the EMA and the untrained parameters vs held-out images.

    Writes ``eval/samples_ema.png``, ``eval/samples_initial.png`` and ``metrics.json``.
    """
    c = run.config
    n = c.eval.num_samples
    # Reuse the grid sampler's compiled program when the sizes allow it.
    grid = c.training.num_grid_samples
    batch = grid if 0 < grid <= n and c.training.sample_every > 0 else min(c.sampling.batch_size, n)
    generate = run.generate_fn(batch)
    key = jax.random.key(c.sampling.seed)
    start = time.perf_counter()
    samples_ema = generate_batches(generate, state.ema_params, key, n, batch)
    sample_seconds = time.perf_counter() - start
    initial_params = nnx.split(run.build_model()[0], nnx.Param, ...)[1]  # rebuilt from the seed: step 0's
    samples_initial = generate_batches(generate, jax.device_put(initial_params, replicated(run.mesh)), key, n, batch)

    out = {"step": int(state.step), "num_samples": n, "sampler": c.sampling.sampler, "sampler_steps": c.sampling.steps,
           "sampling_seconds_ema": round(sample_seconds, 2)}
    if c.eval.fd_alexnet:  # EMA and untrained samples against held-out images, and the real-vs-real floor
        from diffjax.metrics import alexnet_moments as moments
        from diffjax.metrics import frechet_distance

        held_out = builders.build_dataset(c, c.eval.split).eval_images(n, seed=c.training.seed)
        train_ref = run.dataset.eval_images(n, seed=c.training.seed)
        ref = moments(held_out)  # each set's features once: the held-out statistics serve all three distances
        out.update(fd_alexnet_ema=float(frechet_distance(*moments(samples_ema), *ref)),
                   fd_alexnet_initial=float(frechet_distance(*moments(samples_initial), *ref)),
                   fd_alexnet_train_vs_heldout=float(frechet_distance(*moments(train_ref), *ref)))
    if distributed.is_lead():
        eval_dir = os.path.join(workdir, "eval")
        save_grid(os.path.join(eval_dir, "samples_ema.png"), samples_ema[:64])
        save_grid(os.path.join(eval_dir, "samples_initial.png"), samples_initial[:64])
        workdir_io.write_text(os.path.join(workdir, "metrics.json"), json.dumps(out, indent=2))
        print(f"demo evaluation: {json.dumps(out)}")
        print(f"  sample grids in {eval_dir}/, figures in {os.path.join(workdir, 'metrics.json')}")
    out["eval_dir"] = os.path.join(workdir, "eval")
    return out
