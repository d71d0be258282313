"""Online Adam on the baselines' MLP (Kingma & Ba 2015; b1 0.9, b2 0.999, eps 1e-8), one
step per example (VSML.md §7: lr 0.001). The learning rate is the Learner's ``params``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.baselines.mlp import Optimiser, make_online_learner
from vsml_es.learner import Learner

B1, B2, EPS = 0.9, 0.999, 1e-8


class AdamState(NamedTuple):
    count: jax.Array
    mu: object
    nu: object


def _init(weights):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, weights)
    return AdamState(jnp.zeros((), jnp.int32), zeros, zeros)


def _update(grad, opt, weights, lr):
    count = opt.count + 1
    mu = jax.tree_util.tree_map(lambda m, g: B1 * m + (1 - B1) * g, opt.mu, grad)
    nu = jax.tree_util.tree_map(lambda v, g: B2 * v + (1 - B2) * g * g, opt.nu, grad)
    c1 = 1 - B1 ** count.astype(jnp.float32)
    c2 = 1 - B2 ** count.astype(jnp.float32)
    weights = jax.tree_util.tree_map(lambda w, m, v: w - lr * (m / c1) / (jnp.sqrt(v / c2) + EPS),
                                     weights, mu, nu)
    return weights, AdamState(count, mu, nu)


ADAM = Optimiser(_init, _update)


def make_adam(hidden: tuple = (160,), learning_rate: float = 0.001) -> Learner:
    return make_online_learner(ADAM, tuple(hidden), learning_rate)
