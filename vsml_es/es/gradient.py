"""Gradient meta-training (``es.strategy: gradient``): the exact meta-gradient of the mean
online loss through the unrolled episodes, global-norm clipping, Adam (VSML.md §4,
"Gradient alternative"; reference configs/backprop.yaml: Adam lr 1e-3, clip 25).

Inside the episode the LA still learns by forward running only: the error is an *input*
(``softmax - onehot``), not a gradient. The meta-gradient is taken w.r.t. the shared LA
V_M of the loss ``L = mean_episodes mean_t CE(y_hat_t, y_t)``, by backpropagation through
the whole ``lax.scan`` of the episode (``es.truncation: k`` cuts the gradient through the
state every k steps: truncated BPTT). Each step is rematerialised (``jax.checkpoint``), so
memory grows with T x state, not T x activations.

Meta-batch ``g`` (a "generation") draws ``es.population`` episodes of the first dataset,
episode ``m`` from ``pair_key(seed, g, m)``, all of one task variant (``task.class_subsets``,
``task.rand_proj``/``rand_proj_size``, ``task.resize``: tasks/sampling.py) picked from
(seed, g). Small variants (2-way, 16 projected inputs) are cheap and still teach an LA that
works at other sizes, since every synapse runs the same LA.

:class:`GradientStrategy` holds the meta-optimiser's state with evosax's
``init``/``get_mean`` so the trainer's setup, checkpoints, ``restore_run`` and ``export``
work unchanged; :class:`GradientMetaStep` is one generation of it, run by the trainer's loop
like the ES step (same run directory, metrics keys and checkpoints; ``sigma`` is NaN).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from vsml_es.config import Config, ESConfig, config_hash
from vsml_es.learner import Learner
from vsml_es.tasks.sampling import task_variants


class GradientState(NamedTuple):
    """Meta-optimiser state; flat arrays only (orbax-friendly, ``mean`` checked finite)."""

    mean: jax.Array  # [n] the LA, raveled
    count: jax.Array  # [] int32 Adam step count
    mu: jax.Array  # [n] Adam first moment
    nu: jax.Array  # [n] Adam second moment


class GradientStrategy:
    """Adam with global-norm clipping on the raveled LA; evosax-like ``init``/``get_mean``."""

    default_params = None

    def __init__(self, cfg: ESConfig, template):
        flat, self._unravel = ravel_pytree(template)
        self.num_dims = flat.size
        parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
        self.optimizer = optax.chain(*parts, optax.adam(cfg.learning_rate, b1=0.9, b2=0.999))
        self._opt_def = jax.tree_util.tree_structure(self.optimizer.init(flat))

    def init(self, key, mean, params=None) -> GradientState:
        del key, params
        flat, _ = ravel_pytree(mean)
        count, mu, nu = jax.tree_util.tree_leaves(self.optimizer.init(flat))
        return GradientState(flat.astype(jnp.float32), count, mu, nu)

    def get_mean(self, state: GradientState):
        return self._unravel(state.mean)

    def update(self, state: GradientState, grad_tree) -> GradientState:
        """One clipped Adam step along the meta-gradient (a pytree shaped like the LA)."""
        grad, _ = ravel_pytree(grad_tree)
        opt_state = jax.tree_util.tree_unflatten(self._opt_def, [state.count, state.mu, state.nu])
        updates, opt_state = self.optimizer.update(grad, opt_state, state.mean)
        count, mu, nu = jax.tree_util.tree_leaves(opt_state)
        return GradientState(optax.apply_updates(state.mean, updates), count, mu, nu)


# --- learners for backpropagation through the episode ---------------------------------

class _Timed(NamedTuple):
    inner: object
    t: jax.Array  # [] steps taken so far


def for_meta_gradient(learner: Learner, truncation: int = 0) -> Learner:
    """The same learner, rematerialised per step and optionally truncated every k steps.

    ``truncation=k`` stops the gradient flowing through the state into steps more than k
    back (it is cut at t = k, 2k, ...); the forward numbers are unchanged.
    """
    predict = jax.checkpoint(learner.predict)
    learn = jax.checkpoint(learner.learn)
    if not truncation:
        return learner._replace(predict=predict, learn=learn)

    def init_state(params, key, n_in, n_out):
        return _Timed(learner.init_state(params, key, n_in, n_out), jnp.zeros((), jnp.int32))

    def predict_t(params, state, x):
        cut = (state.t % truncation == 0) & (state.t > 0)
        inner = jax.tree_util.tree_map(lambda s: jnp.where(cut, jax.lax.stop_gradient(s), s), state.inner)
        logits, inner = predict(params, inner, x)
        return logits, _Timed(inner, state.t + 1)

    def learn_t(params, state, x, error, label):
        return _Timed(learn(params, state.inner, x, error, label), state.t)

    def merge_t(state):
        return _Timed(learner.merge_batch(state.inner), state.t)

    return Learner(learner.init_params, init_state, predict_t, learn_t, merge_t)


def make_meta_loss(cfg: Config, learner: Learner, ds, variant):
    """``loss(la, generation, x, y) -> (mean loss, (loss [P], accuracy [P]))`` for tasks of
    one :class:`~vsml_es.tasks.sampling.TaskVariant` (its shapes fix the jitted function)."""
    from vsml_es.es.evaluator import member_fitness, pair_key

    e = cfg.es
    grad_learner = for_meta_gradient(learner, e.truncation)

    def member(la, generation, m, x, y):  # the ES member's fitness, differentiable in ``la``
        return member_fitness(grad_learner, cfg, variant, ds.n_classes, ds.image_shape, la,
                              pair_key(cfg.seed, generation, m), x, y)

    def loss_fn(la, generation, x, y):
        loss, acc = jax.vmap(member, in_axes=(None, None, 0, None, None))(
            la, generation, jnp.arange(e.population), x, y)
        finite = jnp.isfinite(loss)
        # Non-finite episodes are left out of the meta-loss (counted in ``nonfinite``).
        total = jnp.where(finite, loss, 0.0).sum() / jnp.maximum(finite.sum(), 1)
        return total, (loss, acc)

    return loss_fn


def task_distribution(cfg: Config, ds) -> tuple[list, np.ndarray]:
    """The task variants of ``cfg.task`` on dataset ``ds`` and their probabilities."""
    t = cfg.task
    return task_variants([ds.name], {ds.name: ds.n_classes}, [], t.class_subsets, t.resize,
                         t.rand_proj, t.rand_proj_size, {ds.name: ds.image_shape})


def variant_index(seed: int, generation: int, probs: np.ndarray) -> int:
    """Which variant meta-batch ``generation`` uses: a function of (seed, generation) only."""
    if len(probs) == 1:
        return 0
    return int(np.random.default_rng([seed, generation]).choice(len(probs), p=probs))


def make_meta_step(cfg: Config, learner: Learner, strategy: GradientStrategy, ds, variant):
    """Jitted ``(state, generation, x, y) -> (state, loss [P], accuracy [P], grad_norm)``.

    A meta-gradient with a non-finite entry is not applied (the state is returned as is).
    """
    loss_fn = make_meta_loss(cfg, learner, ds, variant)

    def step(state, generation, x, y):
        la = strategy.get_mean(state)
        (_, (loss, acc)), grad = jax.value_and_grad(loss_fn, has_aux=True)(la, generation, x, y)
        norm = optax.tree.norm(grad)
        new = strategy.update(state, grad)
        ok = jnp.isfinite(norm)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, state)
        return new, loss, acc, norm

    return jax.jit(step)


class GradientMetaStep:
    """One generation of gradient meta-training: ``(state, g) -> (state, loss [P], acc [P], extra)``.

    The trainer's loop (``vsml_es.es.trainer``) runs it exactly like the ES step, so the run
    directory, metrics, checkpoints and resume are shared. Each task variant's meta-step is
    compiled once, on first use.
    """

    workers = 1

    def __init__(self, cfg: Config, learner: Learner, strategy: GradientStrategy):
        from vsml_es.tasks.datasets import load_dataset

        self._cfg, self._learner, self._strategy = cfg, learner, strategy
        self._ds = load_dataset(cfg.task.datasets[0])
        self._x, self._y = jnp.asarray(self._ds.train_x), jnp.asarray(self._ds.train_y)
        self._variants, self._probs = task_distribution(cfg, self._ds)
        self._compiled: dict = {}

    def __call__(self, state: GradientState, generation: int):
        i = variant_index(self._cfg.seed, generation, self._probs)
        if i not in self._compiled:
            self._compiled[i] = make_meta_step(self._cfg, self._learner, self._strategy, self._ds,
                                               self._variants[i])
        new, loss, acc, norm = self._compiled[i](state, jnp.int32(generation), self._x, self._y)
        return new, np.asarray(loss), np.asarray(acc), {"sigma": float("nan"), "grad_norm": float(norm)}
