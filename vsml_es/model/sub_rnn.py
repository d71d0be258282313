"""The shared sub-RNN: the learning algorithm (LA) V_M that every synapse runs.

One update of synapse (a, b) with state (h_ab, c_ab) in R^S, messages in R^M
(VSML.md §2; Kirsch & Schmidhuber 2021, Fig. 1):

    u          = [fwd_a ; bwd_b]                            in R^{2M}
    [i,g,f,o]  = W [u ; h_ab] + beta                        W: [2M+S, 4S]
    f = sigmoid(f + forget_bias),  i = sigmoid(i + input_bias)
    c_ab <- f * c_ab + i * tanh(g);   h_ab <- sigmoid(o) * tanh(c_ab)
    out_fwd_ab = F h_ab + bF,  out_bwd_ab = G h_ab + bG     F, G: [S, M]

``W`` is stored split by what it multiplies (``w_fwd``, ``w_bwd``, ``w_h``) so the
layer can project each message once per neuron instead of once per synapse; the
concatenated form above is ``concat([w_fwd, w_bwd, w_h])``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class SubRNNParams(NamedTuple):
    """V_M, shared by all synapses of all layers. Shapes for message M, state S."""

    w_fwd: jax.Array  # [M, 4S]  LSTM weights for the forward message
    w_bwd: jax.Array  # [M, 4S]  LSTM weights for the backward message
    w_h: jax.Array  # [S, 4S]  recurrent LSTM weights
    b: jax.Array  # [4S]     LSTM bias beta (gate order i, g, f, o)
    fwd_w: jax.Array  # [S, M]  forward messenger F
    fwd_b: jax.Array  # [M]     forward messenger bias bF
    bwd_w: jax.Array  # [S, M]  backward messenger G
    bwd_b: jax.Array  # [M]     backward messenger bias bG


def _trunc_normal(key: jax.Array, shape: tuple, fan_in: int) -> jax.Array:
    # N(0, 1/fan_in) truncated at +-2 sd, not rescaled (as haiku's TruncatedNormal).
    sd = 1.0 / jnp.sqrt(fan_in)
    return sd * jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)


def init_sub_rnn(key: jax.Array, message_size: int, state_size: int) -> SubRNNParams:
    """Meta-parameter init: truncated normal, sd 1/sqrt(fan_in); biases 0 (VSML.md §2)."""
    m, s = message_size, state_size
    k_lstm, k_f, k_b = jax.random.split(key, 3)
    w = _trunc_normal(k_lstm, (2 * m + s, 4 * s), 2 * m + s)
    return SubRNNParams(
        w_fwd=w[:m], w_bwd=w[m:2 * m], w_h=w[2 * m:], b=jnp.zeros(4 * s),
        fwd_w=_trunc_normal(k_f, (s, m), s), fwd_b=jnp.zeros(m),
        bwd_w=_trunc_normal(k_b, (s, m), s), bwd_b=jnp.zeros(m),
    )


def num_params(params: SubRNNParams) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))


def lstm_update(gates: jax.Array, c: jax.Array, forget_bias: float, input_bias: float):
    """LSTM state update from pre-activations ``gates`` [..., 4S] and cell ``c`` [..., S].

    Returns (h, c), each [..., S]. The fixed gate offsets make an untrained cell keep
    its state (forget ~ 1, input ~ 0): states then behave like slowly changing weights.
    """
    i, g, f, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f + forget_bias) * c + jax.nn.sigmoid(i + input_bias) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c
