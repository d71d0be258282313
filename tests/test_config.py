"""Config loading: defaults, overrides, and one-line errors that name key, value and what is allowed."""

from pathlib import Path

import pytest

from vsml_es.config import Config, ConfigError, config_hash, load_config


def test_defaults_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("es: {population: 16}\nmodel: {hidden_layers: [32]}\n")
    cfg = load_config(p, ["es.sigma=0.1", "task.datasets=[digits]", "seed=3"])
    assert cfg.es.population == 16 and cfg.es.sigma == 0.1 and cfg.seed == 3
    assert cfg.model.hidden_layers == [32] and cfg.model.message_size == 8
    assert isinstance(cfg, Config)


@pytest.mark.parametrize("override, fragment", [
    ("es.populaton=8", "unknown config key es.populaton"),
    ("es.population=7", "es.population: got 7, allowed: an even integer"),
    ("es.strategy=adam", "es.strategy: got 'adam', allowed: open_es, snes"),
    ("task.datasets=[imagenet]", "task.datasets: got 'imagenet', allowed:"),
    ("model.micro_ticks=two", "model.micro_ticks: got 'two', expected an integer"),
    ("model.output_channel=8", "model.output_channel: got 8"),
    ("checkpoint.keep=1", "checkpoint.keep: got 1"),
    ("es.sigma=-1", "es.sigma: got -1.0, allowed: a number > 0"),
    ("nosuchsection.x=1", "unknown config key nosuchsection"),
    ("es.population", "expected key=value"),
    ("task.loss_horizons=[50,900]", "task.loss_horizons: got [50, 900], allowed: [] (the whole episode)"),
])
def test_bad_values_are_rejected_with_a_named_key(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("es: {population: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_hash_ignores_what_may_change_on_resume():
    base = load_config(None)
    assert config_hash(base) == config_hash(load_config(None, ["distributed.workers=4", "es.generations=9",
                                                              "logging.eval_every=0"]))
    assert config_hash(base) != config_hash(load_config(None, ["es.sigma=0.1"]))


@pytest.mark.parametrize("path", sorted((Path(__file__).parent.parent / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.es.population % 2 == 0 and cfg.task.episode_length >= 1
