"""The baselines' network and the plumbing shared by online gradient learners.

An online gradient learner's state holds the MLP weights, its optimiser state, and what
``merge_batch`` needs to turn B per-example copies into one batch step: the weights and
optimiser state before the step and each copy's gradient. ``learn`` receives
``error = dCE/dlogits`` (already divided by the batch size, see ``tasks/episode.py``), so
the gradient w.r.t. the weights is one vector-Jacobian product; no loss is re-derived.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.learner import Learner

TANH_BOUND = 100.0  # logits soft-bounded like VSML's (VSML.md §9)


class OnlineParams(NamedTuple):
    """The baselines' only "meta-parameter": the learning rate (a scalar array)."""

    learning_rate: jax.Array


class OnlineState(NamedTuple):
    weights: Any  # list of (w [a, b], bias [b]) per layer
    opt: Any  # optimiser state
    before: Any  # (weights, opt) before the last learn step
    grad: Any  # the last learn step's gradient (same tree as weights)
    learning_rate: jax.Array


class Optimiser(NamedTuple):
    init: Callable[[Any], Any]  # weights -> opt state
    update: Callable[..., Any]  # (grad, opt, weights, lr) -> (weights, opt)


def init_mlp(key: jax.Array, sizes: list[int]) -> list:
    """Truncated normal weights, sd 1/sqrt(fan_in) (haiku's default, as the reference); zero biases."""
    layers = []
    for k, (a, b) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        w = jax.random.truncated_normal(k, -2.0, 2.0, (a, b), jnp.float32) / jnp.sqrt(a) / 0.8796256610342398
        layers.append((w, jnp.zeros(b, jnp.float32)))
    return layers


def mlp_logits(weights: list, x: jax.Array) -> jax.Array:
    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i + 1 < len(weights):
            h = jnp.tanh(h)
    return TANH_BOUND * jnp.tanh(h / TANH_BOUND)


def make_online_learner(opt: Optimiser, hidden: tuple, default_lr: float) -> Learner:
    """A Learner training an MLP with ``hidden`` tanh layers online by ``opt``."""

    def init_params(key=None):
        return OnlineParams(jnp.asarray(default_lr, jnp.float32))

    def init_state(params, key, n_in, n_out):
        weights = init_mlp(key, [n_in, *hidden, n_out])
        o = opt.init(weights)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, weights)
        return OnlineState(weights, o, (weights, o), zeros, jnp.asarray(params.learning_rate, jnp.float32))

    def predict(params, state, x):
        return mlp_logits(state.weights, x), state

    def learn(params, state, x, error, label):
        _, vjp = jax.vjp(lambda w: mlp_logits(w, x), state.weights)
        (grad,) = vjp(error)
        weights, o = opt.update(grad, state.opt, state.weights, state.learning_rate)
        return OnlineState(weights, o, (state.weights, state.opt), grad, state.learning_rate)

    def merge_batch(state):
        """Batched state [B, ...] -> one step on the summed gradient (the batch mean, as the
        errors are already divided by B) from the shared pre-step state, broadcast back."""
        first = jax.tree_util.tree_map(lambda s: s[0], state)
        grad = jax.tree_util.tree_map(lambda g: g.sum(0), state.grad)
        w0, o0 = first.before
        weights, o = opt.update(grad, o0, w0, first.learning_rate)
        merged = OnlineState(weights, o, (w0, o0), grad, first.learning_rate)
        batch = jax.tree_util.tree_leaves(state.grad)[0].shape[0]
        return jax.tree_util.tree_map(lambda s: jnp.broadcast_to(s, (batch, *s.shape)), merged)

    return Learner(init_params, init_state, predict, learn, merge_batch)
