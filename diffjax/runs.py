"""Runs from Python: what ``train.py`` and ``sample.py`` do, importable (docs/runs.md).

* :func:`train` trains a run (a ConfigDict or a ``"path.py[:arg]"`` config file,
  with overrides) into a workdir; ``train.py`` is a thin command line over the
  same :func:`diffjax.run_training.train_and_evaluate`.
* :func:`load_run` restores a run's EMA parameters onto the devices present as a
  :class:`Run`: ``run.generate(n)``, ``run.restore(images, masks)`` (arrays in,
  arrays out) and ``run.score_fn`` for :func:`diffjax.sample` / :mod:`diffjax.tasks`.
* :func:`sample_from_workdir` is ``sample.py``: the same :class:`Run` methods,
  writing PNG files.

Tasks dispatch through explicit dicts keyed by ``config.task.name``:
:data:`GENERATORS` / :data:`RESTORERS` (the array methods) and :data:`TASKS` /
:data:`RESTORE_TASKS` (the command line's: ``task(config, workdir, output,
num)`` and ``task(config, workdir, output, input_dir)``). A task added later
plugs in with one entry in each.
"""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from diffjax import builders, distributed
from diffjax.checkpoint import Checkpointer, abstract_state, model_config_path
from diffjax.errors import dataclass_from_json
from diffjax.generate import generate_batches, make_generate_fn
from diffjax.logging_utils import save_class_samples, save_grid, save_png, save_samples, to_uint8
from diffjax.outputs import check_output_dir
from diffjax.parametrization import model_score_fn
from diffjax.run_arrays import as_key as _as_key, as_known_masks, as_pixels, check_sampler as _check_sampler, to_unit
from diffjax.run_config import apply_overrides, get_base_config, load_run_config, resolve_config
from diffjax import ldm as _ldm  # latent diffusion's entries of the task tables (docs/ldm.md)
from diffjax.run_lsgm import LSGMRun, run_lsgm_generate
from diffjax.run_segmentation import Segmenter, load_segmenter, run_segment
from diffjax.run_training import train_and_evaluate
from diffjax.sharding import data_sharding, make_mesh, replicated
from diffjax.training import TrainState, model_from_state

__all__ = [
    "train",
    "load_run",
    "Run",
    "GENERATORS",
    "RESTORERS",
    "sample_from_workdir",
    "TASKS",
    "RESTORE_TASKS",
    "run_translate",
    "restore_ema_model",
    "load_model_config",
]


def train(config, workdir: str, overrides: dict | None = None) -> dict:
    """Train a run into ``workdir`` (resuming it if it holds checkpoints), then evaluate it.

    The same as ``python train.py --config CONFIG --workdir WORKDIR
    [--config.a.b=v ...]``, in this process (join a multi-host job first with
    :func:`diffjax.distributed.initialize` if there is one).

    Args:
      config: an ``ml_collections.ConfigDict`` (e.g. ``configs/ddpm_digits.py``'s
        ``get_config("smoke")``) or a config file as ``"path/to/config.py[:arg]"``.
      workdir: directory for checkpoints, logs, samples and metrics.
      overrides: dotted keys to values applied on top, checked like the command
        line's ``--config.a.b=v`` (e.g. ``{"training.num_steps": 100}``).

    Returns:
      The run's summary: ``step``, ``final_loss``, ``stopped_early`` and, when
      the demo evaluation ran, its metrics.

    Raises:
      ValueError: a config that is neither a ConfigDict nor an existing file, an
        unknown override key (naming the closest valid one) or a mistyped value,
        a config that does not match the schema, a workdir that cannot be
        written or holds a different model — all before anything is written.
      FloatingPointError: the loss became NaN/inf and
        ``config.training.nonfinite`` is ``"stop"``.
    """
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir):
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    return train_and_evaluate(resolve_config(config, overrides), os.fspath(workdir))


def load_model_config(workdir: str, network: str = "unet"):
    """The ``UNetConfig`` (``network="classifier"``: ``ClassifierConfig``; ``"autoencoder"``: ``AutoencoderConfig``) stored with the run.

    Raises:
      ValueError: if ``workdir`` holds no ``model_config.json``.
    """
    from diffjax.nn import AutoencoderConfig, ClassifierConfig, UNetConfig

    path = model_config_path(workdir)
    if not os.path.exists(path):
        raise ValueError(f"{workdir} holds no model_config.json: expected the --workdir of a train.py run")
    cls = {"classifier": ClassifierConfig, "autoencoder": AutoencoderConfig}.get(network, UNetConfig)
    return dataclass_from_json(cls, path)  # a damaged or hand-edited file is named, with its line


def restore_ema_model(config: ml_collections.ConfigDict, workdir: str, mesh, step: int | None = None):
    """Restore the EMA parameters of checkpoint ``step`` (default: the latest) onto ``mesh`` (replicated).

    Args:
      config: the run's config (its optimizer gives the checkpoint's structure).
      workdir: the training run's directory.
      mesh: the devices to restore onto (:func:`diffjax.sharding.make_mesh`),
        whatever the layout that wrote the checkpoint.
      step: the checkpoint step to restore; ``None`` = the latest.

    Raises:
      ValueError: no model config or no checkpoint in ``workdir``.

    Returns:
      ``(graphdef, ema_params, model_state, model_config, step)``.
    """
    from diffjax.nn import Autoencoder, Classifier, UNet

    network = builders.build_pipeline(config).network
    model_config = load_model_config(workdir, network)
    optimizer = builders.build_optimizer(config)
    # Abstract model: shapes only, no weights drawn.
    cls = {"classifier": Classifier, "autoencoder": Autoencoder}.get(network, UNet)
    model = nnx.eval_shape(lambda: cls(model_config, rngs=nnx.Rngs(0)))
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)

    def init():
        p, r = _zeros_like(params), _zeros_like(model_state)
        return TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=p, opt_state=optimizer.init(p),
                          ema_params=p, model_state=r)

    checkpointer = Checkpointer(workdir, keep=max(1, config.training.keep_checkpoints), async_save=False)
    try:
        if checkpointer.latest_step() is None:
            raise ValueError(f"no checkpoint in {checkpointer.directory}: train first with train.py")
        state = checkpointer.restore(abstract_state(init, replicated(mesh)), step=step)
    finally:
        checkpointer.close()
    return graphdef, state.ema_params, state.model_state, model_config, int(state.step)


