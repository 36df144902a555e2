"""The restored :class:`Run` every run kind shares (a kind subclasses it and adds its task-table entries)."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from diffjax import builders
from diffjax import workdir_io
from diffjax.builders import restore_ema_model
from diffjax.generate import generate_batches, make_generate_fn
from diffjax.parametrization import model_score_fn
from diffjax.run_checks import as_key as _as_key, check_sampler as _check_sampler, to_unit
from diffjax.run_checks import (NONFINITE_MODES, check_channels, check_int, check_num,  # noqa: F401  (re-exported)
                                check_workdir_path, check_workdir_writable, lead_print, restore_or_start)
from diffjax.run_config import get_base_config, load_run_config
from diffjax.run_restore import RestoreMixin, read_restoration_files, read_sr_files
from diffjax.run_translate import TranslateMixin
from diffjax.sharding import data_sharding, make_mesh, replicated
from diffjax.training import model_from_state

__all__ = ["Run", "lead_print", "check_workdir_writable", "check_workdir_path", "check_num", "check_channels",
           "restore_or_start", "NONFINITE_MODES"]


class Run(RestoreMixin, TranslateMixin):
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
        # Only reached when normal lookup fails: a capability (``sde``, ``encode``, ``predict``) this kind lacks.
        if name in Run.ALL_CAPABILITIES:
            self._require(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def sampler(self):
        """The sampler of the run's ``config.sampling`` (what :meth:`generate` uses by default)."""
        self._require("sampler")
        return builders.build_sampler(self.config)

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
          context: for a ``generate`` run with cross-attention, ``(n, tokens, context_dim)`` finite floats.

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
        n = check_int(n, "n")
        extra = {} if labels is None else {"labels": self._check_labels(labels, n)}
        if context is not None:
            extra["context"] = self._check_context(context, n)
        images = self.GENERATORS[self.task](self, n, _as_key(key, self.config.sampling.seed), _check_sampler(sampler),
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
        """``(num, H, W, C)`` images in [-1, 1], batch ``i`` from ``fold_in(key, i)``; labels default ``arange % K``."""
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

    def _cascade(self, num: int, key, sampler=None, progress=None) -> tuple[list[np.ndarray], np.ndarray]:
        """Class labels ``arange(num) % classes`` -> base stage -> SR stages: each stage's images in [-1, 1], labels."""
        from diffjax.pipelines.cascade import Stage, sample_cascade

        if sampler is not None:
            raise ValueError("a cascade samples each stage with its own config.sampling; pass sampler=None")

        def stage(run_config, graphdef, params, model_state, mc, pipeline):
            return Stage(graphdef, params, model_state, builders.build_sde(run_config),
                         builders.build_sampler(run_config), (mc.image_size, mc.image_size, mc.in_channels),
                         run_config.model.prediction, run_config.loss.time_input, run_config.sampling.denoise,
                         pipeline if run_config.task.name == "cascade" else None, mc.num_classes)

        stages = [stage(self.config, self._graphdef, self.params, self._model_state, self.model_config, self.pipeline)]
        seen, run_dir, pipeline = {workdir_io.absolute(self.workdir)}, self.workdir, self.pipeline
        while stages[0].pipeline is not None:  # walk down from this SR stage to the base
            if not pipeline.previous_workdir:
                raise ValueError(f"{run_dir}: set --config.task.cascade.previous_workdir to the stage below's workdir")
            run_dir = pipeline.previous_workdir
            if workdir_io.absolute(run_dir) in seen:
                raise ValueError(f"the cascade's previous_workdir links loop back to {run_dir}")
            seen.add(workdir_io.absolute(run_dir))
            run_config = load_run_config(run_dir)
            pipeline = builders.build_pipeline(run_config)
            graphdef, params, model_state, mc, _ = restore_ema_model(run_config, run_dir, self.mesh)
            stages.insert(0, stage(run_config, graphdef, params, model_state, mc, pipeline))
        labels = np.arange(num) % max(stages[0].num_classes, 1)
        return sample_cascade(stages, labels, key, progress=progress), labels

    @property
    def image_size(self) -> int:
        """The network's input height and width."""
        return self.image_shape[0]

    # What run.generate / run.restore do for each config.task.name; a subclass
    # adds its kind's entries (diffjax.ldm.LatentRun). GENERATORS: (run, n, key,
    # sampler) -> (n, H, W, C) images in [-1, 1], or a list of stages (the last is
    # returned); RESTORERS: (run, pixels (N, H, W, C) on the 0..255 scale, masks, *,
    # key, seed, sampler, kind) -> list of images in [-1, 1].
    GENERATORS = {
        "generate": _generate,
        "repaint": _generate,
        "cascade": lambda run, num, key, sampler=None: run._cascade(num, key, sampler)[0],
    }
    _PIXEL_RESTORE = ("repaint", "palette_inpainting", "palette_uncropping", "palette_colorization", "palette_jpeg",
                      "palette_multitask", "conditional_inpainting")
    RESTORERS = {"sr3": RestoreMixin._super_resolve_arrays, "conditional_sr": RestoreMixin._super_resolve_arrays,
                 **dict.fromkeys(_PIXEL_RESTORE, RestoreMixin._restore_arrays)}
    # sample.py --input: task -> (read(config, workdir, input_dir) -> [(name, item)], checked before the model
    # is restored; restore(run, items, *, key, progress) -> images in [-1, 1], one per item).
    FILE_RESTORERS = {"sr3": (read_sr_files, RestoreMixin._super_resolve),
                      "conditional_sr": (read_sr_files, RestoreMixin._super_resolve),
                      **dict.fromkeys(_PIXEL_RESTORE, (read_restoration_files, RestoreMixin._restore_inputs))}

    def _explains_translation(self) -> bool:
        """Whether :meth:`translate`'s own checks say why this run cannot translate (a pixel-space score run)."""
        return type(self) is Run
