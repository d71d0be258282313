"""The online episode: predict x_t, score it, then feed back its error (VSML.md §3).

For t = 1..T, with a batch of B examples per step:
1. ``logits_t = predict(x_t)``: made before the label of x_t is seen (prequential).
2. ``loss_t = CE(logits_t, y_t)``, ``correct_t = [argmax logits_t == y_t]``.
3. ``e_t = (softmax(logits_t) - onehot(y_t)) / B``: the analytic gradient of the batch-mean
   cross-entropy w.r.t. the logits, an *input* to the learner (no BPTT);
   ``learn(x_t, e_t, onehot(y_t))``.
Fitness = mean_t loss_t (``training.loss_type: mean`` in the paper).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.learner import Learner
from vsml_es.tasks.sampling import TaskVariant, sample_variant_task


class EpisodeResult(NamedTuple):
    loss: jax.Array  # [T] cross-entropy per step, mean over the batch
    correct: jax.Array  # [T] fraction of the batch predicted correctly


def run_episode(learner: Learner, params, key: jax.Array, xs: jax.Array, ys: jax.Array,
                n_classes: int) -> EpisodeResult:
    """xs [T, B, D], ys [T, B] int -> per-step loss and accuracy. ``key`` draws the state init."""
    steps, batch, n_in = xs.shape
    state = learner.init_state(params, key, n_in, n_classes)
    state = jax.tree_util.tree_map(lambda s: jnp.broadcast_to(s, (batch, *s.shape)), state)
    predict = jax.vmap(learner.predict, in_axes=(None, 0, 0))
    learn = jax.vmap(learner.learn, in_axes=(None, 0, 0, 0, 0))

    def step(state, xy):
        x, y = xy
        logits, state = predict(params, state, x)  # [B, n_classes]
        onehot = jax.nn.one_hot(y, n_classes, dtype=logits.dtype)
        logp = jax.nn.log_softmax(logits)
        loss = -(onehot * logp).sum(-1).mean()
        correct = (logits.argmax(-1) == y).mean()
        error = (jnp.exp(logp) - onehot) / batch
        state = learn(params, state, x, error, onehot)
        if batch > 1:
            state = learner.merge_batch(state)
        return state, (loss, correct)

    _, (loss, correct) = jax.lax.scan(step, state, (xs, ys))
    return EpisodeResult(loss, correct)


def episode_objective(loss: jax.Array, horizons=()) -> jax.Array:
    """Meta-objective of one episode from its per-step loss [T]: the mean over ``horizons``
    h of ``mean(loss[:h])`` (``task.loss_horizons``); no horizons = ``mean(loss)``.

    Several horizons weigh early steps more: with (50, 500) the first 50 steps carry
    ~55% of the weight, so an LA cannot buy late accuracy with slower early learning.
    """
    if not horizons:
        return loss.mean()
    return jnp.mean(jnp.stack([loss[:h].mean() for h in horizons]))


def run_task_episode(learner: Learner, params, key: jax.Array, x: jax.Array, y: jax.Array,
                     n_classes: int, image_shape: tuple, variant: TaskVariant, steps: int,
                     batch_size: int, label_permutation: bool) -> EpisodeResult:
    """Draw a task of ``variant`` from the split x [N, D], y [N] and run one episode on it.

    ``key`` is split into the task's key (examples, classes, projection) and the learner's
    state-init key, so two learners given the same key see the same example stream.
    """
    k_task, k_init = jax.random.split(key)
    xs, ys = sample_variant_task(k_task, x, y, n_classes, image_shape, variant, steps, batch_size,
                                 label_permutation)
    return run_episode(learner, params, k_init, xs, ys, variant.n_way)
