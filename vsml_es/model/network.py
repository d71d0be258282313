"""The VSML network: dense VSML layers passing forward and backward messages.

Layer schedule within one step (VSML.md §2, reference models.py):
- ``predict``: layers run in order 1..K. Layer 1 reads the input as forward message
  ``(x_a, 0, ..., 0)``; layer k's forward output feeds layer k+1 in the same step; its
  backward output is stored and read by layer k-1 in the *next* step. The prediction is
  ``tanh_bound * tanh(fwd_out_b[output_channel] / tanh_bound)`` of the last layer.
- ``learn`` with ``backward_pass=False`` (the paper's default) only stores the error
  message ``(e_b, label_b if feed_label else 0, 0, ...)`` as the last layer's backward
  input: the last layer hears it in the next step, layer k after K-k further steps.
- ``learn`` with ``backward_pass=True`` runs a second sweep K..1 on the same x with the
  new error, backward messages used at once; the error carried to the next step is 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from vsml_es.config import ModelConfig
from vsml_es.learner import Learner
from vsml_es.model.dense import DenseState, dense_tick, init_dense_state
from vsml_es.model.sub_rnn import SubRNNParams, init_sub_rnn


class VSMLState(NamedTuple):
    layers: tuple  # tuple[DenseState, ...], layer 1 first


def layer_sizes(cfg: ModelConfig, n_in: int, n_out: int) -> list[tuple[int, int]]:
    sizes = [n_in, *cfg.hidden_layers, n_out]
    return list(zip(sizes[:-1], sizes[1:]))


def init_state(cfg: ModelConfig, params: SubRNNParams, key: jax.Array, n_in: int, n_out: int) -> VSMLState:
    shapes = layer_sizes(cfg, n_in, n_out)
    keys = jax.random.split(key, len(shapes))
    return VSMLState(tuple(
        init_dense_state(k, a, b, cfg.message_size, cfg.state_size, cfg.init_rand_proportion)
        for k, (a, b) in zip(keys, shapes)))


def _input_message(x: jax.Array, message_size: int) -> jax.Array:
    """x [D] -> [D, M] with x in channel 0."""
    return jnp.zeros((x.shape[0], message_size), x.dtype).at[:, 0].set(x)


def _hear(layer: DenseState, fwd_in=None, bwd_in=None) -> DenseState:
    """The layer with new incoming messages, in the layer's own dtype (bfloat16 states)."""
    if fwd_in is not None:
        layer = layer._replace(fwd_in=fwd_in.astype(layer.fwd_in.dtype))
    if bwd_in is not None:
        layer = layer._replace(bwd_in=bwd_in.astype(layer.bwd_in.dtype))
    return layer


def fast_tick(cfg: ModelConfig, params: SubRNNParams, layer: DenseState):
    """A layer's micro ticks: ``(cfg, params, layer) -> (layer, fwd_out [B, M], bwd_out [A, M])``."""
    return dense_tick(params, layer, cfg.micro_ticks, cfg.forget_bias, cfg.input_bias)


def predict(cfg: ModelConfig, params: SubRNNParams, state: VSMLState, x: jax.Array, tick=fast_tick):
    """Forward sweep on x [n_in]; returns (logits [n_out], state)."""
    layers = list(state.layers)
    fwd = _input_message(x, cfg.message_size)
    for k in range(len(layers)):
        layer, fwd, bwd = tick(cfg, params, _hear(layers[k], fwd_in=fwd))
        layers[k] = layer
        if k > 0:
            layers[k - 1] = _hear(layers[k - 1], bwd_in=bwd)  # heard next step
    out = fwd[:, cfg.output_channel].astype(jnp.float32)  # logits and loss in float32 always
    if cfg.tanh_bound:
        out = cfg.tanh_bound * jnp.tanh(out / cfg.tanh_bound)
    return out, VSMLState(tuple(layers))


def learn(cfg: ModelConfig, params: SubRNNParams, state: VSMLState, x: jax.Array,
          error: jax.Array, label: jax.Array, tick=fast_tick) -> VSMLState:
    """Feed back error [n_out] (and the one-hot label if ``feed_label``)."""
    layers = list(state.layers)
    bwd = jnp.zeros((error.shape[0], cfg.message_size), error.dtype).at[:, 0].set(error)
    if cfg.feed_label:
        bwd = bwd.at[:, 1].set(label)
    layers[-1] = _hear(layers[-1], bwd_in=bwd)
    if not cfg.backward_pass:
        return VSMLState(tuple(layers))
    layers[0] = _hear(layers[0], fwd_in=_input_message(x, cfg.message_size))
    for k in reversed(range(len(layers))):
        layer, fwd, bwd = tick(cfg, params, layers[k])
        layers[k] = layer
        if k + 1 < len(layers):
            layers[k + 1] = _hear(layers[k + 1], fwd_in=fwd)
        if k > 0:
            layers[k - 1] = _hear(layers[k - 1], bwd_in=bwd)  # used at once
    layers[-1] = layers[-1]._replace(bwd_in=jnp.zeros_like(layers[-1].bwd_in))
    return VSMLState(tuple(layers))


def merge_batch(state: VSMLState) -> VSMLState:
    """Batched state [B, ...]: average the first half of h and c over the batch."""
    def merge(s):
        half = s.shape[-1] // 2
        shared = jnp.broadcast_to(s[..., :half].mean(axis=0, keepdims=True), s[..., :half].shape)
        return jnp.concatenate([shared, s[..., half:]], axis=-1)

    return VSMLState(tuple(l._replace(h=merge(l.h), c=merge(l.c)) for l in state.layers))


def make_vsml(cfg: ModelConfig, tick=fast_tick) -> Learner:
    """The VSML learner for a model config; ``params`` is the LA (a SubRNNParams).

    ``tick`` runs one layer's micro ticks (default: the fast dense tick); the textbook
    implementation in benchmarks/ swaps in a per-synapse one and keeps everything else.
    """
    return Learner(
        init_params=lambda key: init_sub_rnn(key, cfg.message_size, cfg.state_size),
        init_state=functools.partial(init_state, cfg),
        predict=functools.partial(predict, cfg, tick=tick),
        learn=functools.partial(learn, cfg, tick=tick),
        merge_batch=merge_batch,
    )
