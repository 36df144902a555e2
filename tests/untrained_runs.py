"""Real runs for tests that need a checkpoint but no trained weights: a random state of a tiny network.

:func:`write_initial_run` writes what ``train.py`` writes before its first step
(model_config.json, config.json, a latent run's latent.json and its first stage's
fingerprint) and saves a state of the run's structure, filled with random values on
the host, through the library's :class:`diffjax.checkpoint.Checkpointer` as step 1:
no training step and no compile. ``sample.py`` and ``load_run`` restore it as any
trained run.
"""

from __future__ import annotations

import dataclasses
import os

from diffjax.checkpoint import Checkpointer, write_model_config
from diffjax.run_config import apply_overrides, get_base_config, load_config_file, write_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A one-level UNet at 16x16 and two sampling steps: restoring and sampling compile in seconds.
TINY = {"model.base_channels": 8, "model.channel_mult": (1,), "model.num_res_blocks": 1,
        "model.attn_resolutions": (), "model.dropout": 0.0, "data.image_size": 16, "sampling.steps": 2,
        "sampling.batch_size": 2, "training.sample_every": 0, "eval.enabled": False,
        "training.progress_bar": False}


def tiny_config(spec: str, overrides: dict | None = None):
    """``configs/<spec>`` with :data:`TINY` and ``overrides`` applied."""
    config = load_config_file(os.path.join(ROOT, "configs", spec))
    return apply_overrides(config, {**TINY, **(overrides or {})})


def write_initial_run(config, workdir: str, image_shape: tuple[int, int, int], num_classes: int = 0) -> str:
    """A diffusion, autoencoder or latent run in ``workdir`` whose checkpoint (step 1) is an initial state.

    The state has the structure, shapes and dtypes of the run's training state
    (traced, not run) and values drawn on the host (:func:`_host_state`): nothing
    is compiled. Builds no dataset and no loss (the photo corpus and LPIPS cost more than the
    network): ``image_shape`` is the data's ``(H, W, C)``. A latent run gets the
    scale factor 1 (training measures it on a batch) and its autoencoder's
    fingerprint, as ``train.py`` writes them.

    Returns:
      ``workdir``.
    """
    from diffjax import builders

    builders.validate_config(config, get_base_config())
    model_config = builders.build_model_config(config, image_shape, num_classes)
    state = _host_state(config, image_shape, num_classes)
    os.makedirs(workdir, exist_ok=True)
    checkpointer = Checkpointer(workdir, async_save=False)
    try:
        checkpointer.save(1, state)
    finally:
        checkpointer.close()
    write_model_config(workdir, dataclasses.asdict(model_config))
    write_run_config(workdir, config)
    pipeline = builders.build_pipeline(config)
    if getattr(pipeline, "needs_autoencoder", False):
        pipeline.scale_factor = 1.0
        pipeline.write_run_files(workdir)
    return workdir


def _host_state(config, image_shape, num_classes):
    """A ``TrainState`` shaped as the run's, filled with numpy values (no op compiled on the device).

    Initialising a network eagerly compiles one small program per distinct layer
    shape (minutes for an autoencoder on a busy CPU); here the initialiser is only
    traced (``jax.eval_shape``) and every float leaf drawn from N(0, 0.05^2), every
    integer leaf 0. The numbers are not an initialisation scheme's, which is all a
    test of the input and output paths needs.
    """
    import jax
    import numpy as np
    from flax import nnx

    from diffjax import builders
    from diffjax.training import create_train_state

    def make():
        model, _ = builders.build_model(config, nnx.Rngs(params=config.training.seed), image_shape, num_classes)
        return create_train_state(model, builders.build_optimizer(config))[1]

    rng = np.random.default_rng(0)

    def fill(leaf):
        if np.issubdtype(leaf.dtype, np.floating):
            return (0.05 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
        return np.zeros(leaf.shape, leaf.dtype)

    return jax.tree.map(fill, jax.eval_shape(make))
