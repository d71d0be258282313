"""Typed run configuration: YAML file + ``key=value`` overrides, validated at load time.

Every key has a default; unknown keys and bad values raise :class:`ConfigError` with a
one-line message naming the key, the bad value and what is allowed, before any work starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key is unknown or has a value that is not allowed."""


STRATEGIES = ("open_es", "snes", "pgpe", "cma_es", "sep_cma_es", "gradient")
FITNESS_SHAPING = ("none", "centered_rank", "z_score")
ANTITHETIC_STRATEGIES = ("open_es", "pgpe")


@dataclass(frozen=True)
class TaskConfig:
    """Which datasets episodes are drawn from and how (VSML.md §3)."""

    datasets: list = field(default_factory=lambda: ["digits"])
    episode_length: int = 200
    batch_size: int = 1
    label_permutation: bool = True
    # Task distribution (vsml_es/tasks/sampling.py): a pair's task draws its dataset with
    # these weights (empty = equal), its number of classes from class_subsets (k-way,
    # relabelled; empty = all), its image side from resize (empty = native), and is
    # randomly projected to rand_proj_size inputs (0 = as many as it has) with
    # probability rand_proj (the paper's rand_proj runs: 0.5).
    dataset_weights: list = field(default_factory=list)
    class_subsets: list = field(default_factory=list)
    resize: list = field(default_factory=list)
    rand_proj: float = 0.0
    rand_proj_size: int = 0
    # The meta-objective of one episode: the mean over these horizons h of the mean loss of
    # the first h steps (empty = the whole episode, the paper's loss_type mean). [50, 500]
    # on 500-step episodes weighs the first 50 steps as much as all 500; a horizon listed
    # twice counts twice (docs/meta_training.md).
    loss_horizons: list = field(default_factory=list)


@dataclass(frozen=True)
class ModelConfig:
    """The VSML network (VSML.md §2). Defaults are the paper's (configs/default.yaml)."""

    hidden_layers: list = field(default_factory=list)
    message_size: int = 8
    state_size: int = 16
    micro_ticks: int = 2
    backward_pass: bool = False
    feed_label: bool = False
    init_rand_proportion: float = 0.5
    tanh_bound: float = 100.0
    forget_bias: float = 5.0
    input_bias: float = -5.0
    output_channel: int = 1


@dataclass(frozen=True)
class ESConfig:
    """The meta-optimiser. ``population`` counts members (episodes), so the paper's
    1024 antithetic pairs are ``population: 2048``."""

    strategy: str = "open_es"
    population: int = 32
    sigma: float = 0.05
    learning_rate: float = 0.025
    generations: int = 500
    episodes_per_member: int = 1
    fitness_shaping: str = "none"
    # ES tasks: false = one task per antithetic pair (the pair's two members share it);
    # true = one task for the whole generation (docs/meta_training.md compares them).
    common_task: bool = False
    # Start the search (ES mean, or the gradient meta-optimizer's LA) at this LA: a run
    # directory (its learned_la.npz) or an .npz written by `vsml-es export`/`clone`. "" = random.
    init_from: str = ""
    # strategy: gradient (VSML.md §4): population = episodes per step, learning_rate = Adam's.
    grad_clip: float = 25.0  # global-norm clip of the meta-gradient (0 disables)
    truncation: int = 0  # truncated BPTT: cut gradients through the state every k steps (0 = none)


@dataclass(frozen=True)
class DistributedConfig:
    address: str = "local"
    workers: Any = None
    # Members evaluated per vmap inside a worker (lax.map over groups); null: automatic
    # (groups of 4 on CPU for states over 256 KB, else one vmap). Changes only float rounding.
    members_per_vmap: Any = None


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 10
    keep: int = 3


@dataclass(frozen=True)
class LoggingConfig:
    eval_every: int = 25
    tensorboard: bool = True
    eval_tasks: int = 8
    eval_episode_length: int = 0  # 0: same as task.episode_length


