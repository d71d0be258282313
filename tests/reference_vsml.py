"""A plain numpy reference of the VSML network: one loop iteration per synapse.

Written to be read next to VSML.md §2/§3, not to be fast. The JAX model is pinned to it.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def synapse_update(p, fwd_a, bwd_b, h, c, forget_bias, input_bias):
    """One sub-RNN update of one synapse: u = [fwd_a; bwd_b]; gates = W [u; h] + beta."""
    W = np.concatenate([p["w_fwd"], p["w_bwd"], p["w_h"]])  # [2M+S, 4S]
    gates = np.concatenate([fwd_a, bwd_b, h]) @ W + p["b"]
    S = h.shape[0]
    i, g, f, o = gates[:S], gates[S:2 * S], gates[2 * S:3 * S], gates[3 * S:]
    c = sigmoid(f + forget_bias) * c + sigmoid(i + input_bias) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def layer_tick(p, layer, micro_ticks, forget_bias, input_bias):
    """Every synapse runs ``micro_ticks`` updates with the same incoming messages; then
    fwd_out_b = mean_a (F h_ab + bF), bwd_out_a = mean_b (G h_ab + bG)."""
    A, B, _ = layer["h"].shape
    M = layer["fwd_in"].shape[1]
    for a in range(A):
        for b in range(B):
            for _ in range(micro_ticks):
                layer["h"][a, b], layer["c"][a, b] = synapse_update(
                    p, layer["fwd_in"][a], layer["bwd_in"][b], layer["h"][a, b], layer["c"][a, b],
                    forget_bias, input_bias)
    fwd_out = np.zeros((B, M))
    bwd_out = np.zeros((A, M))
    for a in range(A):
        for b in range(B):
            fwd_out[b] += (layer["h"][a, b] @ p["fwd_w"] + p["fwd_b"]) / A
            bwd_out[a] += (layer["h"][a, b] @ p["bwd_w"] + p["bwd_b"]) / B
    return fwd_out, bwd_out


def input_message(x, M):
    m = np.zeros((len(x), M))
    m[:, 0] = x
    return m


def predict(cfg, p, layers, x):
    fwd = input_message(x, cfg.message_size)
    for k, layer in enumerate(layers):
        layer["fwd_in"] = fwd
        fwd, bwd = layer_tick(p, layer, cfg.micro_ticks, cfg.forget_bias, cfg.input_bias)
        if k > 0:
            layers[k - 1]["bwd_in"] = bwd
    out = fwd[:, cfg.output_channel]
    return cfg.tanh_bound * np.tanh(out / cfg.tanh_bound) if cfg.tanh_bound else out


def learn(cfg, p, layers, x, error, label_onehot):
    bwd = np.zeros((len(error), cfg.message_size))
    bwd[:, 0] = error
    if cfg.feed_label:
        bwd[:, 1] = label_onehot
    layers[-1]["bwd_in"] = bwd
    if not cfg.backward_pass:
        return
    layers[0]["fwd_in"] = input_message(x, cfg.message_size)
    for k in reversed(range(len(layers))):
        fwd, bwd = layer_tick(p, layers[k], cfg.micro_ticks, cfg.forget_bias, cfg.input_bias)
        if k + 1 < len(layers):
            layers[k + 1]["fwd_in"] = fwd
        if k > 0:
            layers[k - 1]["bwd_in"] = bwd
    layers[-1]["bwd_in"] = np.zeros_like(layers[-1]["bwd_in"])


def episode(cfg, p, layers, xs, ys, n_classes):
    """Batch 1: xs [T, D], ys [T]. Returns per-step logits [T, n_classes] and losses [T]."""
    logits_all, losses = [], []
    for x, y in zip(xs, ys):
        logits = predict(cfg, p, layers, x)
        z = logits - logits.max()
        prob = np.exp(z) / np.exp(z).sum()
        onehot = np.eye(n_classes)[y]
        losses.append(-np.log(prob[y]))
        logits_all.append(logits)
        learn(cfg, p, layers, x, prob - onehot, onehot)
    return np.array(logits_all), np.array(losses)
