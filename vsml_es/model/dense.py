"""A dense VSML layer: one sub-RNN state per synapse (a, b), A inputs x B outputs.

Per micro tick every synapse runs the shared LSTM (``sub_rnn.py``) on
``[fwd_a ; bwd_b ; h_ab]``; after the last micro tick the layer emits

    fwd_out_b = mean_a (F h_ab + bF)      to layer k+1   [B, M]
    bwd_out_a = mean_b (G h_ab + bG)      to layer k-1   [A, M]

Written for the hardware (the math is exactly the per-synapse form above):
- ``W [fwd_a; bwd_b; h_ab] = (fwd @ w_fwd)[a] + (bwd @ w_bwd)[b] + h_ab @ w_h``: the
  message projections are computed once per neuron (A + B rows) and broadcast, so the
  only per-synapse matmul is the recurrent one, one [A*B, S] x [S, 4S] product.
- The messengers are affine and the reduction is a mean, so h is reduced first and
  projected after: ``mean_a (F h_ab + bF) = F (mean_a h_ab) + bF``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.model.sub_rnn import SubRNNParams, lstm_update


class DenseState(NamedTuple):
    """Per-episode state V_L of one dense layer."""

    h: jax.Array  # [A, B, S] LSTM hidden state of every synapse
    c: jax.Array  # [A, B, S] LSTM cell state of every synapse
    fwd_in: jax.Array  # [A, M] incoming forward messages (from layer k-1 or the input)
    bwd_in: jax.Array  # [B, M] incoming backward messages (from layer k+1 or the error)


def init_dense_state(key: jax.Array, n_in: int, n_out: int, message_size: int,
                     state_size: int, init_rand_proportion: float) -> DenseState:
    """h = 0; the first ``init_rand_proportion * S`` dims of c ~ truncated normal with
    sd 1/sqrt(n_in), the rest 0; messages 0. The random part breaks the symmetry between
    synapses, as a random weight init does (VSML.md §2, per-episode init)."""
    n_rand = int(state_size * init_rand_proportion)
    sd = 1.0 / jnp.sqrt(n_in)  # truncated at +-2 sd, not rescaled (reference init)
    rand = sd * jax.random.truncated_normal(key, -2.0, 2.0, (n_in, n_out, n_rand), jnp.float32)
    c = jnp.concatenate([rand, jnp.zeros((n_in, n_out, state_size - n_rand))], axis=-1)
    return DenseState(
        h=jnp.zeros((n_in, n_out, state_size)), c=c,
        fwd_in=jnp.zeros((n_in, message_size)), bwd_in=jnp.zeros((n_out, message_size)),
    )


def dense_tick(params: SubRNNParams, state: DenseState, micro_ticks: int,
               forget_bias: float, input_bias: float) -> tuple[DenseState, jax.Array, jax.Array]:
    """Run ``micro_ticks`` updates of every synapse with the layer's incoming messages.

    Returns (new state, fwd_out [B, M], bwd_out [A, M]).
    """
    # [A, 1, 4S] + [1, B, 4S]: the message part of the gates, shared by all micro ticks.
    msg_gates = ((state.fwd_in @ params.w_fwd)[:, None, :]
                 + (state.bwd_in @ params.w_bwd)[None, :, :] + params.b)

    def micro_tick(hc, _):
        h, c = hc
        gates = msg_gates + h @ params.w_h  # [A, B, 4S]
        return lstm_update(gates, c, forget_bias, input_bias), None

    (h, c), _ = jax.lax.scan(micro_tick, (state.h, state.c), None, length=micro_ticks)
    fwd_out = h.mean(axis=0) @ params.fwd_w + params.fwd_b  # [B, M]
    bwd_out = h.mean(axis=1) @ params.bwd_w + params.bwd_b  # [A, M]
    return state._replace(h=h, c=c), fwd_out, bwd_out