def lead_print(message: str) -> None:
    """Print on process 0 only."""
    if distributed.is_lead():
        print(message)


def _zeros_like(tree):
    return jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), tree)


def classifier_feature_fn(graphdef, params, model_state, sde, time_input: str):
    """``feature_fn(x, t)``: the middle features of a :class:`diffjax.nn.Classifier` at times ``t``.

    Args:
      graphdef, params, model_state: the classifier (:func:`restore_ema_model`).
      sde: the forward process it was trained under.
      time_input: its network time input (``config.loss.time_input``).

    Returns:
      ``feature_fn(x, t) -> (B, h, w, C)`` for :func:`diffjax.tasks.egsde_energy`.
    """
    from diffjax.parametrization import network_time_input

    model = model_from_state(graphdef, params, model_state)
    return lambda x, t: model.features(x, network_time_input(sde, t, time_input))


class Run:
    """A trained run restored from its workdir: its config, EMA parameters and what its task does.

    Build one with :func:`load_run`. The EMA parameters of the latest
    checkpoint sit replicated on every device present (whatever layout wrote
    them). Methods take and return arrays; defaults (sampler, seed, batch size)
    come from the run's ``config.sampling``, so with no arguments a method gives
    exactly the images ``sample.py`` writes.

    Attributes:
      config: the run's ``ConfigDict`` (with any overrides given to :func:`load_run`).
      workdir: the run's directory.
      task: ``config.task.name``.
      step: the restored checkpoint's training step.
      params: the EMA parameters (an ``nnx.State``).
      model_config: the network's ``UNetConfig``.
      image_shape: the network's ``(H, W, C)``.
      sde: the forward process the network was trained under.
      pipeline: the task's pipeline (:mod:`diffjax.pipelines`).
    """

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        """Restore ``workdir``'s latest checkpoint for ``config`` (use :func:`load_run`).

        Raises:
          ValueError: a config off the schema, or no model config / checkpoint in ``workdir``.
        """
        builders.validate_config(config, get_base_config())
        self.config, self.workdir, self.task = config, workdir, config.task.name
        self.mesh = make_mesh()
        self.sde = builders.build_sde(config)
        self.pipeline = builders.build_pipeline(config)
        self._graphdef, self.params, self._model_state, self.model_config, self.step = restore_ema_model(
            config, workdir, self.mesh)
        mc = self.model_config
        self.image_shape = (mc.image_size, mc.image_size, mc.in_channels)
        self._compiled = {}

    def __repr__(self) -> str:
        return f"Run(workdir={self.workdir!r}, task={self.task!r}, step={self.step}, image_shape={self.image_shape})"

    # -- the model as a score function -----------------------------------------
    def _score_fn(self, params, **inputs):
        model = model_from_state(self._graphdef, params, self._model_state)
        return model_score_fn(lambda x, c: model(x, c, **inputs), self.sde,
                              prediction=self.config.model.prediction, time_input=self.config.loss.time_input)

    def _make_score_fn(self, params, cond):
        from diffjax.pipelines.conditional import ConditionalTask, make_cond_score_fn

        if isinstance(self.pipeline, ConditionalTask):  # CDE / CDiffE / CMDE: cond is y or y_t
            net = make_cond_score_fn(model_from_state(self._graphdef, params, self._model_state), self.sde,
                                     method=self.pipeline.method, sde_y=self.pipeline.sde_y,
                                     prediction=self.config.model.prediction, time_input=self.config.loss.time_input)
            return lambda x, t: net(x, cond, t)
        return self._score_fn(params) if cond is None else self._score_fn(params, cond=cond)

    @property
    def score_fn(self):
        """The network as a score function, for :func:`diffjax.sample`, :mod:`diffjax.tasks` or your own code.

        ``score_fn(x, t, *, cond=None, labels=None, aug_level=None) -> score``,
        ``x`` of shape ``(B, *image_shape)`` in the model's range ``[-1, 1]``,
        ``t`` of shape ``(B,)``. It closes over the EMA parameters, the run's
        process, prediction kind and time input. An unconditional run needs only
        ``(x, t)``; a conditional run takes its network inputs as keywords:
        ``cond`` (Palette: the condition image of its task, e.g.
        :func:`diffjax.tasks.palette.inpainting_condition`; SR3: the upsampled
        low-resolution image, ``(B, H, W, C_cond)`` in ``[-1, 1]``), ``labels``
        (class-conditional runs; omitted = unconditional) and ``aug_level``
        (cascade stages). Bind them with ``functools.partial(run.score_fn,
        cond=c)`` to get a plain ``score_fn(x, t)``; for images larger than the
        network, wrap it with :func:`diffjax.tiling.tiled_score_fn`.

        Returns:
          The score function (a new closure per access; it holds no compiled state).
        """

        def score_fn(x, t, *, cond=None, labels=None, aug_level=None):
            return self._score_fn(self.params, cond=cond, labels=labels, aug_level=aug_level)(x, t)

        return score_fn

    @property
    def feature_fn(self):
        """A domain-classifier run's middle features, for :func:`diffjax.tasks.egsde_energy`.

        ``feature_fn(x, t) -> (B, h, w, C)``: the classifier's middle-block
        features of ``x`` (``(B, *image_shape)`` in ``[-1, 1]``) at times ``t``
        (``(B,)``), with the EMA parameters, the run's process and time input:
        ``dj.tasks.egsde_energy(dj.load_run(CLASSIFIER_RUN).feature_fn, ...)``
        is the energy ``sample.py --config.translation.method=egsde`` builds.

        Returns:
          The feature function (a new closure per access).

        Raises:
          ValueError: if this run did not train a classifier (``domain_classifier``).
        """
        if getattr(self.pipeline, "network", "unet") != "classifier":
            raise ValueError(f"{self.workdir} is a {self.task!r} run; feature_fn needs a domain-classifier run")
        return classifier_feature_fn(self._graphdef, self.params, self._model_state, self.sde,
                                     self.config.loss.time_input)

    # -- generation ------------------------------------------------------------
    def generate(self, n: int, *, key=None, sampler=None, labels=None) -> np.ndarray:
        """``n`` images from noise with the run's task (``generate``, ``repaint``: unconditional; ``cascade``; ``ldm``).

        Args:
          n: number of images (>= 1).
          key: a ``jax.random.key`` or an int seed; ``None`` = ``config.sampling.seed``
            (then the images equal ``sample.py``'s).
          sampler: any :mod:`diffjax.samplers` sampler; ``None`` = the run's
            ``config.sampling``. A cascade samples each stage with its own.
          labels: for a class-conditional ``generate`` or ``ldm`` run, ``(n,)``
            integer classes in ``[0, num_classes]`` (``num_classes`` is the null
            label); ``None`` = ``arange(n) % num_classes``.

        Returns:
          ``(n, H, W, C)`` float32 numpy in ``[0, 1]`` (a cascade: its last stage).

        Raises:
          ValueError: ``n < 1``, a bad key, sampler or labels (or labels for a
            run that is not class-conditional), or a run whose task restores
            images (use :meth:`restore`).
        """
        if self.task not in GENERATORS:
            raise ValueError(f"this run's task {self.task!r} restores images: use run.restore(images, ...); "
                             f"run.generate is for the tasks {sorted(GENERATORS)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        extra = {} if labels is None else {"labels": self._check_labels(labels, int(n))}
        images = GENERATORS[self.task](self, int(n), _as_key(key, self.config.sampling.seed), _check_sampler(sampler),
                                       **extra)
        return to_unit(images[-1] if isinstance(images, list) else images, single=False)

    def _check_labels(self, labels, n: int) -> np.ndarray:
        """User class labels -> ``(n,)`` int32, or a ValueError saying what was expected."""
        classes = self.model_config.num_classes
        if self.task not in ("generate", "ldm") or classes == 0:
            raise ValueError(f"labels need a class-conditional generation run (model.num_classes > 0, task "
                             f"'generate' or 'ldm'); this run has task {self.task!r}, num_classes {classes}")
        array = np.asarray(labels)
        if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"labels must be {n} integers, shape ({n},), got {array.dtype} of shape {array.shape}")
        if array.size and (array.min() < 0 or array.max() > classes):
            raise ValueError(f"labels must lie in [0, {classes}] ({classes} = the null label), "
                             f"got [{array.min()}, {array.max()}]")
        return array.astype(np.int32)

    def _generate(self, num: int, key, sampler=None, progress=None, labels=None) -> np.ndarray:
        """``(num, H, W, C)`` images in ``[-1, 1]`` (batch ``i`` from ``fold_in(key, i)``).

        A class-conditional network gets ``labels``, by default ``arange(num) % num_classes``.
        """
        if labels is None and self.model_config.num_classes > 0:
            labels = np.arange(num) % self.model_config.num_classes
        batch = min(self.config.sampling.batch_size, num)
        sampler = sampler or builders.build_sampler(self.config)
        cache_key = ("generate", batch, sampler)
        if cache_key not in self._compiled:
            c = self.config
            # Split each batch over every device of every host when it divides evenly;
            # the images do not depend on the split, only the speed does.
            self._compiled[cache_key] = jax.jit(
                make_generate_fn(
                    self._graphdef, self._model_state, self.sde, sampler, self.image_shape, batch,
                    prediction=c.model.prediction, time_input=c.loss.time_input, denoise=c.sampling.denoise,
                    batch_sharding=data_sharding(self.mesh) if batch % self.mesh.devices.size == 0 else None,
                ),
                out_shardings=replicated(self.mesh),
            )
        return generate_batches(self._compiled[cache_key], self.params, key, num, batch, progress=progress,
                                labels=labels)

    def _generate_cascade(self, num: int, key, sampler=None) -> list[np.ndarray]:
        return self._cascade(num, key, sampler)[0]

    def _cascade(self, num: int, key, sampler=None, progress=None) -> tuple[list[np.ndarray], np.ndarray]:
        """Class labels ``arange(num) % classes`` -> base stage -> SR stages.

        Returns:
          Each stage's ``(num, H_i, W_i, C)`` images in ``[-1, 1]``, and the labels.
        """
        from diffjax.pipelines.cascade import Stage, sample_cascade

        if sampler is not None:
            raise ValueError("a cascade samples each stage with its own config.sampling; pass sampler=None")

        def stage(run_config, graphdef, params, model_state, mc, pipeline):
            return Stage(graphdef, params, model_state, builders.build_sde(run_config),
                         builders.build_sampler(run_config), (mc.image_size, mc.image_size, mc.in_channels),
                         run_config.model.prediction, run_config.loss.time_input, run_config.sampling.denoise,
                         pipeline if run_config.task.name == "cascade" else None, mc.num_classes)

        stages = [stage(self.config, self._graphdef, self.params, self._model_state, self.model_config, self.pipeline)]
        seen, run_dir, pipeline = {os.path.abspath(self.workdir)}, self.workdir, self.pipeline
        while stages[0].pipeline is not None:  # walk down from this SR stage to the base
            if not pipeline.previous_workdir:
                raise ValueError(f"{run_dir}: set --config.task.cascade.previous_workdir to the stage below's workdir")
            run_dir = pipeline.previous_workdir
            if os.path.abspath(run_dir) in seen:
                raise ValueError(f"the cascade's previous_workdir links loop back to {run_dir}")
            seen.add(os.path.abspath(run_dir))
            run_config = load_run_config(run_dir)
            pipeline = builders.build_pipeline(run_config)
            graphdef, params, model_state, mc, _ = restore_ema_model(run_config, run_dir, self.mesh)
            stages.insert(0, stage(run_config, graphdef, params, model_state, mc, pipeline))
        labels = np.arange(num) % max(stages[0].num_classes, 1)
        return sample_cascade(stages, labels, key, progress=progress), labels

    # -- translation (SDEdit, EGSDE) ---------------------------------------------
    def translate(self, images, *, method: str | None = None, key=None, sampler=None,
                  classifier_workdir: str | None = None, t0: float | None = None) -> np.ndarray:
        """Translate or edit images with SDEdit or EGSDE on this (unconditional) score run.

        Settings come from the run's ``config.translation`` (``t0``, ``repeats``,
        EGSDE's ``lambda_s``, ``lambda_i``, ``down_factor``); override them with
        :func:`load_run`'s ``overrides`` (e.g. ``{"translation.t0": 0.4}``).

        Args:
          images: ``uint8`` or float in ``[0, 1]``, ``(H, W, C)`` or ``(N, H, W, C)``
            at the model's size and channels (guides for SDEdit, source-domain
            images for EGSDE).
          method: ``"sdedit"`` or ``"egsde"``; ``None`` = ``config.translation.method``.
          key: a ``jax.random.key`` or an int seed; ``None`` = ``config.sampling.seed``.
            Batch ``b`` uses ``fold_in(key, b)``.
          sampler: any :mod:`diffjax.samplers` sampler; ``None`` = the run's ``config.sampling``.
          classifier_workdir: EGSDE's domain-classifier run; ``None`` =
            ``config.translation.classifier_workdir``. Ignored by SDEdit.
          t0: the noise level the images are diffused to, in ``(sde.eps, sde.T]``
            (SDEdit's realism / faithfulness trade-off); ``None`` =
            ``config.translation.t0``. A sweep over ``t0`` compiles once.

        Returns:
          float32 numpy in ``[0, 1]`` shaped like ``images``.

        Raises:
          ValueError: an unknown method, a run that is not an unconditional score
            model, EGSDE without a classifier run or with one trained on other
            domains, sizes or processes, images of another size or channels.
        """
        pixels, single = as_pixels(images)
        if tuple(pixels.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"images must be {self.image_shape} (H, W, C), the model's size; got {pixels.shape[1:]}")
        method = self.config.translation.method if method is None else method
        classifier = self._translation_classifier(method, classifier_workdir)
        out = self._translate(pixels / 127.5 - 1.0, method, classifier, key=_as_key(key, self.config.sampling.seed),
                              sampler=_check_sampler(sampler), t0=t0)
        return to_unit(out, single)

    def _translation_classifier(self, method, classifier_workdir=None):
        """Check the method and runs; EGSDE: restore the classifier, ``(graphdef, params, state, sde, time_input)``."""
        from diffjax.pipelines.translation import TRANSLATION_METHODS, classifier_run_problem, score_run_problem

        if method not in TRANSLATION_METHODS:
            raise ValueError(f"translation.method must be one of {list(TRANSLATION_METHODS)}, got {method!r}")
        problem = score_run_problem(self.config)
        if problem:
            raise ValueError(f"{self.workdir}: {problem}")
        if method != "egsde":
            return None
        cls_dir = classifier_workdir if classifier_workdir is not None else self.config.translation.classifier_workdir
        if not cls_dir:
            raise ValueError("EGSDE needs a domain-classifier run: pass --config.translation.classifier_workdir=DIR "
                             "(trained with configs/translation_fashion_mnist.py:classifier or any domain_classifier config)")
        if not os.path.isdir(cls_dir):
            raise ValueError(f"translation.classifier_workdir {cls_dir} does not exist")
        cls_config = load_run_config(cls_dir)
        network = builders.build_pipeline(cls_config).network if cls_config.task.name in builders.PIPELINES else ""
        shape = ()
        if network == "classifier":
            mc = load_model_config(cls_dir, "classifier")
            shape = (mc.image_size, mc.image_size, mc.in_channels)
        problem = classifier_run_problem(self.config, cls_config, self.image_shape, shape)
        if problem:
            raise ValueError(f"classifier run {cls_dir}: {problem}")
        graphdef, params, state, _, _ = restore_ema_model(cls_config, cls_dir, self.mesh)
        return graphdef, params, state, cls_config.loss.time_input

    def _translate(self, images, method, classifier, *, key, sampler=None, progress=None, t0=None) -> np.ndarray:
        """``(N, H, W, C)`` images in [-1, 1] -> translated, in batches of ``config.sampling.batch_size``."""
        from diffjax.tasks.egsde import egsde, egsde_energy
        from diffjax.tasks.sdedit import sdedit

        c, tr = self.config, self.config.translation
        sampler = sampler or builders.build_sampler(c)
        batch = min(c.sampling.batch_size, len(images))
        # Energy weights are traced arguments too; only a weight of exactly 0 (no term) changes the program.
        weights = np.asarray([tr.lambda_s, tr.lambda_i], np.float32)
        cache_key = ("translate", method, batch, sampler, tr.lambda_s == 0, tr.lambda_i == 0)
        if cache_key not in self._compiled:
            sde = self.sde

            # t0 is an argument (traced): a sweep over t0 compiles once.
            def run(params, cls_params, x, key, t0, weights):
                score_fn = self._score_fn(params)
                if method == "sdedit":
                    out = sdedit(score_fn, sde, x, key=key, t0=t0, sampler=sampler, repeats=int(tr.repeats))
                else:
                    graphdef, _, state, time_input = classifier
                    energy = egsde_energy(
                        classifier_feature_fn(graphdef, cls_params, state, sde, time_input),
                        lambda_s=0.0 if tr.lambda_s == 0 else weights[0], lambda_i=0.0 if tr.lambda_i == 0 else weights[1],
                        down_factor=int(tr.down_factor))
                    out = egsde(score_fn, sde, x, key=key, energy_fn=energy, t0=t0, sampler=sampler)
                return jax.numpy.clip(out, -1.0, 1.0)

            self._compiled[cache_key] = jax.jit(run, out_shardings=replicated(self.mesh))
        fn, cls_params = self._compiled[cache_key], (classifier[1] if classifier else None)
        name = "translation.t0" if t0 is None else "t0"
        if t0 is not None and (isinstance(t0, bool) or not isinstance(t0, (int, float, np.floating, np.integer))):
            raise ValueError(f"t0 must be a number in (sde.eps, sde.T], got {t0!r}")
        t0 = float(tr.t0 if t0 is None else t0)
        if not self.sde.eps < t0 <= self.sde.T:
            raise ValueError(f"{name} must lie in (sde.eps, sde.T] = ({self.sde.eps}, {self.sde.T}], got {t0}")
        out = []
        for b, start in enumerate(range(0, len(images), batch)):
            chunk = np.asarray(images[start:start + batch], np.float32)
            padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch - len(chunk), axis=0)])
            out.append(np.asarray(fn(self.params, cls_params, padded, jax.random.fold_in(key, b),
                                     np.float32(t0), weights))[:len(chunk)])
            if progress is not None:
                progress(b + 1)
        return np.concatenate(out)

    # -- restoration -----------------------------------------------------------
    def restore(self, images, masks=None, *, key=None, sampler=None, kind: str | None = None) -> np.ndarray:
        """Restore images with the run's task: super-resolution, inpainting, uncropping, colorization, JPEG, ...

        Images of any size at least the network's are taken (larger ones are
        sampled whole, the score evaluated on overlapping blended tiles; SR3
        inputs need ``ceil(image_size / scale)`` pixels a side). Every image is
        checked as ``sample.py --input`` checks files, with the same messages.

        Args:
          images: numpy or JAX array, ``uint8`` or float in ``[0, 1]``, one image
            ``(H, W, C)`` or a batch ``(N, H, W, C)``. SR3: the low-resolution
            images. Inpainting / uncropping / RePaint: the images (values in the
            hole are ignored). Colorization: grayscale images (``C = 1``, or
            ``C = 3`` with equal channels). JPEG: the decoded JPEG images.
          masks: inpainting, uncropping and RePaint only: 1 (or ``True``) = known
            pixel to keep, 0 = pixel to fill; ``(H, W)`` (one mask for all) or
            ``(N, H, W)``, optionally with a trailing axis of 1.
          key: a ``jax.random.key`` or an int seed; ``None`` = ``config.sampling.seed``
            (then the outputs equal ``sample.py``'s for the same images). SR3
            image ``i`` uses ``fold_in(key, i)``; other tasks batch ``b`` of
            kind ``k`` ``fold_in(fold_in(key, k), b)``. The noise put in the
            hole of a Palette inpainting condition comes from
            ``config.sampling.seed`` (or the int ``key``).
          sampler: any :mod:`diffjax.samplers` sampler; ``None`` = the run's
            ``config.sampling``. RePaint walks its own schedule
            (``config.task.repaint``) and takes none.
          kind: for a multi-task Palette run without masks, ``"colorization"``
            or ``"jpeg"``; otherwise implied by the task and ``masks``.

        Returns:
          float32 numpy in ``[0, 1]``, ``(N, H', W', C)`` for a batch or
          ``(H', W', C)`` for one image (SR3: ``H' = scale * H``; colorization:
          ``C = 3``; otherwise the input's size and the model's channels).

        Raises:
          ValueError: a run whose task generates (use :meth:`generate`), a bad
            dtype, range, rank or channel count, an image smaller than the model,
            masks missing, given to a task without holes, non-binary, mis-shaped,
            empty or full, a bad key, sampler or kind.
        """
        if self.task not in RESTORERS:
            raise ValueError(f"this run's task {self.task!r} generates images: use run.generate(n); "
                             f"run.restore is for the tasks {sorted(RESTORERS)}")
        pixels, single = as_pixels(images)
        key_seed = int(key) if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else None
        out = RESTORERS[self.task](self, pixels, masks, key=_as_key(key, self.config.sampling.seed),
                                   seed=self.config.sampling.seed if key_seed is None else key_seed,
                                   sampler=_check_sampler(sampler), kind=kind)
        return to_unit(np.stack(out), single)

    def _restore_arrays(self, pixels, masks, *, key, seed, sampler, kind):
        """Palette / RePaint: arrays -> checked :class:`RestorationInput` s -> :meth:`_restore_inputs`."""
        from diffjax.pipelines.restoration import make_input

        kinds = self.pipeline.input_kinds
        if masks is not None:
            if "inpainting" not in kinds:
                raise ValueError(f"masks were given but this run's task {self.task!r} has no holes to fill; "
                                 f"it takes {' or '.join(kinds)} images")
            if kind not in (None, "inpainting"):
                raise ValueError(f"masks go with kind='inpainting', got kind={kind!r}")
            known, kind = as_known_masks(masks, pixels.shape), "inpainting"
        else:
            others = [k for k in kinds if k != "inpainting"]
            if kind is None and len(others) == 1:
                kind = others[0]
            if kind not in others:
                need = ("masks (1 = keep, 0 = fill)" if not others else
                        f"kind= one of {others}" + (" or masks (1 = keep, 0 = fill)" if "inpainting" in kinds else ""))
                raise ValueError(f"this run's task {self.task!r} needs {need}, got kind={kind!r}")
            known = [None] * len(pixels)
        inputs = [make_input(f"{i:06d}.png", kind, pixels[i], known[i], self.image_shape, where=f"images[{i}]")
                  for i in range(len(pixels))]
        return self._restore_inputs(inputs, key=key, seed=seed, sampler=sampler)

    def _restore_inputs(self, inputs, *, key=None, seed=None, sampler=None) -> list[np.ndarray]:
        """Restore checked inputs (``sample.py --input``'s path); ``(H, W, C)`` images in ``[-1, 1]``."""
        from diffjax.pipelines.restoration import restore_inputs

        if sampler is not None and self.task == "repaint":
            raise ValueError("RePaint walks its own schedule (config.task.repaint); pass sampler=None")
        c = self.config
        return restore_inputs(self.pipeline, inputs, make_score_fn=self._make_score_fn, params=self.params,
                              sde=self.sde, sampler=sampler or builders.build_sampler(c), image_shape=self.image_shape,
                              key=_as_key(key, c.sampling.seed), batch_size=c.sampling.batch_size,
                              denoise=c.sampling.denoise, seed=c.sampling.seed if seed is None else seed,
                              compiled=self._compiled)

    def _super_resolve_arrays(self, pixels, masks, *, key, seed, sampler, kind):
        """SR3: check the low-resolution arrays as ``sample.py`` checks files, then super-resolve."""
        del seed
        from diffjax.pipelines.sr3 import low_res_size_problem

        if masks is not None or kind is not None:
            raise ValueError("super-resolution takes only the low-resolution images: pass masks=None, kind=None")
        channels = self.image_shape[2]
        if pixels.shape[-1] != channels:
            raise ValueError(f"images have {pixels.shape[-1]} channels; the model takes {channels}-channel images")
        problem = low_res_size_problem(pixels.shape[1:3], scale=self.pipeline.scale, tile=self.image_size)
        if problem is not None:
            raise ValueError(f"images: {problem}")
        return self._super_resolve(list(pixels / 127.5 - 1.0), key=key, sampler=sampler)

    @property
    def image_size(self) -> int:
        """The network's input height and width."""
        return self.image_shape[0]

    def _super_resolve(self, lows, *, key, sampler=None, progress=None) -> list[np.ndarray]:
        """SR3: each ``(h, w, C)`` low-resolution image in ``[-1, 1]`` -> its output (image ``i``: ``fold_in(key, i)``)."""
        from diffjax.pipelines.conditional import ConditionalTask, make_conditional_sr_fn
        from diffjax.pipelines.sr3 import make_sr_fn
        from diffjax.tasks.sr3 import upsample

        c, pipeline = self.config, self.pipeline
        sampler = sampler or builders.build_sampler(c)
        if ("sr", sampler) not in self._compiled:
            common = dict(channels=self.image_shape[2], tile=self.image_size, overlap=pipeline.tile_overlap,
                          prediction=c.model.prediction, time_input=c.loss.time_input, denoise=c.sampling.denoise,
                          clip_x0=pipeline.clip_denoised)
            if isinstance(pipeline, ConditionalTask):  # CDE / CDiffE / CMDE (docs/conditional.md)
                fn = make_conditional_sr_fn(self._graphdef, self._model_state, self.sde, sampler,
                                            method=pipeline.method, sde_y=pipeline.sde_y, **common)
            else:
                aug = getattr(pipeline, "sample_aug_level", 0.0) if pipeline.uses_aug_level else None
                # The low-resolution input itself goes in too, for the consistency projection.
                sr3_fn = make_sr_fn(self._graphdef, self._model_state, self.sde, sampler, aug_level=aug,
                                    projection=getattr(pipeline, "projection", "none"), **common)
                fn = lambda params, cond, key, low: sr3_fn(params, cond, key, low)  # noqa: E731
            self._compiled[("sr", sampler)] = jax.jit(fn)
        sr, out = self._compiled[("sr", sampler)], []
        takes_low = not isinstance(pipeline, ConditionalTask)
        for i, low in enumerate(lows):
            args = (self.params, upsample(low[None], pipeline.scale), jax.random.fold_in(key, i))
            out.append(np.asarray(sr(*args, low[None]) if takes_low else sr(*args))[0])
            if progress is not None:
                progress(i + 1, len(lows))
        return out


