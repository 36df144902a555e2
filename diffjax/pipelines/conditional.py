"""Host-side glue of the conditional score estimators (CDE / CDiffE / CMDE, docs/conditional.md).

Two tasks, each trainable with any of the three estimators (``method``):

* ``conditional_sr``: x4 (any integer) super-resolution. The condition ``y`` is
  SR3's: the 8-bit low-resolution image upsampled bicubically to the output size.
* ``conditional_inpainting``: the condition is Palette's (known pixels, noise in
  the hole, plus the mask as a channel).

The batches are the SR3 / Palette ones; what differs is the loss
(:func:`diffjax.losses.make_conditional_loss_fn`), which diffuses ``y`` at the
network's time for ``cdiffe`` and ``cmde``, and the sampling call
(:func:`diffjax.tasks.conditional.conditional_sample`), which draws ``y_t`` at
every step. A ``cmde`` network is told the condition's noise level
``sigma_y(t)`` through the UNet's second scalar input (``aug_level``).
"""

from __future__ import annotations

from diffjax.losses import CONDITIONAL_METHODS
from diffjax.pipelines.palette import PaletteInpainting
from diffjax.pipelines.sr3 import SR3Pipeline
from diffjax.sde import VESDE

__all__ = ["ConditionalTask", "ConditionalSR", "ConditionalInpainting", "make_cond_score_fn", "make_conditional_sr_fn"]


class ConditionalTask:
    """The estimator choice shared by both tasks: ``method`` and the condition's own process."""

    method: str = "cde"
    sde_y = None

    def _set_method(self, method: str, y_sigma_min: float, y_sigma_max: float) -> None:
        if method not in CONDITIONAL_METHODS:
            raise ValueError(f"unknown conditional estimator method={method!r}; expected one of {CONDITIONAL_METHODS}")
        self.method = method
        # The paper's slow process for y (CMDE): VE with sigma_max_y = 1.
        self.sde_y = VESDE(sigma_min=y_sigma_min, sigma_max=y_sigma_max) if method == "cmde" else None

    def model_fields(self) -> dict:
        """``UNetConfig`` fields of the task: a CMDE network takes the level of ``y_t`` as a second scalar."""
        return {"aug_level_embedding": True} if self.method == "cmde" else {}

    def bind_condition(self, score_for_condition, cond, sde, sampler, key):
        """CDE binds the clean ``y``; CDiffE / CMDE draw a fresh ``y_t`` at every step from part of ``key``."""
        import jax

        from diffjax.tasks.conditional import conditional_score, default_y_noise

        y_key, key = jax.random.split(key)
        score_fn = conditional_score(lambda x, y_in, t: score_for_condition(y_in)(x, t), sde, cond, key=y_key,
                                     method=self.method, sde_y=self.sde_y, y_noise=default_y_noise(sampler))
        return score_fn, key


class ConditionalSR(ConditionalTask, SR3Pipeline):
    """Super-resolution by ``scale`` with a CDE, CDiffE or CMDE network.

    Args:
      method: ``"cde"``, ``"cdiffe"`` or ``"cmde"``.
      scale: integer upsampling factor.
      y_sigma_min, y_sigma_max: the VE process of ``y`` for ``cmde`` (the paper: ``sigma_max_y = 1``).
      tile_overlap, clip_denoised: as :class:`~diffjax.pipelines.sr3.SR3Pipeline`.
    """

    name = "conditional_sr"

    def __init__(self, method: str = "cde", scale: int = 4, y_sigma_min: float = 0.01, y_sigma_max: float = 1.0,
                 tile_overlap: int = 8, clip_denoised: bool = True):
        SR3Pipeline.__init__(self, scale=scale, tile_overlap=tile_overlap, clip_denoised=clip_denoised)
        self._set_method(method, y_sigma_min, y_sigma_max)


