"""LA cloning: after fitting, a synapse's state carries a weight w, its forward message is
w*x and one learn tick applies the SGD step w - alpha*e*x (small case, stated tolerance)."""

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es.cloning import CloneSpec, _tick, clone_loss, fit_clone
from vsml_es.config import load_config

# Tolerance: after 600 Adam steps the cloned synapse's errors, relative to the weight range
# w_max = 2, are below these (the measured RMS errors are ~0.17).
SPEC = CloneSpec(alpha=0.5, kappa=2.0, w_max=2.0, rollout=3, batch=128, steps=600, learning_rate=2e-2)


def test_cloned_synapse_reproduces_online_sgd_step():
    cfg = load_config(None, ["model.backward_pass=true", "model.state_size=8", "model.message_size=4"])
    m = cfg.model
    key = jax.random.PRNGKey(0)
    la = fit_clone(cfg, SPEC, key)
    random_loss, _ = clone_loss(fit_clone(cfg, SPEC._replace(steps=0), key), m, SPEC, jax.random.PRNGKey(9))
    loss, parts = clone_loss(la, m, SPEC, jax.random.PRNGKey(9))
    assert float(loss) < 0.3 * float(random_loss), (loss, random_loss)

    # One explicit SGD step on a handful of synapses.
    w = jnp.array([-1.0, -0.4, 0.3, 0.9])
    x = jnp.array([0.8, -1.2, 0.5, -0.3])
    e = jnp.array([0.5, -0.7, -0.9, 0.4])
    n = w.shape[0]
    c = jnp.zeros((n, m.state_size)).at[:, 0].set(w / SPEC.kappa)
    h = jnp.zeros((n, m.state_size))
    zeros = jnp.zeros((n, m.message_size))
    fwd = zeros.at[:, 0].set(x)
    h, c, out, _ = _tick(la, m, h, c, fwd, zeros)
    np.testing.assert_allclose(out[:, 1], w * x, atol=0.4)
    h, c, _, _ = _tick(la, m, h, c, fwd, zeros.at[:, 0].set(e))
    np.testing.assert_allclose(SPEC.kappa * c[:, 0], w - SPEC.alpha * e * x, atol=0.4)


def test_logit_scale_multiplies_the_forward_messages_and_nothing_else():
    cfg = load_config(None, ["model.backward_pass=true", "model.state_size=8", "model.message_size=4"])
    m, key = cfg.model, jax.random.PRNGKey(1)
    spec = SPEC._replace(steps=20)
    plain, scaled = fit_clone(cfg, spec, key), fit_clone(cfg, spec._replace(logit_scale=2.5), key)
    n = 5
    h = jnp.zeros((n, m.state_size))
    c = jax.random.normal(key, (n, m.state_size))
    fwd = jax.random.normal(jax.random.PRNGKey(2), (n, m.message_size))
    bwd = jax.random.normal(jax.random.PRNGKey(3), (n, m.message_size))
    h1, c1, out1, back1 = _tick(plain, m, h, c, fwd, bwd)
    h2, c2, out2, back2 = _tick(scaled, m, h, c, fwd, bwd)
    np.testing.assert_allclose(out2, 2.5 * out1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(c2, c1)  # the stored weights evolve exactly as before
    np.testing.assert_array_equal(back2, back1)
