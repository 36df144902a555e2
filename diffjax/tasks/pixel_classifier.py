"""Baranchuk et al.'s pixel classifier: an ensemble of small MLPs on per-pixel features.

Each member is ``F -> 128 -> 32 -> K`` with ReLU and batch norm after each hidden layer
(the paper's architecture), trained with Adam on cross-entropy over labelled pixels
(label 255 = ignore). The members are stacked on a leading axis and trained together
with ``jax.vmap`` (each on its own random pixel batches, from its own initialisation) in
one ``lax.scan``. Prediction is the members' majority vote (ties to the lowest class id);
the uncertainty of a pixel is the entropy of the members' mean softmax.

Pure JAX (parameters are a dict pytree), so it jits and needs no Flax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffjax.typing import Array, PRNGKey

__all__ = ["init_ensemble", "apply_member", "train_ensemble", "train_ensemble_streamed", "ensemble_logits",
           "majority_vote", "ensemble_entropy", "predict", "masked_cross_entropy", "IGNORE_LABEL"]

IGNORE_LABEL = 255
HIDDEN = (128, 32)
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9
# fold_in(key, _CHUNK_STREAM) draws the streamed chunks' pixels; member m trains on fold_in(key, m),
# so any ensemble smaller than 2**31 - 1 members keeps the two streams apart.
_CHUNK_STREAM = 2**31 - 1


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def init_ensemble(key: PRNGKey, num_members: int, in_features: int, num_classes: int,
                  hidden: tuple[int, ...] = HIDDEN) -> dict:
    """Parameters and batch-norm statistics of ``num_members`` MLPs, stacked.

    Args:
      key: PRNG key (each member gets its own initialisation).
      num_members: ensemble size (10 in the paper).
      in_features: ``F``, features per pixel.
      num_classes: ``K``.
      hidden: hidden widths.

    Returns:
      ``{"params": ..., "stats": ...}``; every leaf has a leading axis of ``num_members``.
    """
    num_members = _check_int("num_members", num_members, 1)
    in_features = _check_int("in_features", in_features, 1)
    num_classes = _check_int("num_classes", num_classes, 2)
    widths = (in_features, *hidden, num_classes)

    def one(k):
        keys = jax.random.split(k, len(widths) - 1)
        params, stats = {}, {}
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            # He-uniform init for ReLU layers, as PyTorch's default-like scale.
            bound = np.sqrt(6.0 / a)
            params[f"w{i}"] = jax.random.uniform(keys[i], (a, b), jnp.float32, -bound, bound)
            params[f"b{i}"] = jnp.zeros((b,), jnp.float32)
            if i < len(widths) - 2:
                params[f"scale{i}"] = jnp.ones((b,), jnp.float32)
                params[f"shift{i}"] = jnp.zeros((b,), jnp.float32)
                stats[f"mean{i}"] = jnp.zeros((b,), jnp.float32)
                stats[f"var{i}"] = jnp.ones((b,), jnp.float32)
        return {"params": params, "stats": stats}

    return jax.vmap(one)(jax.random.split(key, num_members))


def apply_member(params: dict, stats: dict, x: Array, train: bool) -> tuple[Array, dict]:
    """One member's logits ``(P, K)`` for pixels ``x`` ``(P, F)``.

    In training, batch norm normalises with the batch's statistics and returns the
    updated running averages; otherwise it uses the running averages.
    """
    n_layers = len([k for k in params if k.startswith("w")])
    new_stats = {}
    h = x
    for i in range(n_layers):
        h = h @ params[f"w{i}"] + params[f"b{i}"]
        if i == n_layers - 1:
            break
        if train:
            mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
            new_stats[f"mean{i}"] = _BN_MOMENTUM * stats[f"mean{i}"] + (1 - _BN_MOMENTUM) * mean
            new_stats[f"var{i}"] = _BN_MOMENTUM * stats[f"var{i}"] + (1 - _BN_MOMENTUM) * var
        else:
            mean, var = stats[f"mean{i}"], stats[f"var{i}"]
        h = (h - mean) * jax.lax.rsqrt(var + _BN_EPS) * params[f"scale{i}"] + params[f"shift{i}"]
        h = jax.nn.relu(h)
    return h, (new_stats if train else stats)


def masked_cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean cross-entropy of ``(P, K)`` logits over the pixels whose label ``(P,)`` is not 255 (0 if none)."""
    valid = labels != IGNORE_LABEL
    safe = jnp.where(valid, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
    return jnp.sum(jnp.where(valid, losses, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def _member_steps(optimizer, batch_size):
    """``run(member, opt_state, features, labels, key, first_step, steps)``: one member's Adam steps.

    Step ``s`` (counted over the whole training, from ``first_step``) draws its pixels from
    ``fold_in(key, s)``, so a run split into chunks replays the draws of an unsplit one.
    """

    def run(member, opt_state, features, labels, member_key, first_step, steps):
        valid = labels != IGNORE_LABEL
        weights = valid.astype(jnp.float32) / jnp.maximum(jnp.sum(valid), 1)

        def step(carry, s):
            params, stats, opt_state = carry
            idx = jax.random.choice(jax.random.fold_in(member_key, s), labels.shape[0], (batch_size,), p=weights)

            def loss_fn(p):
                logits, new_stats = apply_member(p, stats, features[idx], train=True)
                return masked_cross_entropy(logits, labels[idx]), new_stats

            (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), new_stats, opt_state), loss

        carry = (member["params"], member["stats"], opt_state)
        (params, stats, opt_state), losses = jax.lax.scan(step, carry, first_step + jnp.arange(steps))
        return {"params": params, "stats": stats}, opt_state, losses

    return run


def _members_run(ensemble, opt_states, features, labels, key, first_step, *, steps, batch_size, learning_rate):
    """Every member's steps ``first_step .. first_step + steps - 1`` on one pixel set (vmapped)."""
    run = _member_steps(optax.adam(learning_rate), batch_size)
    members = jax.tree.leaves(ensemble)[0].shape[0]
    member_keys = jax.vmap(lambda m: jax.random.fold_in(key, m))(jnp.arange(members))
    trained, opt_states, losses = jax.vmap(run, in_axes=(0, 0, None, None, 0, None, None))(
        ensemble, opt_states, features, labels, member_keys, first_step, steps)
    return trained, opt_states, losses.T


# Compiled once per shape for every streamed training (not re-wrapped per call).
_members_run_jit = jax.jit(_members_run, static_argnames=("steps", "batch_size", "learning_rate"))


def _check_pixels(features, labels):
    if features.ndim != 2 or tuple(labels.shape) != tuple(features.shape[:1]):
        raise ValueError(f"features must be (P, F) and labels (P,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")


def train_ensemble(ensemble: dict, features: Array, labels: Array, *, key: PRNGKey, steps: int,
                   batch_size: int, learning_rate: float = 1e-3) -> tuple[dict, Array]:
    """Train every member with Adam on random batches of labelled pixels (all in memory).

    Args:
      ensemble: from :func:`init_ensemble`.
      features: ``(P, F)`` pixel features (e.g. ``feats.reshape(-1, F)``).
      labels: ``(P,)`` integer class ids; 255 pixels are never drawn into the loss.
      key: PRNG key; member ``m`` at step ``s`` draws from ``fold_in(fold_in(key, m), s)``.
      steps: Adam steps per member (static).
      batch_size: pixels per step (static).
      learning_rate: Adam's step size (the paper: 1e-3).

    Returns:
      ``(trained ensemble, losses (steps, members))``.

    Raises:
      ValueError: on mismatched shapes or bad step / batch counts.

    :func:`train_ensemble_streamed` does the same from features that do not fit in memory.
    """
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 2)
    features, labels = jnp.asarray(features, jnp.float32), jnp.asarray(labels)
    _check_pixels(features, labels)
    opt_states = jax.vmap(optax.adam(learning_rate).init)(ensemble["params"])
    trained, _, losses = _members_run(ensemble, opt_states, features, labels, key, 0, steps=steps,
                                      batch_size=batch_size, learning_rate=learning_rate)
    return trained, losses


def train_ensemble_streamed(ensemble: dict, features, labels, *, key: PRNGKey, steps: int, batch_size: int,
                            learning_rate: float = 1e-3, chunk_pixels: int = 65536,
                            chunk_steps: int = 100) -> tuple[dict, np.ndarray]:
    """:func:`train_ensemble` reading at most ``chunk_pixels`` pixels' features into memory at a time.

    For features on disk (``np.load(path, mmap_mode="r").reshape(-1, F)``, a view: nothing
    is read): every ``chunk_steps`` steps a new random set of ``chunk_pixels`` labelled
    pixels is drawn (sorted, so the memory map is read in file order), copied to the
    device, and the members take their next steps on it; Adam's state carries over. When
    every pixel fits in one chunk this *is* :func:`train_ensemble` (the same draws, so the
    same weights).

    Args:
      ensemble, key, steps, batch_size, learning_rate: as :func:`train_ensemble`.
      features: ``(P, F)`` array-like (NumPy array or memory map).
      labels: ``(P,)`` integer class ids (255 = ignore).
      chunk_pixels: pixels per chunk, the memory bound (``chunk_pixels * F * 4`` bytes).
      chunk_steps: steps per chunk (the last chunk takes the remainder).

    Returns:
      ``(trained ensemble, losses (steps, members))`` as NumPy.

    Raises:
      ValueError: mismatched shapes, bad counts, or no labelled pixel.
    """
    steps = _check_int("steps", steps, 1)
    batch_size = _check_int("batch_size", batch_size, 2)
    chunk_pixels = _check_int("chunk_pixels", chunk_pixels, batch_size)
    chunk_steps = _check_int("chunk_steps", chunk_steps, 1)
    labels = np.asarray(labels)
    _check_pixels(features, labels)
    labelled = np.flatnonzero(labels != IGNORE_LABEL)
    if labelled.size == 0:
        raise ValueError("no labelled pixel: every label is 255 (ignore)")
    opt_states = jax.vmap(optax.adam(learning_rate).init)(ensemble["params"])
    one_chunk = labels.shape[0] <= chunk_pixels
    if one_chunk:  # everything fits: the very arrays train_ensemble would see
        chunk_x, chunk_y = jnp.asarray(np.asarray(features, np.float32)), jnp.asarray(labels)
    losses = []
    for first in range(0, steps, chunk_steps):
        if not one_chunk:
            chunk_key = jax.random.fold_in(jax.random.fold_in(key, _CHUNK_STREAM), first)
            pick = np.asarray(jax.random.choice(chunk_key, labelled.size, (min(chunk_pixels, labelled.size),),
                                                replace=False))
            rows = np.sort(labelled[pick])
            chunk_x, chunk_y = jnp.asarray(np.asarray(features[rows], np.float32)), jnp.asarray(labels[rows])
        n = min(chunk_steps, steps - first)
        ensemble, opt_states, chunk_losses = _members_run_jit(ensemble, opt_states, chunk_x, chunk_y, key, first,
                                                              steps=n, batch_size=batch_size,
                                                              learning_rate=float(learning_rate))
        losses.append(chunk_losses)  # kept on the device: the next chunk is read while this one trains
    return ensemble, np.concatenate([np.asarray(chunk) for chunk in losses])


def ensemble_logits(ensemble: dict, features: Array) -> Array:
    """Every member's logits ``(members, P, K)`` for pixels ``(P, F)`` (running statistics)."""
    return jax.vmap(lambda m: apply_member(m["params"], m["stats"], features, train=False)[0])(ensemble)


def majority_vote(member_logits: Array) -> Array:
    """``(P,)`` int32 class chosen by most members (ties go to the lowest class id).

    Args:
      member_logits: ``(members, P, K)``.
    """
    num_classes = member_logits.shape[-1]
    votes = jax.nn.one_hot(jnp.argmax(member_logits, axis=-1), num_classes).sum(axis=0)
    return jnp.argmax(votes, axis=-1).astype(jnp.int32)


def ensemble_entropy(member_logits: Array) -> Array:
    """``(P,)`` entropy (nats) of the members' mean softmax: the pixel's uncertainty."""
    mean = jnp.mean(jax.nn.softmax(member_logits, axis=-1), axis=0)
    return -jnp.sum(jnp.where(mean > 0, mean * jnp.log(jnp.where(mean > 0, mean, 1.0)), 0.0), axis=-1)


def predict(ensemble: dict, features: Array) -> tuple[Array, Array]:
    """``(labels, uncertainty)`` for pixel features ``(..., F)``, each shaped ``(...)``."""
    shape = features.shape[:-1]
    logits = ensemble_logits(ensemble, features.reshape(-1, features.shape[-1]))
    return majority_vote(logits).reshape(shape), ensemble_entropy(logits).reshape(shape)