# What run.generate / run.restore do for each config.task.name (a task added
# later plugs in with one entry here and one in TASKS / RESTORE_TASKS below):
# GENERATORS: (run, n, key, sampler) -> (n, H, W, C) images in [-1, 1], or a
# list of stages (the last is returned); RESTORERS: (run, pixels (N, H, W, C)
# on the 0..255 scale, masks, *, key, seed, sampler, kind) -> list of images in [-1, 1].

GENERATORS = {
    "generate": Run._generate,
    "repaint": Run._generate,
    "cascade": Run._generate_cascade,
    "ldm": _ldm.generate_arrays,
}
RESTORERS = {
    "sr3": Run._super_resolve_arrays,
    "repaint": Run._restore_arrays,
    "palette_inpainting": Run._restore_arrays,
    "palette_uncropping": Run._restore_arrays,
    "palette_colorization": Run._restore_arrays,
    "palette_jpeg": Run._restore_arrays,
    "palette_multitask": Run._restore_arrays,
    "conditional_sr": Run._super_resolve_arrays,
    "conditional_inpainting": Run._restore_arrays,
    "autoencoder": _ldm.reconstruct_arrays,
    "ldm_sr": _ldm.super_resolve_arrays,
    "ldm_inpainting": _ldm.inpaint_arrays,
}