class ConditionalInpainting(ConditionalTask, PaletteInpainting):
    """Inpainting with a CDE, CDiffE or CMDE network; masks and condition as Palette's.

    Args:
      method: ``"cde"``, ``"cdiffe"`` or ``"cmde"``.
      mask_kinds, hole_loss_only: as :class:`~diffjax.pipelines.palette.PaletteInpainting`.
      y_sigma_min, y_sigma_max: the VE process of ``y`` for ``cmde``.
    """

    name = "conditional_inpainting"

    def __init__(self, method: str = "cde", mask_kinds=("free_form", "box"), hole_loss_only: bool = True,
                 y_sigma_min: float = 0.01, y_sigma_max: float = 1.0):
        PaletteInpainting.__init__(self, mask_kinds=mask_kinds, hole_loss_only=hole_loss_only)
        self._set_method(method, y_sigma_min, y_sigma_max)


# -- the network as a conditional score -----------------------------------------


def make_cond_score_fn(model, sde, *, method: str, sde_y, prediction: str, time_input: str,
                       y_time_input: str = "sigma"):
    """``cond_score_fn(x_t, y_in, t)`` of a trained UNet, as the loss fed it.

    Args:
      model: the UNet (parameters bound).
      sde: the process of ``x``.
      method, sde_y: the estimator the network was trained as.
      prediction, time_input: how the network was trained.
      y_time_input: the scalar a ``cmde`` network was told about ``y_t`` (the loss's default).

    Returns:
      ``cond_score_fn(x_t, y_in, t)``.
    """
    from diffjax.parametrization import convert, network_time_input

    def cond_score_fn(x, y_in, t):
        extra = {} if method != "cmde" else {"aug_level": network_time_input(sde_y, t, y_time_input)}
        pred = model(x, network_time_input(sde, t, time_input), cond=y_in, **extra)
        return convert(pred, source=prediction, target="score", x=x, t=t, sde=sde)

    return cond_score_fn


def make_conditional_sr_fn(graphdef, model_state, sde, sampler, *, method: str, sde_y, channels: int, tile: int,
                           overlap: int, prediction: str, time_input: str, denoise: bool = True,
                           clip_x0: bool = True):
    """``sr(params, cond, key) -> images`` for a CDE / CDiffE / CMDE SR network (pure; jit per input size).

    Outputs larger than the network's input are sampled as blended tiles
    (:func:`diffjax.tasks.sr3.tiled_score_fn`); ``y_t`` is drawn for the whole
    image and tiled with ``x``, so overlapping tiles see the same condition.

    Args:
      graphdef, model_state: the network's structure and non-trainable variables.
      sde, sampler: the process it was trained under and the sampler to use.
      method, sde_y: the estimator.
      channels: output channels.
      tile: the network's input size.
      overlap: tile overlap in output pixels.
      prediction, time_input: how the network was trained.
      denoise: finish with a Tweedie step.
      clip_x0: clip the implied ``x0`` to ``[-1, 1]`` at every evaluation.

    Returns:
      The pure function; ``cond`` is the upsampled low-resolution batch ``(B, H, W, C)``.
    """
    import jax
    import jax.numpy as jnp

    from diffjax.tasks.conditional import conditional_sample
    from diffjax.tasks.sr3 import clip_denoised
    from diffjax.tiling import tiled_score_fn
    from diffjax.training import model_from_state

    def sr(params, cond, key):
        model = model_from_state(graphdef, params, model_state)
        net = make_cond_score_fn(model, sde, method=method, sde_y=sde_y, prediction=prediction,
                                 time_input=time_input)
        tile_score = lambda x, t, y_in: net(x, y_in, t)  # sr3's (x, t, cond) order
        if clip_x0:
            tile_score = clip_denoised(tile_score, sde)

        def whole_image_score(x, y_in, t):
            return tiled_score_fn(tile_score, y_in, tile, overlap)(x, t)

        prior_key, key = jax.random.split(key)
        x_init = sde.prior_sample(prior_key, (*cond.shape[:3], channels))
        x, _ = conditional_sample(whole_image_score, sde, cond, x_init, key=key, sampler=sampler, method=method,
                                  sde_y=sde_y, denoise=denoise)
        return jnp.clip(x, -1.0, 1.0)

    return sr
