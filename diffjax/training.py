"""Training state, optimizer and the pure training step.

Nothing here calls ``jax.jit``: :func:`make_train_step` returns a plain
function, and the caller (``train.py``, tests) decides where the one compile
boundary goes, with ``donate_argnums`` and ``out_shardings``.

The model lives as ``(graphdef, params, model_state)`` from
``nnx.split(model, nnx.Param, ...)``: parameters are trained, the rest
(non-trainable variables, if the network has any) is carried along unchanged.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from diffjax.pipelines.base import MODEL_INPUTS
from diffjax.typing import Array, PRNGKey, PyTree

__all__ = [
    "TrainState",
    "make_lr_schedule",
    "make_optimizer",
    "create_train_state",
    "make_train_step",
    "ema_decay_at",
    "ema_update",
    "all_finite",
    "keep_finite",
    "model_from_state",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a run needs to continue exactly: a pytree of arrays.

    Attributes:
      step: number of optimizer updates applied so far (int32 scalar).
      params: trainable variables (``nnx.State`` of ``nnx.Param``).
      opt_state: optimizer state for ``params``.
      ema_params: exponential moving average of ``params`` (used for sampling).
      model_state: the model's non-trainable variables (often empty).
      nonfinite_steps: steps whose loss, gradient or updated parameters had a
        NaN/inf; their update was skipped (int32 scalar).
      first_nonfinite_step: the first such step (1-based, as ``step`` after it),
        0 if none (int32 scalar).
    """

    step: Array
    params: PyTree
    opt_state: PyTree
    ema_params: PyTree
    model_state: PyTree
    # Defaults keep older constructors (TrainState(step=..., params=..., ...)) valid.
    nonfinite_steps: Array = dataclasses.field(default_factory=lambda: jnp.zeros((), jnp.int32))
    first_nonfinite_step: Array = dataclasses.field(default_factory=lambda: jnp.zeros((), jnp.int32))

    def replace(self, **changes) -> "TrainState":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def make_lr_schedule(lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then cosine decay to 0 at ``total_steps``."""
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}")
    warmup_steps = min(warmup_steps, total_steps)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=lr,
        warmup_steps=warmup_steps,
        # optax needs decay_steps > warmup_steps; a run made only of warm-up keeps the peak.
        decay_steps=max(total_steps, warmup_steps + 1),
        end_value=0.0,
    )


def _decay_mask(params: PyTree) -> PyTree:
    # Weight decay on matrices and kernels only: decaying biases and norm
    # scales pulls them towards 0, which only hurts.
    return jax.tree.map(lambda p: jnp.ndim(p) > 1, params)


def make_optimizer(
    lr: float,
    warmup_steps: int,
    total_steps: int,
    weight_decay: float = 0.0,
    grad_clip: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    """AdamW with gradient clipping and a warm-up + cosine learning-rate schedule.

    Args:
      lr: peak learning rate.
      warmup_steps: linear warm-up length in steps.
      total_steps: length of the whole run (the cosine ends at 0 there).
      weight_decay: decoupled weight decay, applied to tensors of rank >= 2.
      grad_clip: clip gradients to this global norm first (``<= 0`` disables).
      b1, b2: Adam moment decay rates.

    Returns:
      An ``optax.GradientTransformation``.
    """
    chain = []
    if grad_clip > 0:
        chain.append(optax.clip_by_global_norm(grad_clip))
    chain.append(
        optax.adamw(
            make_lr_schedule(lr, warmup_steps, total_steps),
            b1=b1,
            b2=b2,
            weight_decay=weight_decay,
            mask=_decay_mask,
        )
    )
    return optax.chain(*chain)


def create_train_state(model: nnx.Module, optimizer: optax.GradientTransformation) -> tuple[Any, TrainState]:
    """Split an NNX model and build its initial training state.

    Args:
      model: the network (an ``nnx.Module``).
      optimizer: from :func:`make_optimizer` (or any optax transformation).

    Returns:
      ``(graphdef, state)``: the static model structure and a :class:`TrainState`
      at step 0 whose EMA equals the initial parameters.
    """
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        model_state=model_state,
    )
    return graphdef, state


def model_from_state(graphdef, params: PyTree, model_state: PyTree) -> nnx.Module:
    """Rebuild the NNX module from its graph definition and variables."""
    return nnx.merge(graphdef, params, model_state)


def ema_decay_at(step: Array, ema_decay: float) -> Array:
    """EMA decay at ``step``: ``min(ema_decay, (1 + step) / (10 + step))``.

    The warm-up keeps the average from being dominated by the random
    initialisation in short runs; long runs reach ``ema_decay`` after a few
    thousand steps.
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: PyTree, params: PyTree, step: Array, ema_decay: float) -> PyTree:
    """The moving average after the update of step ``step`` (0-based): decay :func:`ema_decay_at` ``(step)``."""
    decay = ema_decay_at(step, ema_decay)
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def all_finite(tree: PyTree) -> Array:
    """Whether every element of every leaf of ``tree`` is finite (a boolean scalar)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(tree)]))


def keep_finite(old, new, finite: Array):
    """The state after one step: ``new`` if ``finite``, else ``old``; the step advances either way.

    The non-finite guard of every trainer. A NaN/inf loss, gradient or updated
    parameter keeps parameters, optimizer state and EMA as they were (no host
    sync: the choice is made on device), but the step still advances so the data
    order stays that of every other run. ``old`` and ``new`` are the same
    dataclass with ``step``, ``nonfinite_steps`` (the running count of such
    steps) and ``first_nonfinite_step`` (the first, 1-based; 0 if none).
    """
    step = old.step + 1
    nonfinite_steps = old.nonfinite_steps + jnp.where(finite, 0, 1).astype(jnp.int32)
    first_bad = jnp.where(finite | (old.first_nonfinite_step > 0), old.first_nonfinite_step, step)
    kept = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return dataclasses.replace(kept, step=step, nonfinite_steps=nonfinite_steps,
                               first_nonfinite_step=first_bad.astype(jnp.int32))


def make_train_step(
    graphdef,
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    ema_decay: float,
    *,
    lr_schedule: optax.Schedule | None = None,
    use_labels: bool = False,
    use_dropout: bool = False,
    grad_accum: int = 1,
) -> Callable[[TrainState, dict, PRNGKey], tuple[TrainState, dict]]:
    """Build the pure training step ``train_step(state, batch, base_key) -> (state, metrics)``.

    The step's randomness is ``fold_in(base_key, state.step)``: a resumed run
    draws exactly the numbers an uninterrupted one would, whatever the
    number of devices.

    Args:
      graphdef: from :func:`create_train_state`.
      loss_fn: ``loss_fn(apply_fn, x0, key) -> (loss, aux)`` (:func:`diffjax.losses.make_loss_fn`);
        ``apply_fn(x_t, c)`` is the network with parameters bound. A loss marked
        ``takes_condition`` (:func:`diffjax.losses.make_conditional_loss_fn`) is
        called with ``cond=batch["cond"]`` and ``apply_fn(x_t, c, y_in, c_y)``.
      optimizer: the transformation the state was created with.
      ema_decay: target EMA decay (see :func:`ema_decay_at`).
      lr_schedule: if given, the learning rate is reported in the metrics.
      use_labels: pass ``batch["label"]`` to the network as class labels. Other
        network inputs come from the batch's keys (``MODEL_INPUTS``: ``"cond"`` ->
        ``cond=``), ``batch["loss_mask"]`` restricts the loss and ``batch["target"]``
        (class ids) goes to a classifier's loss.
      use_dropout: give the network a dropout key (training mode).
      grad_accum: split the batch into this many microbatches and average their
        gradients (one ``lax.scan`` inside the step) before the one optimizer
        update: the update of the whole batch with the activation memory of one
        microbatch. Microbatch ``i`` holds rows ``i, i + K, i + 2K, ...`` so that
        every device keeps its own rows (no data moves); it draws its noise from
        ``fold_in(step_key, i)``, so ``K > 1`` gives the same update as one batch
        exactly for a deterministic loss and the same update in distribution for
        a diffusion loss. The batch must split into ``K`` microbatches of whole
        per-device slices.

    Returns:
      ``train_step``; its metrics hold ``loss``, ``grad_norm`` (before clipping),
      ``lr`` when a schedule is given, ``nonfinite_steps`` (the running count of
      skipped NaN/inf steps) and any scalar the loss reports.
    """
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    takes_condition = getattr(loss_fn, "takes_condition", False)
    # A loss marked ``takes_step`` (the autoencoder's, whose discriminator starts late) gets the step.
    step_kw = (lambda state: {"step": state.step}) if getattr(loss_fn, "takes_step", False) else (lambda state: {})

    if isinstance(grad_accum, bool) or int(grad_accum) != grad_accum or grad_accum < 1:
        raise ValueError(f"grad_accum must be an integer >= 1, got {grad_accum!r}")
    grad_accum = int(grad_accum)

    def grads_of(state: TrainState, batch: dict, key: PRNGKey):
        """``((loss, aux), grads)`` of one (micro)batch."""
        loss_key, dropout_key = jax.random.split(key)
        # The batch's keys are static under jit: each task's inputs are fixed per program.
        model_inputs = {
            keyword: batch[key]
            for key, keyword in MODEL_INPUTS.items()
            if key in batch and (key != "label" or use_labels)
        }

        def loss_of(params):
            model = model_from_state(graphdef, params, state.model_state)

            def apply_fn(x_t, c, **overrides):
                kwargs = dict(model_inputs, **overrides)
                if use_dropout:
                    kwargs["dropout_key"] = dropout_key
                return model(x_t, c, **kwargs)

            if takes_condition:
                # Conditional estimators (CDiffE, CMDE) diffuse the condition at the
                # network's time inside the loss; a level for y_t goes in as aug_level.
                def cond_apply_fn(x_t, c, y_in, c_y):
                    return apply_fn(x_t, c, cond=y_in, **({} if c_y is None else {"aug_level": c_y}))

                return loss_fn(cond_apply_fn, batch["image"], loss_key, cond=batch["cond"],
                               mask=batch.get("loss_mask"))
            # A classifier's loss takes the batch's integer class ids, "target".
            extra = {"target": batch["target"]} if "target" in batch else {}
            return loss_fn(apply_fn, batch["image"], loss_key, mask=batch.get("loss_mask"), **extra, **step_kw(state))

        return jax.value_and_grad(loss_of, has_aux=True)(state.params)

    def train_step(state: TrainState, batch: dict, base_key: PRNGKey) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(base_key, state.step)
        if grad_accum == 1:
            (loss, aux), grads = grads_of(state, batch, key)
        else:
            loss, aux, grads = accumulate_grads(grads_of, state, batch, key, grad_accum)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = ema_update(state.ema_params, params, state.step, ema_decay)

        grad_norm = optax.global_norm(grads)
        metrics = {"loss": loss, "grad_norm": grad_norm}
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(state.step)
        for name, value in (aux or {}).items():
            if name not in metrics and jnp.ndim(value) == 0:
                metrics[name] = value
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
        new_state = keep_finite(state, state.replace(params=params, opt_state=opt_state, ema_params=ema_params), finite)
        metrics["nonfinite_steps"] = new_state.nonfinite_steps
        return new_state, metrics

    return train_step


def split_microbatches(batch: dict, k: int) -> dict:
    """``(B, ...)`` leaves -> ``(K, B / K, ...)``; microbatch ``i`` is rows ``i, i + K, ...``.

    Strided rather than contiguous: a batch sharded over devices in contiguous
    blocks then gives every microbatch the same rows of every device's block,
    so the split needs no communication.
    """
    def split(x):
        b = x.shape[0]
        if b % k:
            raise ValueError(f"grad_accum={k} does not divide the batch of {b} rows; "
                             f"set --config.training.batch_size to a multiple of {k} x the device count")
        return jnp.swapaxes(x.reshape((b // k, k) + x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def accumulate_grads(grads_of: Callable, state: TrainState, batch: dict, key: PRNGKey, k: int):
    """Mean loss, scalar aux and gradients over ``k`` microbatches (``lax.scan``, one at a time in memory).

    Args:
      grads_of: ``grads_of(state, microbatch, key) -> ((loss, aux), grads)``.
      state: the training state (its parameters are differentiated).
      batch: the whole batch, leaves ``(B, ...)``.
      key: the step's key; microbatch ``i`` gets ``fold_in(key, i)``.
      k: number of microbatches.

    Returns:
      ``(loss, aux, grads)``: averages over the microbatches (aux: scalars only).
    """
    micro = split_microbatches(batch, k)
    # Shapes of one microbatch's outputs, to start the running sums at zero.
    first = jax.tree.map(lambda x: x[0], micro)
    (loss_s, aux_s), grads_s = jax.eval_shape(grads_of, state, first, key)
    scalar_aux = {n: v for n, v in (aux_s or {}).items() if len(v.shape) == 0}
    zeros = lambda tree: jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), tree)
    init = (jnp.zeros((), jnp.float32), zeros(scalar_aux), zeros(grads_s))

    def body(carry, xs):
        i, mb = xs
        (loss, aux), grads = grads_of(state, mb, jax.random.fold_in(key, i))
        acc_loss, acc_aux, acc_grads = carry
        acc_aux = {n: acc_aux[n] + aux[n].astype(jnp.float32) for n in acc_aux}
        acc_grads = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), acc_grads, grads)
        return (acc_loss + loss.astype(jnp.float32), acc_aux, acc_grads), None

    (loss, aux, grads), _ = jax.lax.scan(body, init, (jnp.arange(k), micro))
    scale = 1.0 / k
    grads = jax.tree.map(lambda g, s: (g * scale).astype(s.dtype), grads, grads_s)
    return loss * scale, {n: v * scale for n, v in aux.items()}, grads
