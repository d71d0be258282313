"""A dense VSML layer: one sub-RNN state per synapse (a, b), A inputs x B outputs.

Per micro tick every synapse runs the shared LSTM (``sub_rnn.py``) on
``[fwd_a ; bwd_b ; h_ab]``; after the last micro tick the layer emits

    fwd_out_b = mean_a (F h_ab + bF)      to layer k+1   [B, M]
    bwd_out_a = mean_b (G h_ab + bG)      to layer k-1   [A, M]

Written for the hardware (the math is exactly the per-synapse form above; only the
rounding order differs, ~1e-7):
- ``W [fwd_a; bwd_b; h_ab] = (fwd @ w_fwd)[a] + (bwd @ w_bwd)[b] + h_ab @ w_h``: the
  message projections are computed once per neuron (A + B rows), once per tick for all
  micro ticks, and broadcast; the only per-synapse matmul is the recurrent one.
- Gate-wise layout: the recurrent product is four ``[A*B, S] x [S, S]`` matmuls, one per
  gate, so every gate is a contiguous ``[A, B, S]`` array and the whole LSTM update of a
  micro tick fuses into elementwise loops (one ``[A*B, S] x [S, 4S]`` product followed by
  strided gate slices measured ~2x slower per tick on CPU, benchmarks/README.md).
- ``sigmoid(x) = (1 + tanh(x / 2)) / 2``: one tanh instead of exp + divide. The 1/2 is
  folded into the weights and bias of the i, f, o gates (exact: a power of two), and the
  fixed gate offsets into the bias.
- The messengers are affine and the reduction is a mean, so h is reduced first and
  projected after: ``mean_a (F h_ab + bF) = F (mean_a h_ab) + bF``.

``dtype``: the state keeps the dtype it was initialised with (float32 by default); the
tick computes in that dtype, so a bfloat16 state runs the whole layer in bfloat16
(meant for GPUs; benchmarks/README.md says how far it strays from float32).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.model.sub_rnn import SubRNNParams


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


def _half_sigmoid_tanh(x: jax.Array) -> jax.Array:
    """sigmoid(2 x) = (1 + tanh(x)) / 2; the caller has already halved x."""
    return 0.5 * jnp.tanh(x) + 0.5


def dense_tick(params: SubRNNParams, state: DenseState, micro_ticks: int,
               forget_bias: float, input_bias: float) -> tuple[DenseState, jax.Array, jax.Array]:
    """Run ``micro_ticks`` updates of every synapse with the layer's incoming messages.

    Returns (new state, fwd_out [B, M], bwd_out [A, M]). Per micro tick, for every (a, b):

        [i, g, f, o] = W [fwd_a; bwd_b; h_ab] + beta
        c_ab <- sigmoid(f + forget_bias) c_ab + sigmoid(i + input_bias) tanh(g)
        h_ab <- sigmoid(o) tanh(c_ab)
    """
    dtype = state.h.dtype
    s = state.h.shape[-1]
    # Gate order i, g, f, o. Sigmoid gates are pre-scaled by 1/2 (see module docstring).
    scale = (0.5, 1.0, 0.5, 0.5)
    offset = (input_bias, 0.0, forget_bias, 0.0)

    def gate(w, k):
        return (w[..., k * s:(k + 1) * s] * scale[k]).astype(dtype)

    # Message part of each gate, [A, 1, S] + [1, B, S]: once per tick, not per synapse.
    msg = [((state.fwd_in.astype(dtype) @ gate(params.w_fwd, k))
            + gate(params.b + jnp.repeat(jnp.asarray(offset, params.b.dtype), s), k))[:, None, :]
           + (state.bwd_in.astype(dtype) @ gate(params.w_bwd, k))[None, :, :]
           for k in range(4)]
    w_h = [gate(params.w_h, k) for k in range(4)]

    h, c = state.h, state.c
    for _ in range(micro_ticks):  # unrolled: micro_ticks is small and static
        i, g, f, o = (msg[k] + h @ w_h[k] for k in range(4))
        c = _half_sigmoid_tanh(f) * c + _half_sigmoid_tanh(i) * jnp.tanh(g)
        h = _half_sigmoid_tanh(o) * jnp.tanh(c)

    fwd_out = h.mean(axis=0) @ params.fwd_w.astype(dtype) + params.fwd_b.astype(dtype)  # [B, M]
    bwd_out = h.mean(axis=1) @ params.bwd_w.astype(dtype) + params.bwd_b.astype(dtype)  # [A, M]
    return state._replace(h=h, c=c), fwd_out, bwd_out
