"""Online SGD / Adam baselines: exact gradient steps through the Learner interface, batch
steps via merge_batch, and that they learn real digits online."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.baselines import BASELINES
from vsml_es.baselines.adam import make_adam
from vsml_es.baselines.mlp import OnlineParams, mlp_logits
from vsml_es.baselines.sgd import make_sgd
from vsml_es.evaluate import meta_test
from vsml_es.tasks.episode import run_episode


def _ce(weights, x, y, n_out):
    return -jax.nn.log_softmax(mlp_logits(weights, x))[..., y]


def test_sgd_learn_is_one_gradient_step_of_the_cross_entropy():
    learner = make_sgd(hidden=(7,))
    params = OnlineParams(jnp.float32(0.1))
    state = learner.init_state(params, jax.random.PRNGKey(0), 5, 3)
    x = jax.random.normal(jax.random.PRNGKey(1), (5,))
    logits, state = jax.jit(learner.predict)(params, state, x)
    onehot = jax.nn.one_hot(2, 3)
    new = jax.jit(learner.learn)(params, state, x, jax.nn.softmax(logits) - onehot, onehot)
    grad = jax.jit(jax.grad(_ce), static_argnums=(2, 3))(state.weights, x, 2, 3)
    expect = jax.tree_util.tree_map(lambda w, g: w - 0.1 * g, state.weights, grad)
    for a, b in zip(jax.tree_util.tree_leaves(new.weights), jax.tree_util.tree_leaves(expect)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_batch_step_uses_the_batch_mean_gradient():
    learner = make_sgd(hidden=())
    params = OnlineParams(jnp.float32(0.5))
    xs = jax.random.normal(jax.random.PRNGKey(2), (1, 4, 6))
    ys = jnp.array([[0, 1, 2, 1]])
    key = jax.random.PRNGKey(3)
    # Two steps, so the second step's prediction shows whether the first was a batch step.
    res = run_episode(learner, params, key, jnp.concatenate([xs, xs]), jnp.concatenate([ys, ys]), 3)
    w0 = learner.init_state(params, key, 6, 3).weights
    mean_ce = lambda w: jnp.mean(jax.vmap(lambda x, y: _ce(w, x, y, 3))(xs[0], ys[0]))
    w1 = jax.tree_util.tree_map(lambda w, g: w - 0.5 * g, w0, jax.grad(mean_ce)(w0))
    np.testing.assert_allclose(res.loss[1], mean_ce(w1), rtol=1e-5)


def test_adam_first_step_moves_each_weight_by_the_learning_rate():
    learner = make_adam(hidden=())
    params = OnlineParams(jnp.float32(0.01))
    state = learner.init_state(params, jax.random.PRNGKey(0), 4, 3)
    x = jnp.array([1.0, -2.0, 0.5, 3.0])
    logits, state = learner.predict(params, state, x)
    onehot = jax.nn.one_hot(1, 3)
    new = learner.learn(params, state, x, jax.nn.softmax(logits) - onehot, onehot)
    step = np.abs(np.asarray(new.weights[0][0] - state.weights[0][0]))
    np.testing.assert_allclose(step, 0.01, rtol=1e-3)  # bias-corrected: |m/sqrt(v)| = 1


def test_online_sgd_learns_digits():
    # The yardstick: online linear SGD on digits gets about 0.88 late in the episode.
    correct, loss = meta_test(BASELINES["sgd_linear"].make(), OnlineParams(jnp.float32(0.03)), "digits", 4, 300)
    assert correct.shape == (4, 300) and np.all(np.isfinite(loss))
    assert correct[:, 150:].mean() > 0.8
    assert correct[:, :30].mean() < 0.6  # it learned online, from chance
