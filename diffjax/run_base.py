"""What every run kind shares: the restored :class:`Run` and the checks of a run's workdir and training section.

Below the run kinds (:mod:`diffjax.ldm`, :mod:`diffjax.run_lsgm`,
:mod:`diffjax.run_segmentation`, :mod:`diffjax.run_training`) and above the
builders (docs/ARCHITECTURE.md, "Layers"): a kind subclasses :class:`Run` and
adds its own entries to ``Run.GENERATORS`` / ``Run.RESTORERS``.
"""

from __future__ import annotations

import logging
import os
import re

import jax
import ml_collections
import numpy as np

from diffjax import builders, distributed, fingerprint
from diffjax.builders import load_model_config, restore_ema_model
from diffjax.generate import generate_batches, make_generate_fn
from diffjax.parametrization import model_score_fn
from diffjax.run_arrays import as_key as _as_key, as_known_masks, as_pixels, check_sampler as _check_sampler, to_unit
from diffjax.run_config import get_base_config, load_run_config
from diffjax.sharding import data_sharding, make_mesh, replicated
from diffjax.training import model_from_state

__all__ = ["Run", "lead_print", "check_workdir_writable", "check_workdir_path", "check_num", "check_channels", "write_named", "restore_or_start", "NONFINITE_MODES", "classifier_feature_fn"]

NONFINITE_MODES = ("stop", "skip")


def check_workdir_path(workdir) -> str:
    """``workdir`` as a path string, or a ValueError if it is not one (the first check of train and load)."""
    if not isinstance(workdir, (str, os.PathLike)) or not str(workdir):
        raise ValueError(f"workdir must be a directory path, got {workdir!r}")
    workdir = os.fspath(workdir)
    _check_not_url(workdir)
    return workdir


def _check_not_url(workdir: str) -> None:
    """Refuse ``gs://...`` and other URLs: the run layer writes with ``os``/``open``, so a
    URL would silently become a local folder named ``gs:`` under the current directory."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", workdir)
    if match:
        raise ValueError(f"workdir {workdir!r} is a {match.group(1)}:// URL; a workdir must be a file-system path: "
                         "mount the bucket (e.g. with gcsfuse) and pass the path of the mount")


def check_num(num: int) -> None:
    """``sample.py --num``: at least one image."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")


def check_channels(pixels: np.ndarray, channels: int) -> None:
    """User images (``(N, H, W, C)``) must have the model's channel count."""
    if pixels.shape[-1] != channels:
        raise ValueError(f"images have {pixels.shape[-1]} channels; the model takes {channels}-channel images")


def write_named(output: str, inputs, images) -> None:
    """``sample.py``'s writer for file inputs: process 0 writes ``images[i]`` (``[-1, 1]``) as ``output/name_i``.

    Args:
      output: the output folder (created).
      inputs: ``(name, anything)`` pairs, as the input readers give them.
      images: one image per input.
    """
    from diffjax.logging_utils import save_png, to_uint8

    if distributed.is_lead():
        os.makedirs(output, exist_ok=True)
        for (name, _), image in zip(inputs, images):
            save_png(os.path.join(output, name), to_uint8(image))


def restore_or_start(checkpointer, init_state, sharding):
    """The latest checkpoint's state restored onto ``sharding``, or ``init_state`` placed there if there is none.

    Every trainer resumes this way; a refused restore (another model's
    checkpoint) closes the checkpointer before the error propagates.
    """
    from diffjax.checkpoint import abstract_state

    if checkpointer.latest_step() is None:
        return jax.device_put(init_state, sharding)
    try:
        state = checkpointer.restore(abstract_state(lambda: init_state, sharding))
    except ValueError:
        checkpointer.close()
        raise
    if distributed.is_lead():
        logging.getLogger("diffjax.train").info("resumed from checkpoint step %d in %s", int(state.step),
                                                checkpointer.directory)
    return state


def check_workdir_writable(workdir: str) -> None:
    """Refuse a work directory that cannot be created or written, before anything is written.

    Raises:
      ValueError: naming the path that is in the way and what to do.
    """
    _check_not_url(os.fspath(workdir))
    path = os.path.abspath(workdir)
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"--workdir {workdir} cannot be created: {existing} is a file, not a directory; "
                         "choose another --workdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir {workdir} is not writable ({existing} does not allow writing); "
                         "choose a writable --workdir or fix its permissions")