@dataclass(frozen=True)
class Config:
    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    es: ESConfig = field(default_factory=ESConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# Sections a resumed run may change without changing what it computes.
RESUMABLE_SECTIONS = ("distributed", "checkpoint", "logging")
RESUMABLE_KEYS = ("es.generations",)


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def config_hash(cfg: Config) -> str:
    """Hash of everything that determines the run's numbers (not workers, logging, length)."""
    d = to_dict(cfg)
    for s in RESUMABLE_SECTIONS:
        d.pop(s)
    for k in RESUMABLE_KEYS:
        sec, key = k.split(".")
        d[sec].pop(key)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(path: str, value: Any, tp) -> Any:
    """Check ``value`` against the dataclass field type ``tp``; ints are accepted for floats."""
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {path}: got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {path}: got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {path}: got {value!r}, expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {path}: got {value!r}, expected a string")
        return value
    if tp is list:
        if not isinstance(value, list):
            raise ConfigError(f"config key {path}: got {value!r}, expected a list like [a, b]")
        return list(value)
    raise TypeError(f"unsupported config type {_type_name(tp)} at {path}")


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section {prefix or 'top level'}: got {data!r}, expected a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = prefix.rstrip(".") or "top level"
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]} (in {where}); allowed keys: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name] if data[name] is not None else {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(prefix + name, data[name], tp)
    return cls(**kwargs)


def _check(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"config key {key}: got {value!r}, allowed: {allowed}")


def validate(cfg: Config) -> Config:
    """Range and consistency checks beyond types. Returns ``cfg`` unchanged."""
    from vsml_es.tasks.datasets import DATASETS  # local: the registry imports config-free code

    t, m, e = cfg.task, cfg.model, cfg.es
    _check(len(t.datasets) > 0, "task.datasets", t.datasets, "a non-empty list")
    for name in t.datasets:
        _check(name in DATASETS, "task.datasets", name, ", ".join(sorted(DATASETS)))
    _check(t.episode_length >= 1, "task.episode_length", t.episode_length, "an integer >= 1")
    _check(t.batch_size >= 1, "task.batch_size", t.batch_size, "an integer >= 1")
    _check(not t.dataset_weights or (len(t.dataset_weights) == len(t.datasets) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in t.dataset_weights)
        and sum(t.dataset_weights) > 0), "task.dataset_weights", t.dataset_weights,
        f"[] (equal) or {len(t.datasets)} numbers >= 0, one per task.datasets entry, not all 0")
    _check(all(isinstance(k, int) and not isinstance(k, bool) and k >= 2 for k in t.class_subsets),
           "task.class_subsets", t.class_subsets, "[] (all classes) or integers >= 2, e.g. [3, 4, 6, 7]")
    _check(all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in t.resize),
           "task.resize", t.resize, "[] (native size) or side lengths >= 1, e.g. [14, 28, 32]")
    _check(0.0 <= t.rand_proj <= 1.0, "task.rand_proj", t.rand_proj, "a probability in [0, 1]")
    _check(t.rand_proj_size >= 0, "task.rand_proj_size", t.rand_proj_size,
           "an integer >= 0 (0: project to as many inputs as the task has)")
    _check(all(isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= t.episode_length
               for h in t.loss_horizons), "task.loss_horizons", t.loss_horizons,
           f"[] (the whole episode) or step counts in 1..task.episode_length ({t.episode_length}), "
           "e.g. [50, 500]")
    _check(all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in m.hidden_layers),
           "model.hidden_layers", m.hidden_layers, "a list of positive integers, e.g. [32]")
    _check(m.message_size >= 2, "model.message_size", m.message_size,
           "an integer >= 2 (channel 0 carries the input, channel 1 the label)")
    _check(m.state_size >= 1, "model.state_size", m.state_size, "an integer >= 1")
    _check(m.micro_ticks >= 1, "model.micro_ticks", m.micro_ticks, "an integer >= 1")
    _check(0.0 <= m.init_rand_proportion <= 1.0, "model.init_rand_proportion",
           m.init_rand_proportion, "a number in [0, 1]")
    _check(m.tanh_bound >= 0.0, "model.tanh_bound", m.tanh_bound, "a number >= 0 (0 disables the bound)")
    _check(0 <= m.output_channel < m.message_size, "model.output_channel", m.output_channel,
           f"an integer in [0, model.message_size={m.message_size})")
    _check(e.strategy in STRATEGIES, "es.strategy", e.strategy, ", ".join(STRATEGIES))
    _check(e.population >= 2 and e.population % 2 == 0, "es.population", e.population,
           "an even integer >= 2 (members come in antithetic pairs)")
    _check(e.sigma > 0, "es.sigma", e.sigma, "a number > 0")
    _check(e.learning_rate > 0, "es.learning_rate", e.learning_rate, "a number > 0")
    _check(e.generations >= 1, "es.generations", e.generations, "an integer >= 1")
    _check(e.episodes_per_member >= 1, "es.episodes_per_member", e.episodes_per_member, "an integer >= 1")
    _check(e.fitness_shaping in FITNESS_SHAPING, "es.fitness_shaping", e.fitness_shaping,
           ", ".join(FITNESS_SHAPING))
    _check(isinstance(e.init_from, str), "es.init_from", e.init_from, "a run directory or .npz path")
    # Whether the file exists is checked where a new run loads it (es.trainer.setup), so a
    # run directory's config still reads (evaluate, export, resume) after that file moved.
    _check(e.grad_clip >= 0, "es.grad_clip", e.grad_clip, "a number >= 0 (0 disables clipping)")
    _check(e.truncation >= 0, "es.truncation", e.truncation, "an integer >= 0 (0: full backprop)")
    _check(not (e.common_task and e.strategy == "gradient"), "es.common_task", e.common_task,
           "false with es.strategy: gradient (its episodes are meant to differ)")
    a = cfg.distributed.address
    _check(a in ("local", "none", "auto") or a.startswith("ray://") or ":" in a,
           "distributed.address", a, "local, none, auto, ray://host:port or host:port")
    w = cfg.distributed.workers
    _check(w is None or (isinstance(w, int) and not isinstance(w, bool) and w >= 1),
           "distributed.workers", w, "null (one per core/GPU) or an integer >= 1")
    mpv = cfg.distributed.members_per_vmap
    _check(mpv is None or (isinstance(mpv, int) and not isinstance(mpv, bool) and mpv >= 0),
           "distributed.members_per_vmap", mpv, "null (automatic), 0 (one vmap) or an integer >= 1")
    _check(cfg.checkpoint.every >= 1, "checkpoint.every", cfg.checkpoint.every, "an integer >= 1")
    _check(cfg.checkpoint.keep >= 2, "checkpoint.keep", cfg.checkpoint.keep,
           "an integer >= 2 (one fallback if the latest is corrupt)")
    _check(cfg.logging.eval_every >= 0, "logging.eval_every", cfg.logging.eval_every,
           "an integer >= 0 (0 disables periodic evaluation)")
    _check(cfg.logging.eval_tasks >= 1, "logging.eval_tasks", cfg.logging.eval_tasks, "an integer >= 1")
    _check(cfg.logging.eval_episode_length >= 0, "logging.eval_episode_length",
           cfg.logging.eval_episode_length, "an integer >= 0")
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """``'es.population=64'`` -> (['es', 'population'], 64); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. es.population=64")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key; expected key=value, e.g. es.population=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err.problem})") from None
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def from_dict(data: dict) -> Config:
    return validate(_build(Config, data or {}, ""))


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None), apply overrides, validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} not found; pass a YAML file such as configs/demo.yaml")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {p}{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    return from_dict(apply_overrides(data, list(overrides)))
