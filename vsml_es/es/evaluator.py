"""Fitness of population members: one jitted function per chunk of members.

A member's task depends only on (seed, generation, member // 2): the pair's key is
``fold_in(fold_in(task_root(seed), generation), member // 2)``, so antithetic partners
share data and state init, and the result does not depend on how the population is
split into chunks or across how many workers (DESIGN.md, data flow).

This is the interface Ray workers call: ``evaluator(params_chunk, generation, member_ids)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import Config
from vsml_es.model.network import make_vsml
from vsml_es.tasks.datasets import load_dataset
from vsml_es.tasks.episode import run_episode
from vsml_es.tasks.sampling import sample_task


def task_root(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def pair_key(seed: int, generation, pair) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(task_root(seed), generation), pair)


def _member_fitness(learner, cfg: Config, n_classes: int, params, key, x, y):
    """Mean loss and online accuracy of one member over ``episodes_per_member`` episodes."""
    t = cfg.task

    def episode(k):
        k_task, k_init = jax.random.split(k)
        xs, ys = sample_task(k_task, x, y, n_classes, t.episode_length, t.batch_size, t.label_permutation)
        res = run_episode(learner, params, k_init, xs, ys, n_classes)
        return res.loss.mean(), res.correct.mean()

    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(cfg.es.episodes_per_member))
    loss, acc = jax.vmap(episode)(keys)
    return loss.mean(), acc.mean()


class PopulationEvaluator:
    """Loads the meta-training data once (on the default device) and evaluates chunks."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.learner = make_vsml(cfg.model)
        ds = load_dataset(cfg.task.datasets[0])
        self.dataset_name = ds.name
        self._x = jnp.asarray(ds.train_x)
        self._y = jnp.asarray(ds.train_y)
        self._n_classes = ds.n_classes
        self.n_in = ds.train_x.shape[1]
        member = functools.partial(_member_fitness, self.learner, cfg, ds.n_classes)

        def chunk(params, generation, member_ids, x, y):
            keys = jax.vmap(lambda m: pair_key(cfg.seed, generation, m // 2))(member_ids)
            return jax.vmap(member, in_axes=(0, 0, None, None))(params, keys, x, y)

        self._chunk = jax.jit(chunk)

    @property
    def member_steps(self) -> int:
        """Learner steps one member's evaluation takes (for throughput metrics)."""
        t = self.cfg.task
        return t.episode_length * t.batch_size * self.cfg.es.episodes_per_member

    def __call__(self, params, generation: int, member_ids) -> tuple[np.ndarray, np.ndarray]:
        """params: LA pytree with leading axis n; member_ids [n] -> (loss [n], accuracy [n])."""
        loss, acc = self._chunk(params, jnp.int32(generation), jnp.asarray(member_ids, jnp.int32),
                                self._x, self._y)
        return np.asarray(loss), np.asarray(acc)
