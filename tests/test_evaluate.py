"""Meta-test (``meta_test``) and ``vsml-es evaluate RUN_DIR`` on a real run directory."""

from __future__ import annotations

import csv
import json

import jax
import numpy as np
import pytest

from vsml_es.cli import main
from vsml_es.config import load_config
from vsml_es.evaluate import MetaTestSet, episode_summary, meta_test
from vsml_es.model.network import make_vsml
from vsml_es.runs.run_dir import save_la, write_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory as training leaves it: config.yaml and learned_la.npz."""
    d = tmp_path_factory.mktemp("run")
    cfg = load_config(None, ["model.micro_ticks=1"])
    write_config(d, cfg)
    la = make_vsml(cfg.model).init_params(jax.random.PRNGKey(0))
    save_la(d / "learned_la.npz", la, cfg, 0)
    return d


def test_meta_test_is_deterministic_and_seeded():
    cfg = load_config(None, ["model.micro_ticks=1"])
    learner = make_vsml(cfg.model)
    la = learner.init_params(jax.random.PRNGKey(0))
    a = meta_test(learner, la, "digits", 3, 12)
    b = meta_test(learner, la, "digits", 3, 12)
    c = meta_test(learner, la, "digits", 3, 12, seed=5)
    assert a[0].shape == a[1].shape == (3, 12)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_episode_summary_windows():
    correct = np.zeros((2, 100))
    correct[:, 90:] = 1.0
    correct[1, :50] = 1.0
    s = episode_summary(correct)
    assert s["last10_mean"] == 1.0 and s["last10_std"] == 0.0
    assert s["first50"] == 0.5 and np.isclose(s["whole"], 0.35)
    assert np.isclose(s["second_half"], 0.2)  # steps 50..99: 10 of 50 right


def test_test_set_modifiers():
    assert MetaTestSet.parse("mnist_subset/14px/proj32") == MetaTestSet("mnist_subset", resize=14, proj_size=32)
    assert MetaTestSet.parse("digits/5-way").label == "digits/5-way"
    with pytest.raises(ValueError, match="modifier"):
        MetaTestSet.parse("digits/big")


def test_evaluate_writes_csv_png_json_tensorboard_and_table(run_dir, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # digits projected to 16 inputs: a size the LA never met in meta-training.
    rc = main(["evaluate", str(run_dir), "--datasets", "digits/proj16", "--steps", "30", "--tasks", "2",
               "--baselines", "sgd", "--name", "t"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "last 10%" in out and "digits/proj16" in out and "vsml" in out and "sgd" in out
    with open(run_dir / "eval" / "t.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["dataset", "method", "task", "step", "accuracy", "loss"]
    assert len(rows) == 2 * 2 * 30  # methods x tasks x steps
    assert {r["method"] for r in rows} == {"vsml", "sgd"}
    assert (run_dir / "eval" / "t.png").stat().st_size > 1000
    summary = json.loads((run_dir / "eval" / "t.json").read_text())
    sgd = next(r for r in summary if r["method"] == "sgd")
    assert sgd["learning_rate"] in sgd["lr_scores"] or str(sgd["learning_rate"]) in sgd["lr_scores"]
    assert sgd["paper_learning_rate"] == 0.01 and summary[0]["seen"] is True
    # The run was meta-trained with label permutations, so the meta-test permutes too.
    assert all(r["label_permutation"] is True for r in summary)
    assert main(["evaluate", str(run_dir), "--datasets", "digits/proj16", "--steps", "30", "--tasks", "2",
                 "--baselines", "sgd", "--name", "u", "--label-permutation", "off"]) == 0
    assert json.loads((run_dir / "eval" / "u.json").read_text())[0]["label_permutation"] is False
    with open(run_dir / "eval" / "u.csv") as f:
        unpermuted = list(csv.DictReader(f))
    assert [r["loss"] for r in unpermuted] != [r["loss"] for r in rows]  # other labels, other losses
    acc = EventAccumulator(str(run_dir)).Reload()
    assert "t/digits/proj16/vsml/online_accuracy" in acc.Tags()["scalars"]


def test_evaluate_errors_are_one_line(run_dir, tmp_path, capsys):
    assert main(["evaluate", str(run_dir), "--datasets", "nope", "--steps", "5"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["evaluate", str(empty), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert "learned_la.npz" in err and len(err.strip().splitlines()) == 1
