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
    with pytest.raises(ConfigError, match="es.init_from"):
        load_config(None, tiny_overrides(**{"es.init_from": str(tmp_path / "missing.npz")}))
    _given_la(tmp_path)
    cfg = load_config(None, tiny_overrides(**{"es.init_from": str(tmp_path / "given.npz"),
                                               "model.state_size": 8}))
    with pytest.raises(ConfigError, match="es.init_from"):
        setup(cfg)
