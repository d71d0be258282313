"""Meta-test: run a learner online on held-out tasks and record per-step accuracy and loss.

``meta_test`` is the reusable core (the trainer calls it for periodic evaluation); the
``vsml-es evaluate`` command builds on it to compare a learned LA with SGD and Adam on the
very same example streams.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.learner import Learner
from vsml_es.tasks.datasets import Dataset, load_dataset
from vsml_es.tasks.episode import run_episode
from vsml_es.tasks.sampling import sample_task


def task_keys(seed: int, n_tasks: int) -> jax.Array:
    """One key per meta-test task; identical for every learner given the same seed."""
    root = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n_tasks))


def meta_test(learner: Learner, params, dataset: Dataset | str, n_tasks: int, steps: int,
              seed: int = 22, *, batch_size: int = 1, label_permutation: bool = False,
              split: str = "test", tasks_per_call: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Run ``n_tasks`` online episodes of ``steps`` steps on a dataset's held-out split.

    Task ``i``'s example stream and the learner's state init are drawn from
    ``fold_in(PRNGKey(seed), i)``, so two learners meta-tested with the same seed see the
    same examples in the same order.

    Returns ``(correct [n_tasks, steps], loss [n_tasks, steps])`` as numpy float arrays:
    per-step online accuracy (fraction of the batch right) and cross-entropy.
    """
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    x = jnp.asarray(ds.test_x if split == "test" else ds.train_x)
    y = jnp.asarray(ds.test_y if split == "test" else ds.train_y)
    n_classes = ds.n_classes

    def one(key):
        k_task, k_init = jax.random.split(key)
        xs, ys = sample_task(k_task, x, y, n_classes, steps, batch_size, label_permutation)
        res = run_episode(learner, params, k_init, xs, ys, n_classes)
        return res.correct, res.loss

    run = jax.jit(jax.vmap(one))
    keys = task_keys(seed, n_tasks)
    correct, loss = [], []
    for start in range(0, n_tasks, tasks_per_call):
        c, l = run(keys[start:start + tasks_per_call])
        correct.append(np.asarray(c))
        loss.append(np.asarray(l))
    return np.concatenate(correct).astype(np.float32), np.concatenate(loss).astype(np.float32)
