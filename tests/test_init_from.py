"""es.init_from: the search starts at the given LA (an .npz or a run directory)."""

import jax
import numpy as np
import pytest

from conftest import tiny_overrides
from vsml_es.config import ConfigError, load_config
from vsml_es.es.trainer import initial_es_state, setup
from vsml_es.runs.run_dir import LA_FILE, save_la


def _given_la(tmp_path):
    cfg = load_config(None, tiny_overrides())
    la = setup(cfg).learner.init_params(jax.random.PRNGKey(123))
    la = jax.tree_util.tree_map(lambda a: a + 0.5, la)
    save_la(tmp_path / "given.npz", la, cfg, 7)
    (tmp_path / "run").mkdir()
    save_la(tmp_path / "run" / LA_FILE, la, cfg, 7)
    return la


@pytest.mark.parametrize("strategy", ["open_es", "snes", "gradient"])
@pytest.mark.parametrize("source", ["given.npz", "run"])
def test_search_starts_at_the_given_la(tmp_path, strategy, source):
    la = _given_la(tmp_path)
    cfg = load_config(None, tiny_overrides(**{"es.strategy": strategy,
                                               "es.init_from": str(tmp_path / source)}))
    s = setup(cfg)
    mean = s.strategy.get_mean(initial_es_state(s))
    for want, got in zip(la, mean):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    random_start = setup(load_config(None, tiny_overrides(**{"es.strategy": strategy})))
    assert not np.allclose(np.asarray(random_start.initial_la.w_h), np.asarray(la.w_h))


def test_init_from_errors_name_the_key(tmp_path):
    missing = load_config(None, tiny_overrides(**{"es.init_from": str(tmp_path / "missing.npz")}))
    with pytest.raises(ConfigError, match="es.init_from: got .*missing.npz.*allowed: an existing .npz"):
        setup(missing)  # a new run needs the file
    assert setup(missing, new_run=False).initial_la is not None  # a restore only needs the shape
    _given_la(tmp_path)
    cfg = load_config(None, tiny_overrides(**{"es.init_from": str(tmp_path / "given.npz"),
                                               "model.state_size": 8}))
    with pytest.raises(ConfigError, match="es.init_from"):
        setup(cfg)


def test_run_started_from_a_relative_init_file_still_resumes_and_exports_after_it_moved(tmp_path, monkeypatch):
    from pathlib import Path

    from vsml_es.es.dispatch import InProcessDispatcher
    from vsml_es.es.trainer import restore_run, summarize, train
    from vsml_es.runs.run_dir import export_la, load_la, read_config

    _given_la(tmp_path)
    monkeypatch.chdir(tmp_path)  # es.init_from is relative to where the run was started
    cfg = load_config(None, tiny_overrides(**{"es.init_from": "given.npz", "es.generations": 2}))
    train(cfg, Path("run2"), InProcessDispatcher(cfg), progress=False, log=lambda m: None)
    table = []
    summarize(cfg, Path("run2"), log=table.append)  # the --summary table: initial vs final LA
    assert any(line.strip().startswith("initial LA") for line in table)
    assert any(line.strip().startswith("final LA") for line in table)
    (tmp_path / "given.npz").unlink()
    monkeypatch.chdir("/")
    run = tmp_path / "run2"
    assert read_config(run).es.init_from == "given.npz"  # evaluate / export read it from anywhere
    export_la(run, tmp_path / "out.npz")
    before = restore_run(read_config(run), run).mean_la
    for want, got in zip(before, load_la(tmp_path / "out.npz")):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    cfg4 = read_config(run, ["es.generations=4"])
    train(cfg4, run, InProcessDispatcher(cfg4), resume=True, progress=False, log=lambda m: None)
    assert restore_run(cfg4, run).generation == 4
    table = []
    summarize(cfg4, run, log=table.append)  # the initial LA is gone: only the final row
    assert not any(line.strip().startswith("initial LA") for line in table)
    assert any(line.strip().startswith("final LA") for line in table)
