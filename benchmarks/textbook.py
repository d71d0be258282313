"""The textbook VSML network: the reference `vsml-es bench` measures the fast step against.

Written the way the paper's Fig. 1 reads, with no use of the structure of the math:
every synapse (a, b) of every dense layer runs the shared LSTM on the concatenation

    z_ab = [fwd_a ; bwd_b ; h_ab]                         in R^{2M+S}
    [i,g,f,o] = W z_ab + beta                             W = concat([w_fwd, w_bwd, w_h])
    c_ab <- sigmoid(f + 5) c_ab + sigmoid(i - 5) tanh(g);  h_ab <- sigmoid(o) tanh(c_ab)

and applies both messenger projections itself, after which the layer means them:

    fwd_out_b = mean_a (F h_ab + bF),     bwd_out_a = mean_b (G h_ab + bG).

Synapses are mapped with a nested ``vmap`` (over a, then b). The layer schedule, the
boundaries and the state layout (``DenseState``: h, c [A, B, S]) are the project's
(``vsml_es.model.network``), so the two implementations can be compared state for state.
Numerics are the same up to float rounding: only the order of additions differs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from vsml_es.config import ModelConfig
from vsml_es.learner import Learner
from vsml_es.model.dense import DenseState
from vsml_es.model.network import make_vsml
from vsml_es.model.sub_rnn import SubRNNParams


def synapse_update(params: SubRNNParams, cfg: ModelConfig, fwd_a, bwd_b, h, c):
    """One micro tick of one synapse: messages [M], state h, c [S] -> (h, c)."""
    w = jnp.concatenate([params.w_fwd, params.w_bwd, params.w_h], axis=0)  # [2M+S, 4S]
    z = jnp.concatenate([fwd_a, bwd_b, h])
    gates = z @ w + params.b
    i, g, f, o = jnp.split(gates, 4)
    c = jax.nn.sigmoid(f + cfg.forget_bias) * c + jax.nn.sigmoid(i + cfg.input_bias) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return h, c


def synapse(params: SubRNNParams, cfg: ModelConfig, fwd_a, bwd_b, h, c):
    """All micro ticks of one synapse, then both messenger outputs: (h, c, out_fwd, out_bwd)."""
    for _ in range(cfg.micro_ticks):
        h, c = synapse_update(params, cfg, fwd_a, bwd_b, h, c)
    out_fwd = h @ params.fwd_w + params.fwd_b
    out_bwd = h @ params.bwd_w + params.bwd_b
    return h, c, out_fwd, out_bwd


def dense_tick(cfg: ModelConfig, params: SubRNNParams, layer: DenseState):
    """Same contract as ``vsml_es.model.dense.dense_tick``: (state, fwd_out [B, M], bwd_out [A, M]).

    Computes in the state's dtype, as the fast tick does (bfloat16 states: bfloat16 math)."""
    params = jax.tree_util.tree_map(lambda p: p.astype(layer.h.dtype), params)
    per_b = jax.vmap(functools.partial(synapse, params, cfg), in_axes=(None, 0, 0, 0))  # over b
    per_ab = jax.vmap(per_b, in_axes=(0, None, 0, 0))  # over a
    h, c, out_fwd, out_bwd = per_ab(layer.fwd_in, layer.bwd_in, layer.h, layer.c)
    return layer._replace(h=h, c=c), out_fwd.mean(axis=0), out_bwd.mean(axis=1)


def make_textbook_vsml(cfg: ModelConfig) -> Learner:
    """The textbook learner: the project's network with the per-synapse tick above."""
    return make_vsml(cfg, tick=dense_tick)
