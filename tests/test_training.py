"""Meta-training end to end: determinism, exact resume after kill, checkpoint fallback,
non-finite fitness, TensorBoard files, and the CLI. Real orbax files, real processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import tiny_overrides
from vsml_es.config import ConfigError, load_config
from vsml_es.es.dispatch import InProcessDispatcher
from vsml_es.es.trainer import NonFiniteFitnessError, restore_run, train
from vsml_es.runs.metrics import read_metrics
from vsml_es.runs.run_dir import load_la

TIMING = {"seconds", "member_steps_per_second", "eval_seconds"}


def deterministic(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _train(run_dir, overrides=(), resume=False, dispatcher=None, **extra):
    cfg = load_config(None, tiny_overrides(**extra) + list(overrides))
    dispatcher = dispatcher or InProcessDispatcher(cfg)
    return train(cfg, Path(run_dir), dispatcher, resume=resume, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 12-generation run (checkpoint every 3) to compare others against."""
    d = tmp_path_factory.mktemp("ref")
    _train(d, **{"es.generations": 12, "checkpoint.every": 3, "logging.eval_every": 5})
    return d


def test_run_directory_layout_and_metrics(reference_run):
    d = reference_run
    assert (d / "config.yaml").is_file() and (d / "learned_la.npz").is_file()
    assert list(d.glob("events.out.tfevents.*"))
    rows = read_metrics(d)
    assert [r["generation"] for r in rows] == list(range(12))
    for key in ("loss_mean", "loss_best", "loss_std", "accuracy_mean", "sigma", "seconds",
                "member_steps_per_second", "workers", "nonfinite"):
        assert key in rows[0], key
    assert [r["generation"] for r in rows if "eval/digits/accuracy" in r] == [0, 5, 10, 11]  # + last
    assert rows[0]["loss_best"] <= rows[0]["loss_mean"] and rows[0]["nonfinite"] == 0
    # keep=3: the oldest checkpoints are pruned, the newest three stay
    assert sorted(int(p.name) for p in (d / "checkpoints").iterdir() if p.name.isdigit()) == [6, 9, 12]
    la = load_la(d / "learned_la.npz")
    cfg = load_config(d / "config.yaml")
    np.testing.assert_array_equal(la.w_h, np.asarray(restore_run(cfg, d).mean_la.w_h))


def test_same_seed_same_metrics_and_other_seed_differs(reference_run, tmp_path):
    _train(tmp_path / "a", **{"es.generations": 4, "checkpoint.every": 3, "logging.eval_every": 5})
    def training_keys(rows):  # a shorter run also evaluates its own last generation
        return [{k: v for k, v in r.items() if not k.startswith("eval")} for r in deterministic(rows)]

    ref = deterministic(read_metrics(reference_run))[:4]
    assert training_keys(read_metrics(tmp_path / "a")) == training_keys(ref)
    _train(tmp_path / "b", ["seed=1"], **{"es.generations": 2, "logging.eval_every": 0})
    assert read_metrics(tmp_path / "b")[0]["loss_mean"] != ref[0]["loss_mean"]


def test_tensorboard_events_mirror_metrics(reference_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(reference_run))
    acc.Reload()
    rows = read_metrics(reference_run)
    loss = acc.Scalars("loss_mean")
    assert [e.step for e in loss] == list(range(12))
    np.testing.assert_allclose([e.value for e in loss], [r["loss_mean"] for r in rows], rtol=1e-6)
    assert [e.step for e in acc.Scalars("eval/digits/accuracy")] == [0, 5, 10, 11]


