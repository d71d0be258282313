"""Sampling a task (an example stream) from a dataset, inside jit.

A task is ``T`` steps of ``B`` examples drawn without replacement from a shuffled,
repeated stream of the split (VSML.md §3), with the classes relabelled by a random
permutation when ``label_permutation`` is on (so an LA must learn each task online and
cannot memorise the dataset's labelling).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def sample_task(key: jax.Array, x: jax.Array, y: jax.Array, n_classes: int, steps: int,
                batch_size: int, label_permutation: bool) -> tuple[jax.Array, jax.Array]:
    """x [N, D], y [N] -> (xs [T, B, D], ys [T, B] int32)."""
    k_order, k_labels = jax.random.split(key)
    n = x.shape[0]
    need = steps * batch_size
    repeats = -(-need // n)  # ceil: the stream repeats when the episode is longer than N
    orders = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(k_order, repeats))
    idx = orders.reshape(-1)[:need]
    ys = y[idx]
    if label_permutation:
        ys = jax.random.permutation(k_labels, n_classes)[ys]
    return x[idx].reshape(steps, batch_size, -1), ys.reshape(steps, batch_size).astype(jnp.int32)
