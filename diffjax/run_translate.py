"""SDEdit and EGSDE on a restored score run: :meth:`diffjax.Run.translate` (a mixin) and a classifier's features."""

from __future__ import annotations

import jax
import numpy as np

from diffjax import builders, distributed, fingerprint
from diffjax import workdir_io
from diffjax.builders import load_model_config, restore_ema_model
from diffjax.run_checks import as_key as _as_key, as_pixels, check_sampler as _check_sampler, to_unit
from diffjax.run_config import load_run_config
from diffjax.sharding import replicated
from diffjax.training import model_from_state

__all__ = ["TranslateMixin", "classifier_feature_fn", "check_translation"]


def classifier_feature_fn(graphdef, params, model_state, sde, time_input: str):
    """``feature_fn(x, t) -> (B, h, w, C)``, the middle features of a :class:`diffjax.nn.Classifier` (as
    :func:`restore_ema_model` gives it, trained under ``sde`` with ``time_input``), for
    :func:`diffjax.tasks.egsde_energy`."""
    from diffjax.parametrization import network_time_input

    model = model_from_state(graphdef, params, model_state)
    return lambda x, t: model.features(x, network_time_input(sde, t, time_input))


def check_translation(config, workdir: str, method: str) -> None:
    """Refuse an unknown translation method or a run that is not an unconditional score model."""
    from diffjax.pipelines.translation import TRANSLATION_METHODS, score_run_problem

    if method not in TRANSLATION_METHODS:
        raise ValueError(f"translation.method must be one of {list(TRANSLATION_METHODS)}, got {method!r}")
    problem = score_run_problem(config)
    if problem:
        raise ValueError(f"{workdir}: {problem}")


class TranslateMixin:
    """:meth:`translate` and :attr:`feature_fn` of :class:`diffjax.Run` (state: the Run's)."""

    @property
    def feature_fn(self):
        """A domain-classifier run's middle features, for :func:`diffjax.tasks.egsde_energy`.

        ``feature_fn(x, t) -> (B, h, w, C)``: the classifier's middle-block
        features of ``x`` (``(B, *image_shape)`` in ``[-1, 1]``) at times ``t``
        (``(B,)``), with the EMA parameters, the run's process and time input:
        ``dj.tasks.egsde_energy(dj.load_run(CLASSIFIER_RUN).feature_fn, ...)``
        is the energy ``sample.py --config.translation.method=egsde`` builds. A new closure per access;
        a ValueError if this run did not train a classifier (``domain_classifier``).
        """
        if getattr(self.pipeline, "network", "unet") != "classifier":
            raise ValueError(f"{self.workdir} is a {self.task!r} run; feature_fn needs a domain-classifier run")
        return classifier_feature_fn(self._graphdef, self.params, self._model_state, self.sde,
                                     self.config.loss.time_input)

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
        if not self._explains_translation():  # another kind: say what it can do (a diffusion run's checks say why not)
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
        from diffjax.pipelines.translation import classifier_run_problem

        check_translation(self.config, self.workdir, method)
        if method != "egsde":
            return None
        cls_dir = classifier_workdir if classifier_workdir is not None else self.config.translation.classifier_workdir
        if not cls_dir:
            raise ValueError("EGSDE needs a domain-classifier run: pass --config.translation.classifier_workdir=DIR "
                             "(trained with configs/translation_fashion_mnist.py:classifier or any domain_classifier config)")
        if not workdir_io.isdir(cls_dir):
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
        from diffjax.tiling import default_overlap, tiled_score_fn

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
                                              overlap=default_overlap(self.image_size))
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