def load_run(workdir: str, overrides: dict | None = None) -> Run | LSGMRun | Segmenter:
    """Restore a finished or running run from its workdir (the EMA parameters of its latest checkpoint).

    The parameters are put on whatever devices are present (replicated), so a
    run trained on a TPU pod loads on a laptop's CPU and the other way round.

    Args:
      workdir: the ``--workdir`` of a ``train.py`` / :func:`train` run.
      overrides: dotted keys to values applied to the stored config, checked
        like ``sample.py``'s ``--config.a.b=v`` (e.g. ``{"sampling.steps": 20}``).

    Returns:
      A :class:`Run` for diffusion runs; an LSGM run gives a
      :class:`diffjax.run_lsgm.LSGMRun` (``generate``, ``nll_bound``,
      ``score_fn``) and a segmentation run a
      :class:`diffjax.run_segmentation.Segmenter` (``predict``, ``log_probs``).

    Raises:
      ValueError: a missing workdir, one without ``config.json``,
        ``model_config.json`` or a checkpoint, an unknown override key (naming
        the closest valid one) or a mistyped value, or a DDeP pretraining run
        (it does not segment; fine-tune it first).
    """
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir):
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    workdir = os.fspath(workdir)
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir} does not exist; expected the --workdir of a train.py run")
    config = apply_overrides(load_run_config(workdir), overrides)
    # Runs whose state is not one diffusion network get their own restored object.
    if config.task.name == "lsgm":
        return LSGMRun(workdir, config)
    if config.task.name in ("segmentation_features", "ddep_finetune"):
        return load_segmenter(workdir)
    if config.task.name == "ddep_pretrain":
        raise ValueError(f"{workdir} is a DDeP pretraining run: fine-tune it with configs/segmentation_ddep.py:finetune "
                         "(segmentation.pretrain_workdir) and load that run")
    return Run(config, workdir)


