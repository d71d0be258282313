"""The JAX VSML network is pinned to the per-synapse numpy loop in reference_vsml.py."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_vsml as ref
from vsml_es.config import ModelConfig
from vsml_es.model.network import make_vsml
from vsml_es.model.sub_rnn import num_params


def _random_la(learner, key, scale=3.0):
    """An LA far from init (bigger weights, non-zero biases) so every term matters."""
    la = learner.init_params(key)
    leaves, tree = jax.tree_util.tree_flatten(la)
    keys = jax.random.split(key, len(leaves))
    leaves = [scale * l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


def _numpy_layers(state):
    return [{k: np.array(v, np.float64) for k, v in l._asdict().items()} for l in state.layers]


CASES = {
    "paper default": dict(),
    "hidden layer": dict(hidden_layers=[4]),
    "backward pass + label": dict(hidden_layers=[3], backward_pass=True, feed_label=True),
    "no gate offsets, 3 micro ticks": dict(forget_bias=0.0, input_bias=0.0, micro_ticks=3),
    "no tanh bound, channel 2": dict(tanh_bound=0.0, output_channel=2, init_rand_proportion=1.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_episode_matches_per_synapse_loop_reference(case):
    cfg = dataclasses.replace(ModelConfig(), **CASES[case])
    learner = make_vsml(cfg)
    la = _random_la(learner, jax.random.PRNGKey(1))
    n_in, n_out, steps = 5, 3, 4
    key = jax.random.PRNGKey(2)
    xs = np.asarray(jax.random.normal(key, (steps, n_in)))
    ys = np.array([0, 2, 1, 2])
    state = learner.init_state(la, jax.random.PRNGKey(3), n_in, n_out)
    ref_layers = _numpy_layers(state)
    ref_p = {k: np.array(v, np.float64) for k, v in la._asdict().items()}
    ref_logits, _ = ref.episode(cfg, ref_p, ref_layers, xs, ys, n_out)

    predict, learn = jax.jit(learner.predict), jax.jit(learner.learn)
    logits_all = []
    for x, y in zip(xs, ys):
        logits, state = predict(la, state, jnp.asarray(x))
        onehot = jax.nn.one_hot(y, n_out)
        state = learn(la, state, jnp.asarray(x), jax.nn.softmax(logits) - onehot, onehot)
        logits_all.append(np.asarray(logits))
    assert np.abs(np.array(logits_all) - ref_logits).max() <= 1e-5
    for layer, ref_layer in zip(state.layers, ref_layers):
        for name in ("h", "c", "fwd_in", "bwd_in"):
            assert np.abs(np.asarray(getattr(layer, name)) - ref_layer[name]).max() <= 1e-5, name
    # The logits must actually move during the episode, or the comparison proves little.
    assert np.abs(np.diff(ref_logits, axis=0)).max() > 1e-3


def test_la_size_matches_paper():
    la = make_vsml(ModelConfig()).init_params(jax.random.PRNGKey(0))
    assert num_params(la) == 2384  # (32*64+64) + 2*(16*8+8), VSML.md §2


def test_same_la_runs_on_any_width_and_depth():
    learner = make_vsml(ModelConfig(hidden_layers=[7]))
    la = learner.init_params(jax.random.PRNGKey(0))
    for n_in, n_out in ((4, 2), (64, 10), (3, 17)):
        state = learner.init_state(la, jax.random.PRNGKey(1), n_in, n_out)
        logits, _ = learner.predict(la, state, jnp.ones(n_in))
        assert logits.shape == (n_out,)
        assert [l.h.shape for l in state.layers] == [(n_in, 7, 16), (7, n_out, 16)]


def test_cell_init_is_half_random_with_fan_in_scale():
    learner = make_vsml(ModelConfig())
    la = learner.init_params(jax.random.PRNGKey(0))
    state = learner.init_state(la, jax.random.PRNGKey(1), 784, 10)
    c = np.asarray(state.layers[0].c)
    assert np.all(c[..., 8:] == 0) and np.all(np.asarray(state.layers[0].h) == 0)
    # N(0, sd=1/sqrt(784)) truncated at 2 sd (VSML.md §2): std is 0.88 sd after truncation.
    assert abs(c[..., :8].std() - 0.8796 / 28) < 0.001
    assert np.abs(c[..., :8]).max() <= 2 / 28 + 1e-6
