"""Meta-test: run a learner online on held-out tasks and record per-step accuracy and loss.

``meta_test`` is the reusable core (the trainer calls it for periodic evaluation); the
``vsml-es evaluate`` command builds on it to compare a learned LA with SGD and Adam on the
very same example streams.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.learner import Learner
from vsml_es.tasks.datasets import Dataset, load_dataset
from vsml_es.tasks.episode import run_episode
from vsml_es.tasks.sampling import TaskVariant, sample_variant_task


def task_keys(seed: int, n_tasks: int) -> jax.Array:
    """One key per meta-test task; identical for every learner given the same seed."""
    root = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n_tasks))


@functools.lru_cache(maxsize=64)
def _tasks_fn(learner: Learner, n_classes: int, image_shape: tuple, variant: TaskVariant, steps: int,
              batch_size: int, label_permutation: bool):
    """One jitted function per (learner, task shape): params and data are arguments, so a
    learner's new params (the trainer's periodic evaluation) reuse the compiled code."""

    def one(params, key, x, y):
        k_task, k_init = jax.random.split(key)
        xs, ys = sample_variant_task(k_task, x, y, n_classes, image_shape, variant, steps, batch_size,
                                     label_permutation)
        res = run_episode(learner, params, k_init, xs, ys, variant.n_way)
        return res.correct, res.loss

    return jax.jit(jax.vmap(one, in_axes=(None, 0, None, None)))


def meta_test(learner: Learner, params, dataset: Dataset | str, n_tasks: int, steps: int,
              seed: int = 22, *, batch_size: int = 1, label_permutation: bool = False,
              split: str = "test", n_way: int | None = None, resize: int = 0, proj_size: int = 0,
              tasks_per_call: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Run ``n_tasks`` online episodes of ``steps`` steps on a dataset's held-out split.

    Task ``i``'s example stream, its class subset / projection and the learner's state
    init are drawn from ``fold_in(PRNGKey(seed), i)``, so learners meta-tested with the
    same seed and options see the same examples in the same order. ``n_way`` (k-way class
    subsets), ``resize`` (image side) and ``proj_size`` (random projection of the inputs)
    build the task as :class:`~vsml_es.tasks.sampling.TaskVariant` does.

    Returns ``(correct [n_tasks, steps], loss [n_tasks, steps])`` as numpy float arrays:
    per-step online accuracy (fraction of the batch right) and cross-entropy.
    """
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if split not in ("test", "train"):
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    x = jnp.asarray(ds.test_x if split == "test" else ds.train_x)
    y = jnp.asarray(ds.test_y if split == "test" else ds.train_y)
    variant = TaskVariant(ds.name, min(n_way or ds.n_classes, ds.n_classes), resize, proj_size)
    run = _tasks_fn(learner, ds.n_classes, tuple(ds.image_shape), variant, steps, batch_size,
                    label_permutation)
    keys = task_keys(seed, n_tasks)
    correct, loss = [], []
    for start in range(0, n_tasks, tasks_per_call):
        k = keys[start:start + tasks_per_call]
        if k.shape[0] < tasks_per_call and n_tasks > tasks_per_call:  # keep one compiled shape
            k = jnp.concatenate([k, keys[:tasks_per_call - k.shape[0]]])
        c, l = run(params, k, x, y)
        take = min(tasks_per_call, n_tasks - start)
        correct.append(np.asarray(c)[:take])
        loss.append(np.asarray(l)[:take])
    return np.concatenate(correct).astype(np.float32), np.concatenate(loss).astype(np.float32)
