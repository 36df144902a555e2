"""Array and key aliases, and the score-function protocol every sampler takes.

Kept in one module so the rest of the package (and user code) can annotate
against the same names.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import jax

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Shape = tuple[int, ...]


class ScoreFn(Protocol):
    """``score_fn(x, t) -> array shaped like x``.

    ``x`` has shape ``(batch, *dims)`` and ``t`` has shape ``(batch,)``. The
    result approximates ``grad_x log p_t(x)``. Any JAX-traceable callable fits:
    an analytic score, an NNX/Equinox/Haiku model wrapped with
    :func:`diffjax.parametrization.model_score_fn`, or a guided score.
    """

    def __call__(self, x: Array, t: Array) -> Array: ...


DenoiserFn = Callable[[Array, Array], Array]