# -- sample.py: the same, writing files -----------------------------------------


def run_generate(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Samples from the EMA parameters, as PNG files and a grid.

    An unconditional run writes ``NNNNNN.png``; a class-conditional one writes
    ``num`` images per class, ``NNNNNN_classK.png``, and ``grid.png``.

    Args:
      config: the run config with any sampling overrides.
      workdir: the training run's directory.
      output: folder for ``000000.png``, ... and ``grid.png``.
      num: number of images.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.

    Raises:
      ValueError: ``num < 1`` or a workdir without a checkpoint.
    """
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    run = Run(config, workdir)
    classes = run.model_config.num_classes
    # A class-conditional network: num images per class, as the latent runs (ldm.run_ldm_generate).
    labels = np.repeat(np.arange(classes), num) if classes else None
    total = num * classes if classes else num
    batch = min(config.sampling.batch_size, total)
    with tqdm(total=-(-total // batch), desc="sample batches", disable=not distributed.is_lead()) as bar:
        images = run._generate(total, jax.random.key(config.sampling.seed), labels=labels,
                               progress=lambda done, total: bar.update(1))
    if distributed.is_lead():
        if classes:
            save_class_samples(output, images, labels)
        else:
            save_samples(output, images)
    per_class = f", {num} per class for {classes} classes" if classes else ""
    lead_print(f"wrote {total} samples (checkpoint step {run.step}, sampler {config.sampling.sampler}{per_class}) "
               f"to {output}")
    return {"output": output, "num": total, "step": run.step}


def run_restore(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Restore every image of ``input_dir`` with the run's Palette / RePaint task.

    Every input is checked (:func:`diffjax.pipelines.restoration.read_inputs`)
    before the model is restored; outputs are written once all are done.
    Images larger than the model are restored in blended tiles.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.

    Raises:
      ValueError: bad inputs (naming the file), or a workdir without a checkpoint.
    """
    from diffjax.pipelines.restoration import read_inputs, write_outputs

    mc = load_model_config(workdir)
    inputs = read_inputs(input_dir, (mc.image_size, mc.image_size, mc.in_channels),
                         builders.build_pipeline(config).input_kinds)
    run = Run(config, workdir)
    images = run._restore_inputs(inputs)
    if distributed.is_lead():
        write_outputs(output, inputs, images)
    lead_print(f"restored {len(inputs)} images (task {config.task.name}, checkpoint step {run.step}) into {output}")
    return {"output": output, "num": len(inputs), "step": run.step}


def run_sr3(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Super-resolve every PNG of ``input_dir`` into a PNG of the same name in ``output`` (docs/sr.md).

    Inputs are all checked before anything is sampled or written; outputs larger
    than the network's input are sampled as blended tiles.

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step}``.

    Raises:
      ValueError: bad inputs (naming every offending file), or a workdir without a checkpoint.
    """
    from diffjax.pipelines.sr3 import read_low_res_folder

    pipeline = builders.build_pipeline(config)
    mc = load_model_config(workdir)
    inputs = read_low_res_folder(input_dir, channels=mc.in_channels, scale=pipeline.scale, tile=mc.image_size)
    run = Run(config, workdir)
    steps = f"{config.sampling.sampler}, {config.sampling.get('steps', '?')} steps per image"
    with tqdm(total=len(inputs), desc=f"super-resolve ({steps})", unit="image",
              disable=not distributed.is_lead()) as bar:
        images = run._super_resolve([low for _, low in inputs], key=jax.random.key(config.sampling.seed),
                                    progress=lambda done, total: bar.update(1))
    if distributed.is_lead():
        os.makedirs(output, exist_ok=True)
        for (name, _), image in zip(inputs, images):
            save_png(os.path.join(output, name), to_uint8(image))
    lead_print(f"super-resolved {len(images)} images x{pipeline.scale} (checkpoint step {run.step}) into {output}")
    return {"output": output, "num": len(images), "step": run.step}


def run_cascade(config: ml_collections.ConfigDict, workdir: str, output: str, num: int) -> dict:
    """Class labels -> base stage -> SR stages; writes each stage's images (docs/sr.md).

    Returns:
      ``{"output": folder, "num": num, "stages": number of stages}``.

    Raises:
      ValueError: a missing or looping ``previous_workdir`` chain, or a stage without a checkpoint.
    """
    run = Run(config, workdir)
    with tqdm(desc=f"cascade stages ({num} images)", disable=not distributed.is_lead()) as bar:
        images, labels = run._cascade(num, jax.random.key(config.sampling.seed), progress=lambda i: bar.update(1))
    if distributed.is_lead():
        for i, stage_images in enumerate(images):
            folder = os.path.join(output, f"stage{i}_{stage_images.shape[1]}px")
            for j, img in enumerate(to_uint8(stage_images)):
                save_png(os.path.join(folder, f"{j:06d}_class{labels[j]}.png"), img)
            save_grid(os.path.join(folder, "grid.png"), stage_images[:256])
    lead_print(f"cascade of {len(images)} stages wrote {num} images per stage into {output}")
    return {"output": output, "num": num, "stages": len(images)}


def run_translate(config: ml_collections.ConfigDict, workdir: str, output: str, input_dir: str) -> dict:
    """Translate every PNG of ``input_dir`` with ``config.translation.method`` (SDEdit / EGSDE).

    Every check (method, score run, classifier run, input files) runs before
    the model is restored and before anything is written (docs/translation.md).

    Returns:
      ``{"output": folder, "num": images written, "step": checkpoint step, "method": method}``.

    Raises:
      ValueError: see :meth:`Run.translate`, and input files of another size.
    """
    from diffjax.pipelines.translation import TRANSLATION_METHODS, read_translation_inputs, score_run_problem

    method = config.translation.method
    if method not in TRANSLATION_METHODS:
        raise ValueError(f"translation.method must be one of {list(TRANSLATION_METHODS)}, got {method!r}")
    problem = score_run_problem(config)
    if problem:
        raise ValueError(f"{workdir}: {problem}")
    mc = load_model_config(workdir)
    inputs = read_translation_inputs(input_dir, (mc.image_size, mc.image_size, mc.in_channels))
    run = Run(config, workdir)
    classifier = run._translation_classifier(method)
    images = np.stack([image for _, image in inputs])
    batch = min(config.sampling.batch_size, len(images))
    with tqdm(total=-(-len(images) // batch), desc=f"{method} batches", disable=not distributed.is_lead()) as bar:
        out = run._translate(images, method, classifier, key=jax.random.key(config.sampling.seed),
                             progress=lambda done: bar.update(1))
    if distributed.is_lead():
        os.makedirs(output, exist_ok=True)
        for (name, _), image in zip(inputs, out):
            save_png(os.path.join(output, name), to_uint8(image))
    lead_print(f"{method}: translated {len(images)} images (t0 {config.translation.t0}, checkpoint step {run.step}) "
               f"into {output}")
    return {"output": output, "num": len(images), "step": run.step, "method": method}


# What sample.py does for each config.task.name. A task plugs in with one entry:
# TASKS generate from noise, task(config, workdir, output, num) -> summary dict;
# RESTORE_TASKS restore --input IN_DIR, task(config, workdir, output, input_dir).
# A task in both (RePaint) generates without --input and restores with it.

TASKS = {
    "generate": run_generate,
    "repaint": run_generate,
    "cascade": run_cascade,
    "ldm": _ldm.run_ldm_generate,
    "lsgm": run_lsgm_generate,
}
RESTORE_TASKS = {
    "sr3": run_sr3,
    "repaint": run_restore,
    "palette_inpainting": run_restore,
    "palette_uncropping": run_restore,
    "palette_colorization": run_restore,
    "palette_jpeg": run_restore,
    "palette_multitask": run_restore,
    "conditional_sr": run_sr3,
    "conditional_inpainting": run_restore,
    "autoencoder": _ldm.run_reconstruct,
    "ldm_sr": _ldm.run_ldm_sr,
    "ldm_inpainting": _ldm.run_ldm_inpaint,
    # Segmentation runs write name_label.png + name_uncertainty.png (docs/segmentation.md).
    "segmentation_features": run_segment,
    "ddep_finetune": run_segment,
    "ddep_pretrain": run_segment,  # refuses: a pretraining run does not segment
}


def sample_from_workdir(config: ml_collections.ConfigDict, workdir: str, *, output: str | None = None,
                        num: int | None = None, input_dir: str | None = None) -> dict:
    """What ``sample.py`` does: dispatch on ``config.task.name`` through :data:`TASKS` / :data:`RESTORE_TASKS`.

    Args:
      config: the run's config (:func:`diffjax.run_config.load_run_config`) with
        any overrides (e.g. ``sampling.sampler``).
      workdir: the training run's directory.
      output: output folder (default ``WORKDIR/generated``, or ``WORKDIR/restored``
        for restoration).
      num: images to generate (default ``config.sampling.num_samples``).
      input_dir: a folder of inputs, for restoration tasks.

    Returns:
      The task's summary dict (``output``, ``num``, ...).

    Raises:
      ValueError: an unknown task, ``input_dir`` missing for a restoration-only
        task or given to a generating one, a config off the schema, or bad inputs.
    """
    task = config.task.name
    if config.get("translation") is not None and config.translation.method:
        # SDEdit / EGSDE on an unconditional score run (docs/translation.md).
        if input_dir is None:
            raise ValueError(f"translation.method={config.translation.method!r} translates images: pass --input IN_DIR")
        builders.validate_config(config, get_base_config())
        output = check_output_dir(output or os.path.join(workdir, "translated"), [input_dir])
        return run_translate(config, workdir, output, input_dir)
    if task in RESTORE_TASKS and (input_dir is not None or task not in TASKS):
        if input_dir is None:
            raise ValueError(f"this run's task {task!r} restores images: pass --input IN_DIR (and --output OUT_DIR)")
        builders.validate_config(config, get_base_config())
        output = check_output_dir(output or os.path.join(workdir, "restored"), [input_dir])
        return RESTORE_TASKS[task](config, workdir, output, input_dir)
    if task not in TASKS:
        raise ValueError(f"unknown sampling task {task!r}; expected one of {sorted(TASKS)}")
    if input_dir is not None:
        raise ValueError(f"--input is for restoration and translation; this run's task {task!r} generates from noise "
                         "unless a translation method is set: add --config.translation.method=sdedit (or egsde) "
                         "to translate the images of --input")
    builders.validate_config(config, get_base_config())
    output = check_output_dir(output or os.path.join(workdir, "generated"))
    num = config.sampling.num_samples if num is None else num
    return TASKS[task](config, workdir, output, num)
