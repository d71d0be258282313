"""Fitness of population members: jitted functions over chunks of members.

A member's task depends only on (seed, generation, member // 2): the pair's key is
``fold_in(fold_in(task_root(seed), generation), member // 2)`` (``es.common_task``: 0 for
every member, one task per generation), so antithetic partners share data and state init,
and the result does not depend on how the population is split into chunks or across how
many workers (DESIGN.md, data flow).

Task distributions with several shapes (datasets of different input sizes, k-way class
subsets, resizing, projections; ``vsml_es.tasks.sampling``): the distribution is a finite
list of :class:`TaskVariant` s, each fixing the input and output sizes. A pair's variant is
drawn on the host from ``(seed, generation, pair)`` alone; members are grouped by variant
and each group runs through that variant's own jitted function, in fixed-size buckets
(padding the last bucket with copies of a member whose results are dropped) so nothing
is recompiled after the first generations. We group rather than project everything to a
common size because the LA is size-free: tasks keep their real input and output sizes,
which is what meta-test asks of it. A distribution with a single variant (the default)
runs the whole chunk as one vmap, as before.

This is the interface Ray workers call: ``evaluator(params_chunk, generation, member_ids)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import xla_options
from vsml_es.config import Config
from vsml_es.es.member_map import auto_members_per_vmap, map_members
from vsml_es.model.network import make_vsml
from vsml_es.tasks.datasets import load_dataset
from vsml_es.tasks.episode import episode_objective, run_task_episode
from vsml_es.tasks.sampling import TaskVariant, task_variants


def task_root(seed: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(seed), 1)


def pair_key(seed: int, generation, pair) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(task_root(seed), generation), pair)


def task_ids(cfg: Config, member_ids):
    """The task each member is evaluated on: its antithetic pair's (``member // 2``) or, with
    ``es.common_task``, the generation's single task 0. Works on ints and numpy/jax arrays."""
    return member_ids * 0 if cfg.es.common_task else member_ids // 2


def pair_variants(seed: int, generation: int, pairs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Variant index of each pair: a function of (seed, generation, pair) only."""
    if len(probs) == 1:
        return np.zeros(len(pairs), np.int64)
    cdf = np.cumsum(probs)
    u = np.array([np.random.default_rng([seed, generation, int(p), 0x5EED]).random() for p in pairs])
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(probs) - 1)


def member_fitness(learner, cfg: Config, variant: TaskVariant, n_classes: int, image_shape: tuple,
                   params, key, x, y):
    """Objective (``episode_objective``) and online accuracy of one member, each the mean
    over ``episodes_per_member`` episodes, episode ``e`` keyed ``fold_in(key, e)``."""
    t = cfg.task

    def episode(k):
        res = run_task_episode(learner, params, k, x, y, n_classes, image_shape, variant,
                               t.episode_length, t.batch_size, t.label_permutation)
        return episode_objective(res.loss, tuple(t.loss_horizons)), res.correct.mean()

    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(jnp.arange(cfg.es.episodes_per_member))
    loss, acc = jax.vmap(episode)(keys)
    return loss.mean(), acc.mean()


def member_steps(cfg: Config) -> int:
    """Learner steps one member's evaluation takes (for throughput metrics)."""
    t = cfg.task
    return t.episode_length * t.batch_size * cfg.es.episodes_per_member


def build_variants(cfg: Config) -> tuple[list, np.ndarray, dict]:
    """The run's task variants, their probabilities and the datasets they need."""
    t = cfg.task
    data = {name: load_dataset(name) for name in dict.fromkeys(t.datasets)}
    variants, probs = task_variants(
        list(t.datasets), {n: d.n_classes for n, d in data.items()}, list(t.dataset_weights),
        list(t.class_subsets), list(t.resize), t.rand_proj, t.rand_proj_size,
        {n: d.image_shape for n, d in data.items()})
    return variants, probs, data


class PopulationEvaluator:
    """Loads the meta-training data once (on the default device) and evaluates chunks."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.learner = make_vsml(cfg.model)
        self.variants, self.probs, data = build_variants(cfg)
        self.dataset_name = cfg.task.datasets[0]
        self._arrays = {n: (jnp.asarray(d.train_x), jnp.asarray(d.train_y)) for n, d in data.items()}
        sizes = {v.n_in(data[v.dataset].image_shape) for v in self.variants}
        self.n_in = sizes.pop() if len(sizes) == 1 else None  # None: tasks differ in input size
        self._chunks = []
        for v in self.variants:
            d = data[v.dataset]
            member = functools.partial(member_fitness, self.learner, cfg, v, d.n_classes, d.image_shape)

            def chunk(params, generation, member_ids, x, y, member=member, v=v, d=d):
                keys = jax.vmap(lambda m: pair_key(cfg.seed, generation, task_ids(cfg, m)))(member_ids)
                n = member_ids.shape[0]
                per_vmap = self._members_per_vmap(v.n_in(d.image_shape), d.n_classes)
                return map_members(lambda p, k: member(p, k, x, y), n, per_vmap)(params, keys)

            self._chunks.append(xla_options.jit(chunk))

    def _members_per_vmap(self, n_in: int, n_out: int) -> int:
        setting = self.cfg.distributed.members_per_vmap
        if setting is not None:
            return setting
        sizes = [n_in, *self.cfg.model.hidden_layers, n_out]
        synapses = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
        return auto_members_per_vmap(synapses * self.cfg.model.state_size * 2 * 4 * self.cfg.task.batch_size)

    @property
    def member_steps(self) -> int:
        return member_steps(self.cfg)

    def member_variants(self, generation: int, member_ids) -> list[TaskVariant]:
        """Which task variant each member is evaluated on (for logging and tests)."""
        ids = np.asarray(member_ids)
        return [self.variants[i] for i in pair_variants(self.cfg.seed, generation, task_ids(self.cfg, ids), self.probs)]

    def _run(self, v: int, params, generation: int, member_ids: np.ndarray):
        x, y = self._arrays[self.variants[v].dataset]
        loss, acc = self._chunks[v](params, jnp.int32(generation), jnp.asarray(member_ids, jnp.int32), x, y)
        return np.asarray(loss), np.asarray(acc)

    def __call__(self, params, generation: int, member_ids) -> tuple[np.ndarray, np.ndarray]:
        """params: LA pytree with leading axis n; member_ids [n] -> (loss [n], accuracy [n])."""
        ids = np.asarray(member_ids, np.int64)
        n = len(ids)
        if len(self.variants) == 1:
            return self._run(0, params, generation, ids)
        which = pair_variants(self.cfg.seed, generation, task_ids(self.cfg, ids), self.probs)
        # Bucket size: fixed for a given chunk size, so each variant compiles once.
        bucket = 1 << max(0, int(np.ceil(np.log2(max(1, -(-n // len(self.variants)))))))
        bucket = min(bucket, n)
        loss, acc = np.zeros(n, np.float32), np.zeros(n, np.float32)
        for v in np.unique(which):
            rows = np.flatnonzero(which == v)
            for start in range(0, len(rows), bucket):
                sel = rows[start:start + bucket]
                pad = np.concatenate([sel, np.repeat(sel[:1], bucket - len(sel))])
                p = jax.tree_util.tree_map(lambda a: a[pad], params)
                l, a = self._run(int(v), p, generation, ids[pad])
                loss[sel], acc[sel] = l[:len(sel)], a[:len(sel)]
        return loss, acc
