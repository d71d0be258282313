"""The online episode: shapes, prequential scoring, and when the error reaches each layer."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.config import ModelConfig
from vsml_es.model.network import make_vsml
from vsml_es.tasks.episode import episode_objective, run_episode
from vsml_es.tasks.sampling import sample_task


def _la(learner):
    la = learner.init_params(jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(lambda a: 3 * a + 0.2, la)  # an LA whose states move


def _trace(learner, la, xs, ys, n_out):
    """Run predict/learn by hand; return logits per step and layer-1 h after each step."""
    state = learner.init_state(la, jax.random.PRNGKey(1), xs.shape[1], n_out)
    logits_all, h1 = [], []
    for x, y in zip(xs, ys):
        logits, state = learner.predict(la, state, x)
        onehot = jax.nn.one_hot(y, n_out)
        logits_all.append(np.asarray(logits))
        h1.append(np.asarray(state.layers[0].h))
        state = learner.learn(la, state, x, jax.nn.softmax(logits) - onehot, onehot)
    return np.array(logits_all), np.array(h1)


def test_prediction_precedes_its_label_and_error_arrives_one_step_late():
    learner = make_vsml(ModelConfig())
    la = _la(learner)
    xs = jax.random.normal(jax.random.PRNGKey(2), (5, 6))
    ys = jnp.array([0, 1, 2, 0, 1])
    ys_changed = ys.at[2].set(1)  # change only the label of step t=2
    a, _ = _trace(learner, la, xs, ys, 3)
    b, _ = _trace(learner, la, xs, ys_changed, 3)
    np.testing.assert_array_equal(a[:3], b[:3])  # steps 0..2 predicted before label 2 is seen
    assert np.abs(a[3] - b[3]).max() > 1e-6  # the error of step 2 is heard at step 3


def test_hidden_layer_hears_the_error_one_step_after_the_last_layer():
    learner = make_vsml(ModelConfig(hidden_layers=[4]))
    la = _la(learner)
    xs = jax.random.normal(jax.random.PRNGKey(2), (6, 5))
    ys = jnp.array([0, 1, 2, 0, 1, 2])
    _, h_a = _trace(learner, la, xs, ys, 3)
    _, h_b = _trace(learner, la, xs, ys.at[1].set(0), 3)
    np.testing.assert_array_equal(h_a[:3], h_b[:3])  # layer 1 (K-k = 1) unchanged at steps 1, 2
    assert np.abs(h_a[3] - h_b[3]).max() > 0  # ... and hears the step-1 error at step 3


def test_backward_pass_delivers_the_error_within_the_same_step():
    learner = make_vsml(ModelConfig(hidden_layers=[4], backward_pass=True))
    la = _la(learner)
    xs = jax.random.normal(jax.random.PRNGKey(2), (4, 5))
    ys = jnp.array([0, 1, 2, 0])
    a, h_a = _trace(learner, la, xs, ys, 3)
    b, h_b = _trace(learner, la, xs, ys.at[1].set(0), 3)
    np.testing.assert_array_equal(a[:2], b[:2])
    assert np.abs(h_a[2] - h_b[2]).max() > 0  # layer 1 changed by the next forward sweep


def test_episode_shapes_loss_and_accuracy():
    learner = make_vsml(ModelConfig())
    la = learner.init_params(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (50, 6))
    y = jnp.arange(50) % 4
    xs, ys = sample_task(jax.random.PRNGKey(2), x, y, 4, steps=30, batch_size=3, label_permutation=True)
    assert xs.shape == (30, 3, 6) and ys.shape == (30, 3)
    res = jax.jit(lambda la: run_episode(learner, la, jax.random.PRNGKey(3), xs, ys, 4))(la)
    assert res.loss.shape == (30,) and res.correct.shape == (30,)
    # An untrained LA predicts near-uniformly: CE close to log(4), accuracy in [0, 1].
    assert np.allclose(res.loss, np.log(4), atol=0.05)
    assert np.all((res.correct >= 0) & (res.correct <= 1))


def test_sampled_stream_covers_the_split_before_repeating_and_permutes_labels():
    x = jnp.arange(10, dtype=jnp.float32)[:, None]
    y = jnp.arange(10) % 5
    xs, ys = sample_task(jax.random.PRNGKey(0), x, y, 5, steps=10, batch_size=1, label_permutation=True)
    assert sorted(np.asarray(xs).ravel().tolist()) == list(range(10))  # a permutation, no repeats
    perm = {int(a) % 5: int(b) for a, b in zip(np.asarray(xs).ravel(), np.asarray(ys).ravel())}
    assert len(set(perm.values())) == 5  # a bijection on the classes
    keys = [jax.random.PRNGKey(i) for i in range(8)]
    relabelings = {tuple(np.asarray(sample_task(k, x, y, 5, 10, 1, True)[1]).ravel()
                         [np.argsort(np.asarray(sample_task(k, x, y, 5, 10, 1, True)[0]).ravel())])
                   for k in keys}
    assert len(relabelings) > 1  # different tasks relabel differently


def test_batch_merge_ties_the_first_half_of_the_state():
    learner = make_vsml(dataclasses.replace(ModelConfig()))
    la = _la(learner)
    xs = jax.random.normal(jax.random.PRNGKey(1), (3, 4, 5))
    ys = jnp.zeros((3, 4), jnp.int32)
    res = run_episode(learner, la, jax.random.PRNGKey(2), xs, ys, 3)
    assert np.isfinite(res.loss).all()
    state = learner.init_state(la, jax.random.PRNGKey(2), 5, 3)
    state = jax.tree_util.tree_map(lambda s: s[None] + jnp.arange(4.0).reshape(4, *[1] * s.ndim), state)
    merged = learner.merge_batch(state)
    h = np.asarray(merged.layers[0].h)
    assert np.allclose(h[:, ..., :8], h[:1, ..., :8])  # first half shared across the batch
    assert not np.allclose(h[:, ..., 8:], h[:1, ..., 8:])  # second half stays per example


def test_episode_objective_weighs_each_horizon_equally():
    loss = jnp.concatenate([jnp.full(10, 2.0), jnp.full(90, 1.0)])  # [T=100]
    assert np.isclose(episode_objective(loss), 1.1)  # the paper's mean over the episode
    assert np.isclose(episode_objective(loss, (100,)), 1.1)
    # (10, 100): mean of 2.0 (first 10 steps) and 1.1 (all 100).
    assert np.isclose(episode_objective(loss, (10, 100)), 1.55)
