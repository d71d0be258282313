"""LA cloning: fit the shared sub-RNN so that VSML, by forward running alone, does online
SGD (Kirsch & Schmidhuber 2021, §3.2 "meta learning backpropagation"; VSML.md §4).

Each synapse (a, b) is cloned in isolation, on random numbers (no dataset). Its state
carries a weight ``w = kappa * c[0]`` (cell dim 0, so the per-episode random cell init
is a random weight init). Per step of the cloned ordinary layer ``y_b = mean_a w_ab
phi(x_a)`` with ``phi = tanh`` (``phi = id`` for ``linear``):

- predict tick (``fwd = (x, 0..)``, ``bwd = 0``): forward message channels 0 and 1 =
  ``w phi(x)`` (channel 1 is read as the logit, channel 0 is the next layer's input);
  ``w`` is kept;
- learn tick (``backward_pass``: same x, ``bwd = (e, 0..)``): ``w <- w - alpha e phi(x)``
  (the SGD step, with learning rate ``alpha / fan_in`` on the layer's weights
  ``W = w / fan_in``), and the backward message channel 0 = ``w e phi'(x)``, the error
  for the layer below (its mean over b is the backpropagated error up to 1/fan_out).

``logit_scale`` multiplies the fitted forward messenger (F, bF) afterwards: exact, as the
messenger is affine, and a logit temperature for a one-layer network. The layer means over
its inputs, so its logits are ``mean_a w_ab x_a`` with ``|w| <= w_max``: the weights of the
equivalent linear layer are bounded by ``w_max / fan_in`` (0.125 on digits), and online SGD
with weights clipped there plateaus where the clone does (docs/meta_training.md). Fitting
a larger target instead (channel 1 = s w phi(x)) fits worse and learns worse.

The loss is the squared error of those targets over rollouts of ``clone.rollout`` steps
from random weights, inputs and errors, minimised with Adam. ``vsml-es clone CONFIG``
writes a run directory (config.yaml, metrics.jsonl, TensorBoard, checkpoints,
learned_la.npz) that ``evaluate``, ``export`` and ``es.init_from`` accept.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vsml_es.config import Config
from vsml_es.model.sub_rnn import SubRNNParams, init_sub_rnn, lstm_update


class CloneSpec(NamedTuple):
    """What the cloned synapse computes (see the module docstring)."""

    alpha: float = 2.0  # SGD step on w per unit e*phi(x)
    kappa: float = 8.0  # w = kappa * c[0]
    w_max: float = 8.0  # teacher weights are kept in [-w_max, w_max]
    linear: bool = True  # phi = id (one linear layer) or tanh (layers with nonlinearity)
    rollout: int = 8  # steps per training rollout
    batch: int = 512  # synapses per Adam step
    steps: int = 2000  # Adam steps
    learning_rate: float = 3e-3
    logit_scale: float = 1.0  # forward messenger (F, bF) multiplied by this after fitting


def _tick(la: SubRNNParams, cfg, h, c, fwd, bwd):
    """One VSML tick of independent synapses: h, c [N, S]; fwd, bwd [N, M].

    The same numbers as ``model/dense.py`` with each synapse alone in its layer
    (``micro_ticks`` LSTM updates with fixed incoming messages; no mean over others).
    Returns (h, c, fwd_out [N, M], bwd_out [N, M]).
    """
    msg = fwd @ la.w_fwd + bwd @ la.w_bwd + la.b
    for _ in range(cfg.micro_ticks):
        h, c = lstm_update(msg + h @ la.w_h, c, cfg.forget_bias, cfg.input_bias)
    return h, c, h @ la.fwd_w + la.fwd_b, h @ la.bwd_w + la.bwd_b


def clone_loss(la: SubRNNParams, cfg, spec: CloneSpec, key: jax.Array):
    """Mean squared error of the synapse against its SGD targets over one rollout batch.

    Returns (loss, parts dict of the three target errors)."""
    m, s, n = cfg.message_size, cfg.state_size, spec.batch
    k_w, k_c, k_x, k_e, k_on = jax.random.split(key, 5)
    phi = (lambda v: v) if spec.linear else jnp.tanh
    dphi = (lambda v: jnp.ones_like(v)) if spec.linear else (lambda v: 1 - jnp.tanh(v) ** 2)
    w = jax.random.uniform(k_w, (n,), minval=-spec.w_max, maxval=spec.w_max) * \
        jax.random.uniform(k_c, (n,)) ** 2  # more mass near 0, where episodes start
    n_rand = int(s * cfg.init_rand_proportion)
    c = jnp.zeros((n, s)).at[:, 1:n_rand].set(0.2 * jax.random.normal(k_c, (n, n_rand - 1)))
    c = c.at[:, 0].set(w / spec.kappa)
    h = jnp.zeros((n, s))
    xs = jax.random.normal(k_x, (spec.rollout, n)) * 1.3
    es = jax.random.uniform(k_e, (spec.rollout, n), minval=-1, maxval=1) * \
        (jax.random.uniform(k_on, (spec.rollout, n)) < 0.7)
    zeros = jnp.zeros((n, m))

    def step(carry, xe):
        h, c, w = carry
        x, e = xe
        fwd = zeros.at[:, 0].set(x)
        h, c, out, _ = _tick(la, cfg, h, c, fwd, zeros)
        y = w * phi(x)
        err_out = ((out[:, 0] - y) ** 2 + (out[:, 1] - y) ** 2) / 2
        err_keep = (spec.kappa * c[:, 0] - w) ** 2
        h, c, _, back = _tick(la, cfg, h, c, fwd, zeros.at[:, 0].set(e))
        err_back = (back[:, 0] - w * e * dphi(x)) ** 2
        w = jnp.clip(w - spec.alpha * e * phi(x), -spec.w_max, spec.w_max)
        err_new = (spec.kappa * c[:, 0] - w) ** 2
        return (h, c, w), (err_out.mean(), (err_keep.mean() + err_new.mean()) / 2, err_back.mean())

    _, (e_out, e_w, e_back) = jax.lax.scan(step, (h, c, w), (xs, es))
    parts = {"out": e_out.mean(), "weight": e_w.mean(), "back": e_back.mean()}
    scale = spec.w_max ** 2  # errors relative to the weight range
    loss = (parts["out"] + parts["weight"] + (0.0 if spec.linear else parts["back"])) / scale
    return loss, parts


def fit_clone(cfg: Config, spec: CloneSpec, key: jax.Array, la: SubRNNParams | None = None,
              on_step=None) -> SubRNNParams:
    """Adam on :func:`clone_loss`, then the forward messenger times ``spec.logit_scale``.

    ``on_step(i, loss, parts, la)`` is called every step with the scaled LA; a given ``la``
    is the unscaled start of the fit."""
    k_init, k_data = jax.random.split(key)
    la = la if la is not None else init_sub_rnn(k_init, cfg.model.message_size, cfg.model.state_size)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(spec.learning_rate))
    opt_state = opt.init(la)

    @jax.jit
    def update(la, opt_state, i):
        (loss, parts), grad = jax.value_and_grad(clone_loss, has_aux=True)(
            la, cfg.model, spec, jax.random.fold_in(k_data, i))
        upd, opt_state = opt.update(grad, opt_state, la)
        return optax.apply_updates(la, upd), opt_state, loss, parts

    def scaled(la):
        return la._replace(fwd_w=la.fwd_w * spec.logit_scale, fwd_b=la.fwd_b * spec.logit_scale)

    for i in range(spec.steps):
        la, opt_state, loss, parts = update(la, opt_state, i)
        if on_step is not None:
            on_step(i, loss, parts, scaled(la))
    return scaled(la)


def save_checkpoint(run_dir: Path, cfg: Config, la: SubRNNParams, step: int) -> None:
    """learned_la.npz plus a checkpoint of ``cfg.es.strategy``'s state centred on ``la``, so
    ``export``, ``evaluate`` and ``train --resume`` (ES from the clone) work on the run."""
    from vsml_es.config import config_hash
    from vsml_es.es.trainer import _ES_INIT, setup
    from vsml_es.runs.checkpoints import Checkpointer
    from vsml_es.runs.run_dir import LA_FILE, save_la

    s = setup(cfg)
    state = s.strategy.init(jax.random.fold_in(s.root_key, _ES_INIT), la, s.es_params)
    ckpt = Checkpointer(run_dir, cfg.checkpoint.keep)
    try:
        ckpt.save(0, state, s.root_key, config_hash(cfg))
    finally:
        ckpt.close()
    save_la(Path(run_dir) / LA_FILE, la, cfg, step)


def clone_command(args) -> int:
    """``vsml-es clone CONFIG [-o key=value] [--run-dir DIR] [--steps N] [--alpha A]``."""
    from vsml_es.cli import UserError
    from vsml_es.config import load_config
    from vsml_es.runs.metrics import MetricsLog
    from vsml_es.runs.run_dir import LA_FILE, default_run_dir, save_la, write_config

    for name, value, ok, allowed in (("--steps", args.steps, args.steps >= 1, "an integer >= 1"),
                                     ("--alpha", args.alpha, args.alpha > 0, "a number > 0"),
                                     ("--logit-scale", args.logit_scale, args.logit_scale > 0, "a number > 0")):
        if not ok:
            raise UserError(f"{name}: got {value}, allowed: {allowed}")
    cfg = load_config(args.config, args.override)
    if not cfg.model.backward_pass:
        raise UserError("cloning SGD needs model.backward_pass: true (the update needs x_t and e_t "
                        "in the same tick); add -o model.backward_pass=true")
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(args.config, "clone-")
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = CloneSpec(steps=args.steps, alpha=args.alpha, linear=not cfg.model.hidden_layers,
                     logit_scale=args.logit_scale)
    write_config(run_dir, cfg)
    metrics = MetricsLog(run_dir, cfg.logging.tensorboard, 0)
    print(f"run directory: {run_dir}  (cloning online SGD: {spec})", file=sys.stderr)
    t0 = [time.time()]

    def on_step(i, loss, parts, la):
        if i % 50 == 0 or i + 1 == spec.steps:
            row = {"generation": i, "loss_mean": float(loss), **{f"clone/{k}": float(v) for k, v in parts.items()},
                   "seconds": time.time() - t0[0]}
            metrics.write(row)
            print(f"step {i + 1}/{spec.steps} loss {float(loss):.5f} " +
                  " ".join(f"{k} {float(v):.4f}" for k, v in parts.items()), file=sys.stderr, flush=True)
            t0[0] = time.time()
        if i + 1 == spec.steps:
            save_checkpoint(run_dir, cfg, la, i + 1)
        elif (i + 1) % 500 == 0:
            save_la(run_dir / LA_FILE, la, cfg, i + 1)

    try:
        fit_clone(cfg, spec, jax.random.PRNGKey(cfg.seed), on_step=on_step)
    finally:
        metrics.close()
    print(f"wrote {run_dir / LA_FILE}; improve it with: vsml-es train CONFIG -o es.init_from={run_dir}",
          file=sys.stderr)
    return 0