def _cli(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "vsml_es.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _cli_train_args(run_dir):
    args = ["train", "--run-dir", str(run_dir)]
    for o in tiny_overrides(**{"es.generations": 12, "checkpoint.every": 3, "logging.eval_every": 5}):
        args += ["-o", o]
    return args


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_and_resumed_run_equals_uninterrupted_run(reference_run, tmp_path, sig):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text("seed: 0\n")
    run_dir = tmp_path / "run"
    proc = _cli(*_cli_train_args(run_dir)[:1], str(cfg_file), *_cli_train_args(run_dir)[1:])
    deadline = time.time() + 120
    while len(read_metrics(run_dir)) < 5:  # past the checkpoint at 3, before the one at 6
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    interrupted_at = len(read_metrics(run_dir))
    resume = _cli("train", "--resume", str(run_dir))
    _, err = resume.communicate(timeout=180)
    assert resume.returncode == 0, err
    assert "resuming" in err
    assert deterministic(read_metrics(run_dir)) == deterministic(read_metrics(reference_run)), (
        f"interrupted after {interrupted_at} generations")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss_mean")] == list(range(12))  # stale steps purged


def test_corrupt_latest_checkpoint_falls_back_with_warning(reference_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    for f in (run_dir / "checkpoints" / "12").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00garbage")
    cfg = load_config(run_dir / "config.yaml")
    with pytest.warns(UserWarning, match=r"checkpoints/12 is unreadable"):
        restored = restore_run(cfg, run_dir)
    assert restored.generation == 9
    assert len(list((run_dir / "checkpoints").glob("unreadable-12-*"))) == 1  # kept, moved aside
    _train(run_dir, resume=True, **{"es.generations": 12, "checkpoint.every": 3, "logging.eval_every": 5})
    assert restore_run(cfg, run_dir).generation == 12
    assert deterministic(read_metrics(run_dir)) == deterministic(read_metrics(reference_run))


def test_resume_with_a_different_config_is_refused(reference_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference_run, run_dir)
    proc = _cli("train", "--resume", str(run_dir), "-o", "es.sigma=0.2")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "different config" in err and "Traceback" not in err


class _FaultyDispatcher(InProcessDispatcher):
    """The real in-process evaluation, with chosen members' losses turned into NaN."""

    def __init__(self, cfg, bad):
        super().__init__(cfg)
        self.bad = bad  # generation -> member indices

    def evaluate(self, population, generation):
        loss, acc = super().evaluate(population, generation)
        loss = loss.copy()
        loss[self.bad.get(generation, [])] = np.nan
        return loss, acc


def test_nonfinite_fitness_is_replaced_and_counted(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"es.generations": 3, "logging.eval_every": 0}))
    train(cfg, tmp_path, _FaultyDispatcher(cfg, {1: [2, 5]}), progress=False, log=lambda m: None)
    rows = read_metrics(tmp_path)
    assert [r["nonfinite"] for r in rows] == [0, 2, 0]
    assert all(np.isfinite(r["loss_mean"]) for r in rows)
    assert np.isfinite(np.asarray(restore_run(cfg, tmp_path).mean_la.w_h)).all()


def test_all_nonfinite_generation_stops_cleanly_naming_checkpoint(tmp_path):
    cfg = load_config(None, tiny_overrides(**{"es.generations": 5, "checkpoint.every": 1,
                                              "logging.eval_every": 0}))
    with pytest.raises(NonFiniteFitnessError, match=r"generation 2 .*checkpoints/2"):
        train(cfg, tmp_path, _FaultyDispatcher(cfg, {2: list(range(8))}), progress=False, log=lambda m: None)
    assert len(read_metrics(tmp_path)) == 2
    assert restore_run(cfg, tmp_path).generation == 2


def test_cli_end_to_end_plot_export_and_errors(reference_run, tmp_path):
    out = tmp_path / "la.npz"
    proc = _cli("export", str(reference_run), str(out))
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    with np.load(out, allow_pickle=False) as f:
        assert f["w_h"].shape == (16, 64) and json.loads(str(f["__config__"]))["model"]["state_size"] == 16
    proc = _cli("plot", str(reference_run), "--out", str(tmp_path / "c.png"))
    assert proc.wait(timeout=120) == 0 and (tmp_path / "c.png").stat().st_size > 10_000
    for args, fragment in [
        (["train", "configs/nope.yaml"], "config file configs/nope.yaml not found"),
        (["train", "configs/demo.yaml", "-o", "es.population=7"], "es.population: got 7"),
        (["train", "--resume", str(tmp_path / "missing")], "does not exist"),
        (["export", str(tmp_path), str(out)], "not a vsml-es run directory"),
        (["train", "configs/demo.yaml", "--address", "none", "--run-dir", str(tmp_path / "r"),
          "-o", f"es.init_from={tmp_path / 'c.png'}"], "not a readable .npz LA file"),
        (["train", "--resume", str(tmp_path)], "not a vsml-es run directory"),
        (["bench", "--population", "0"], "--population must be >= 1"),
    ]:
        proc = _cli(*args, cwd=Path(__file__).parent.parent)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (args, err)
        assert fragment in err and "Traceback" not in err, err


@pytest.mark.parametrize("strategy", ["pgpe", "snes", "cma_es", "sep_cma_es"])
def test_every_es_strategy_resumes_exactly(tmp_path, strategy):
    # open_es is resumed through the CLI after SIGKILL/SIGINT above and gradient in
    # test_gradient.py; here the other strategies: stop after 2 generations, resume to 4.
    extra = {"es.strategy": strategy, "es.generations": 4, "checkpoint.every": 2,
             "logging.eval_every": 0, "logging.tensorboard": False}
    cfg = load_config(None, tiny_overrides(**extra))
    dispatcher = InProcessDispatcher(cfg)  # compiled once; es.generations does not change it
    _train(tmp_path / "ref", dispatcher=dispatcher, **extra)
    _train(tmp_path / "run", dispatcher=dispatcher, **{**extra, "es.generations": 2})
    _train(tmp_path / "run", resume=True, dispatcher=dispatcher, **extra)
    assert deterministic(read_metrics(tmp_path / "run")) == deterministic(read_metrics(tmp_path / "ref"))
    ref, run = restore_run(cfg, tmp_path / "ref"), restore_run(cfg, tmp_path / "run")
    assert run.generation == 4
    for a, b in zip(jax.tree_util.tree_leaves(ref.es_state), jax.tree_util.tree_leaves(run.es_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