def _check_training_section(tc: ml_collections.ConfigDict) -> None:
    for key, minimum in (("num_steps", 1), ("batch_size", 1), ("log_every", 1), ("ckpt_every", 1),
                         ("keep_checkpoints", 1), ("sample_every", 0), ("num_grid_samples", 0)):
        if isinstance(tc[key], bool) or not isinstance(tc[key], (int, np.integer)):
            raise ValueError(f"config.training.{key} must be an integer, got {tc[key]!r} "
                             f"({type(tc[key]).__name__}); e.g. --config.training.{key}=100")
        if tc[key] < minimum:
            raise ValueError(f"config.training.{key} must be >= {minimum}, got {tc[key]}")
    if not isinstance(tc.ema_decay, (int, float)) or not 0.0 <= tc.ema_decay < 1.0:
        raise ValueError(f"config.training.ema_decay must lie in [0, 1), got {tc.ema_decay!r}; e.g. 0.999")
    if tc.nonfinite not in NONFINITE_MODES:
        raise ValueError(f"config.training.nonfinite must be one of {list(NONFINITE_MODES)}, got {tc.nonfinite!r}")


def lead_print(message: str) -> None:
    """Print on process 0 only."""
    if distributed.is_lead():
        print(message)


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

    # -- what this run can do ----------------------------------------------------
    #: Every capability a run kind may have; a run lacking one raises ValueError naming its own.
    ALL_CAPABILITIES = ("generate", "restore", "translate", "score_fn", "sde", "sampler", "feature_fn",
                        "encode", "decode", "nll_bound", "predict", "log_probs")

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The methods and attributes of :data:`ALL_CAPABILITIES` this run has (its kind and task decide)."""
        from diffjax.pipelines.translation import score_run_problem

        if getattr(self.pipeline, "network", "unet") == "classifier":
            return ("feature_fn", "sde", "sampler")
        caps = [name for name, table in (("generate", self.GENERATORS), ("restore", self.RESTORERS))
                if self.task in table]
        if score_run_problem(self.config) is None:
            caps.append("translate")
        return tuple(caps) + ("score_fn", "sde", "sampler")

    def _require(self, name: str) -> None:
        """Raise ValueError if this run lacks capability ``name``, listing what it can do."""
        if name not in self.capabilities:
            task = getattr(self, "task", None) or self.config.task.name
            raise ValueError(f"run.{name}: {getattr(self, 'workdir', None) or 'this run'} is a {task!r} run "
                             f"({type(self).__name__}), which cannot do that; it can: {list(self.capabilities)}")

    def __getattr__(self, name: str):
        # Only reached when normal lookup fails: a capability attribute (``sde``) this kind never sets.
        if name in Run.ALL_CAPABILITIES:
            self._require(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def sampler(self):
        """The sampler of the run's ``config.sampling`` (what :meth:`generate` uses by default)."""
        self._require("sampler")
        return builders.build_sampler(self.config)

    def encode(self, images) -> np.ndarray:
        """Latent runs (:class:`diffjax.ldm.LatentRun`): images to latents. Other runs raise ValueError."""
        self._require("encode")

    def decode(self, latents) -> np.ndarray:
        """Latent runs (:class:`diffjax.ldm.LatentRun`): latents to images. Other runs raise ValueError."""
        self._require("decode")

    def nll_bound(self, images, **kwargs) -> np.ndarray:
        """LSGM runs (:class:`diffjax.run_lsgm.LSGMRun`): a bound on the NLL. Other runs raise ValueError."""
        self._require("nll_bound")

    def predict(self, images, **kwargs) -> np.ndarray:
        """Segmentation runs (:class:`diffjax.run_segmentation.Segmenter`): label maps. Other runs raise ValueError."""
        self._require("predict")

    def log_probs(self, images, **kwargs) -> np.ndarray:
        """Segmentation runs (:class:`diffjax.run_segmentation.Segmenter`): class log-probabilities."""
        self._require("log_probs")

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

        self._require("score_fn")

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
    def generate(self, n: int, *, key=None, sampler=None, labels=None, context=None) -> np.ndarray:
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
        if "generate" not in self.capabilities and "restore" not in self.capabilities:
            self._require("generate")
        if self.task not in self.GENERATORS:
            raise ValueError(f"this run's task {self.task!r} restores images: use run.restore(images, ...); "
                             f"run.generate is for the tasks {sorted(self.GENERATORS)}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        extra = {} if labels is None else {"labels": self._check_labels(labels, int(n))}
        if context is not None:
            extra["context"] = self._check_context(context, int(n))
        images = self.GENERATORS[self.task](self, int(n), _as_key(key, self.config.sampling.seed), _check_sampler(sampler),
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

    def _check_context(self, context, n: int) -> np.ndarray:
        """User cross-attention context -> ``(n, tokens, context_dim)`` float32, or a ValueError."""
        dim = getattr(self.model_config, "context_dim", 0)
        if self.task != "generate" or not dim:
            raise ValueError(f"context needs a 'generate' run with cross-attention (model.context_dim > 0); this "
                             f"run has task {self.task!r}, context_dim {dim}")
        array = np.asarray(context)
        if (array.ndim != 3 or array.shape[0] != n or array.shape[2] != dim or not np.issubdtype(array.dtype, np.floating)
                or not np.isfinite(array).all()):
            raise ValueError(f"context must be finite floats of shape ({n}, tokens, {dim}), "
                             f"got {array.dtype} of shape {array.shape}")
        return array.astype(np.float32)

    def _generate(self, num: int, key, sampler=None, progress=None, labels=None, context=None) -> np.ndarray:
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
                                labels=labels, context=context)

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
            with the model's channels (guides for SDEdit, source-domain images for
            EGSDE). SDEdit takes any size at least the model's (larger images are
            sampled whole, the score evaluated on overlapping blended tiles, as
            :meth:`restore` does); EGSDE's classifier needs the model's size.
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
        if type(self) is not Run:  # another kind: say what it can do (a diffusion run's checks say why not)
            self._require("translate")
        pixels, single = as_pixels(images)
        method = self.config.translation.method if method is None else method
        size, channels = self.image_size, self.image_shape[2]
        if pixels.shape[3] != channels or min(pixels.shape[1:3]) < size:
            raise ValueError(f"images must have {channels} channels and sides of at least {size} (the model's size; "
                             f"larger ones are tiled), got {pixels.shape[1:]}")
        if method == "egsde" and tuple(pixels.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"EGSDE's domain classifier sees whole images: they must be {self.image_shape} "
                             f"(H, W, C), got {pixels.shape[1:]}; SDEdit takes any larger size")
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
        fp = fingerprint.check_classifier(self.workdir, cls_dir)  # retrained since this run first used it: refused
        graphdef, params, state, _, _ = restore_ema_model(cls_config, cls_dir, self.mesh)
        if distributed.is_lead():
            fingerprint.record_classifier(self.workdir, fp)
        return graphdef, params, state, cls_config.loss.time_input

    def _translate(self, images, method, classifier, *, key, sampler=None, progress=None, t0=None) -> np.ndarray:
        """``(N, H, W, C)`` images in [-1, 1] -> translated, in batches of ``config.sampling.batch_size``."""
        from diffjax.tasks.egsde import egsde, egsde_energy
        from diffjax.tasks.sdedit import sdedit
        from diffjax.tiling import tiled_score_fn

        c, tr = self.config, self.config.translation
        sampler = sampler or builders.build_sampler(c)
        batch = min(c.sampling.batch_size, len(images))
        # Energy weights are traced arguments too; only a weight of exactly 0 (no term) changes the program.
        weights = np.asarray([tr.lambda_s, tr.lambda_i], np.float32)
        cache_key = ("translate", method, batch, images.shape[1:], sampler, tr.lambda_s == 0, tr.lambda_i == 0)
        if cache_key not in self._compiled:
            sde = self.sde

            # t0 is an argument (traced): a sweep over t0 compiles once.
            def run(params, cls_params, x, key, t0, weights):
                score_fn = self._score_fn(params)
                if x.shape[1:3] != (self.image_size, self.image_size):  # larger: blended tiles, as restore does
                    net = score_fn
                    score_fn = tiled_score_fn(lambda x, t, _: net(x, t), None, tile=self.image_size,
                                              overlap=max(1, self.image_size // 4))
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
        if "generate" not in self.capabilities and "restore" not in self.capabilities:
            self._require("restore")
        if self.task not in self.RESTORERS:
            raise ValueError(f"this run's task {self.task!r} generates images: use run.generate(n); "
                             f"run.restore is for the tasks {sorted(self.RESTORERS)}")
        pixels, single = as_pixels(images)
        key_seed = int(key) if isinstance(key, (int, np.integer)) and not isinstance(key, bool) else None
        out = self.RESTORERS[self.task](self, pixels, masks, key=_as_key(key, self.config.sampling.seed),
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
        check_channels(pixels, self.image_shape[2])
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

    # What run.generate / run.restore do for each config.task.name; a subclass
    # adds its kind's entries (diffjax.ldm.LatentRun). GENERATORS: (run, n, key,
    # sampler) -> (n, H, W, C) images in [-1, 1], or a list of stages (the last is
    # returned); RESTORERS: (run, pixels (N, H, W, C) on the 0..255 scale, masks, *,
    # key, seed, sampler, kind) -> list of images in [-1, 1].
    GENERATORS = {
        "generate": _generate,
        "repaint": _generate,
        "cascade": _generate_cascade,
    }
    RESTORERS = {
        "sr3": _super_resolve_arrays,
        "repaint": _restore_arrays,
        "palette_inpainting": _restore_arrays,
        "palette_uncropping": _restore_arrays,
        "palette_colorization": _restore_arrays,
        "palette_jpeg": _restore_arrays,
        "palette_multitask": _restore_arrays,
        "conditional_sr": _super_resolve_arrays,
        "conditional_inpainting": _restore_arrays,
    }
