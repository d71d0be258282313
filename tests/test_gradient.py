"""Gradient meta-training (es.strategy: gradient): the meta-loss goes down on a tiny task,
truncation keeps the forward numbers, and a killed run resumes bit-identically."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_overrides
from vsml_es.config import load_config
from vsml_es.es.gradient import GradientStrategy, for_meta_gradient, make_meta_loss, task_distribution
from vsml_es.es.trainer import restore_run, setup, train
from vsml_es.runs.metrics import read_metrics
from vsml_es.tasks.datasets import load_dataset
from vsml_es.tasks.episode import run_episode

TIMING = {"seconds", "member_steps_per_second", "eval_seconds"}
# 2-way tasks on 4 projected inputs, 12 steps: a meta-gradient step takes milliseconds.
GRAD = {"es.strategy": "gradient", "es.population": 4, "task.episode_length": 12,
        "task.class_subsets": "[2]", "task.rand_proj": 1.0, "task.rand_proj_size": 4,
        "es.learning_rate": 0.01}


def _cfg(**extra):
    return load_config(None, tiny_overrides(**{**GRAD, **extra}))


def test_meta_gradient_steps_decrease_the_meta_loss():
    cfg = _cfg(**{"es.population": 8})
    s = setup(cfg)
    ds = load_dataset("digits")
    variants, _ = task_distribution(cfg, ds)
    loss_fn = make_meta_loss(cfg, s.learner, ds, variants[0])
    x, y = jnp.asarray(ds.train_x), jnp.asarray(ds.train_y)
    # A random LA whose states move (the plain init starts on a flat plateau at chance).
    la = jax.tree_util.tree_map(lambda a: 3 * a + 0.2, s.initial_la)
    strategy = GradientStrategy(cfg.es, la)
    state = strategy.init(None, la)
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, 0, x, y)[0]))
    losses = []
    for _ in range(16):
        loss, grad = value_and_grad(strategy.get_mean(state))
        losses.append(float(loss))
        state = strategy.update(state, grad)
    before, after = losses[0], losses[-1]
    assert np.isfinite(before) and after < before - 0.05, (before, after)


def test_truncation_changes_gradients_not_forward_numbers():
    cfg = _cfg()
    s = setup(cfg)
    la = jax.tree_util.tree_map(lambda a: 3 * a + 0.2, s.initial_la)
    xs = jax.random.normal(jax.random.PRNGKey(0), (6, 1, 4))
    ys = jnp.array([0, 1] * 3).reshape(6, 1)

    def loss(p, learner):
        return run_episode(learner, p, jax.random.PRNGKey(1), xs, ys, 2).loss.mean()

    plain, cut = for_meta_gradient(s.learner, 0), for_meta_gradient(s.learner, 3)
    np.testing.assert_allclose(loss(la, plain), loss(la, s.learner), rtol=1e-6)
    np.testing.assert_allclose(loss(la, cut), loss(la, s.learner), rtol=1e-6)
    g_full = jax.grad(loss)(la, plain).w_h
    g_cut = jax.grad(loss)(la, cut).w_h
    assert np.isfinite(g_cut).all() and not np.allclose(g_full, g_cut)


def _deterministic(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_stopped_and_resumed_gradient_run_equals_uninterrupted_run(tmp_path):
    extra = {"es.generations": 6, "checkpoint.every": 2, "logging.eval_every": 0,
             "logging.tensorboard": False}
    cfg = _cfg(**extra)
    train(cfg, tmp_path / "ref", None, progress=False, log=lambda m: None)
    train(_cfg(**{**extra, "es.generations": 3}), tmp_path / "run", None, progress=False, log=lambda m: None)
    train(cfg, tmp_path / "run", None, resume=True, progress=False, log=lambda m: None)
    assert _deterministic(read_metrics(tmp_path / "run")) == _deterministic(read_metrics(tmp_path / "ref"))
    np.testing.assert_array_equal(np.asarray(restore_run(cfg, tmp_path / "run").mean_la.b),
                                  np.asarray(restore_run(cfg, tmp_path / "ref").mean_la.b))


@pytest.mark.slow
def test_killed_gradient_run_resumes_bit_identically(tmp_path):
    extra = {"es.generations": 8, "checkpoint.every": 3, "logging.eval_every": 0,
             "logging.tensorboard": False}
    ref = tmp_path / "ref"
    cfg = _cfg(**extra)
    train(cfg, ref, None, progress=False, log=lambda m: None)
    rows = read_metrics(ref)
    assert [r["generation"] for r in rows] == list(range(8))
    assert all(k in rows[0] for k in ("loss_mean", "loss_best", "loss_std", "accuracy_mean", "sigma",
                                      "seconds", "member_steps_per_second", "workers", "nonfinite",
                                      "grad_norm"))
    assert rows[-1]["loss_mean"] != rows[0]["loss_mean"]
    final = restore_run(cfg, ref).mean_la
    assert not np.array_equal(np.asarray(final.w_h), np.asarray(setup(cfg).initial_la.w_h))

    run = tmp_path / "run"
    args = [sys.executable, "-m", "vsml_es.cli", "train", str(tmp_path / "none.yaml"), "--run-dir", str(run)]
    (tmp_path / "none.yaml").write_text("seed: 0\n")
    for o in tiny_overrides(**{**GRAD, **extra}):
        args += ["-o", o]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(read_metrics(run)) < 5:  # past the checkpoint at 3, before the one at 6
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    resume = subprocess.run([sys.executable, "-m", "vsml_es.cli", "train", "--resume", str(run)],
                            capture_output=True, text=True, timeout=180)
    assert resume.returncode == 0, resume.stderr
    assert "resuming" in resume.stderr
    assert _deterministic(read_metrics(run)) == _deterministic(rows)
    np.testing.assert_array_equal(np.asarray(restore_run(cfg, run).mean_la.w_h), np.asarray(final.w_h))
