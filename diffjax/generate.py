"""Image generation from a network's parameters, shared by training (grids, evaluation) and sampling."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from diffjax.parametrization import model_score_fn
from diffjax.samplers.base import Sampler, sample
from diffjax.sde import SDE
from diffjax.training import model_from_state
from diffjax.typing import Array, PRNGKey, PyTree

__all__ = ["make_generate_fn", "generate_batches"]


def make_generate_fn(graphdef, model_state: PyTree, sde: SDE, sampler: Sampler, image_shape: tuple[int, int, int],
                     batch_size: int, *, prediction: str = "eps", time_input: str = "t", denoise: bool = True,
                     batch_sharding: jax.sharding.Sharding | None = None) -> Callable[[PyTree, PRNGKey], Array]:
    """Build ``generate(params, key) -> images`` for a batch of ``batch_size`` images (pure; jit it once per shape).

    Args:
      graphdef, model_state: the network's structure and non-trainable variables, trained under ``sde`` with
        ``prediction`` and ``time_input`` (:mod:`diffjax.parametrization`); ``image_shape`` is its ``(H, W, C)``.
      sampler: any :mod:`diffjax.samplers` sampler; ``denoise``: finish with a Tweedie denoising step.
      batch_sharding: optional sharding of the batch axis (e.g.
        :func:`diffjax.sharding.data_sharding`), so the devices of every host
        share the sampling loop. Random draws do not depend on it (JAX's
        partitionable threefry), so 1 device and 8 give the same images up to
        float rounding.

    Returns:
      A pure function of ``(params, key, labels=None, context=None)`` returning
      ``(batch_size, H, W, C)`` images, clipped to ``[-1, 1]``; ``labels``
      (``(batch_size,)`` integers) conditions a class-conditional network,
      ``context`` (``(batch_size, tokens, context_dim)``) a cross-attention one.
    """
    shape = (batch_size, *image_shape)

    def generate(params: PyTree, key: PRNGKey, labels: Array | None = None, context: Array | None = None) -> Array:
        model = model_from_state(graphdef, params, model_state)
        inputs = {k: v for k, v in (("labels", labels), ("context", context)) if v is not None}
        net = lambda x, c: model(x, c, **inputs)  # noqa: E731
        score_fn = model_score_fn(net, sde, prediction=prediction, time_input=time_input)
        prior_key, sample_key = jax.random.split(key)
        x_init = sde.prior_sample(prior_key, shape)
        if batch_sharding is not None:
            x_init = jax.lax.with_sharding_constraint(x_init, batch_sharding)
        x, _ = sample(score_fn, sde, x_init, key=sample_key, sampler=sampler, denoise=denoise)
        return jax.numpy.clip(x, -1.0, 1.0)

    return generate


def generate_batches(generate_jit, params: PyTree, key: PRNGKey, num: int, batch_size: int, progress=None,
                     labels: np.ndarray | None = None, context: np.ndarray | None = None) -> np.ndarray:
    """Call a jitted ``generate`` until ``num`` images exist (batch ``i`` uses ``fold_in(key, i)``).

    ``generate_jit`` is ``jax.jit(make_generate_fn(...))`` for ``batch_size`` images, called with ``params``;
    ``progress(done, total)`` follows each batch. Image ``j`` is conditioned on ``labels[j]`` (``(num,)``) and
    ``context[j]`` (``(num, tokens, context_dim)``) where given; the last batch is padded with its last row,
    the padding dropped. Returns ``(num, H, W, C)`` float32 numpy images in ``[-1, 1]``.
    """
    out = []
    batches = -(-num // batch_size)
    for i in range(batches):
        batch_key = jax.random.fold_in(key, i)
        inputs = {}
        for name, values, dtype in (("labels", labels, np.int32), ("context", context, np.float32)):
            if values is not None:
                part = np.asarray(values[i * batch_size:(i + 1) * batch_size], dtype)
                inputs[name] = np.concatenate([part, np.repeat(part[-1:], batch_size - len(part), axis=0)])
        images = generate_jit(params, batch_key, **inputs)
        out.append(np.asarray(jax.device_get(images)))
        if progress is not None:
            progress(i + 1, batches)
    return np.concatenate(out)[:num]
