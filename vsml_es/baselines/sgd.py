"""Online SGD on the baselines' MLP: ``w <- w - lr * g`` after every step (VSML.md §7).

``make_sgd(hidden=(160,))`` is the paper's baseline (lr 0.01); ``hidden=()`` is online
linear (softmax) regression. The learning rate is the Learner's ``params``.
"""

from __future__ import annotations

import jax

from vsml_es.baselines.mlp import Optimiser, make_online_learner
from vsml_es.learner import Learner


def _init(weights):
    return ()


def _update(grad, opt, weights, lr):
    return jax.tree_util.tree_map(lambda w, g: w - lr * g, weights, grad), opt


SGD = Optimiser(_init, _update)


def make_sgd(hidden: tuple = (160,), learning_rate: float = 0.01) -> Learner:
    return make_online_learner(SGD, tuple(hidden), learning_rate)
