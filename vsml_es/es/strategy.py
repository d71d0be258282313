"""Building the evosax strategy named in the config, and the member order.

``open_es`` is the paper's ES (VSML.md §4): antithetic pairs, no fitness shaping, Adam
(lr 0.025, b1 0.9, b2 0.999), fixed sigma 0.05. With identity shaping evosax's OpenES
gradient ``sum_j f_j z_j / (P sigma)`` equals the paper's
``(1/N) sum_i (L(t+s e_i) - L(t-s e_i)) / (2 s) e_i`` for P = 2N members.

Member order: evosax puts antithetic partners in two halves ``[+z_1..+z_N, -z_1..-z_N]``;
vsml-es interleaves them so members ``2i`` and ``2i+1`` form pair ``i`` and share a task
(DESIGN.md): ``population_ours = population_evosax[member_order]``.
"""

from __future__ import annotations

import numpy as np
import optax
from evosax.algorithms import CMA_ES, PGPE, SNES, Open_ES, Sep_CMA_ES
from evosax.core.fitness_shaping import (
    centered_rank_fitness_shaping_fn,
    identity_fitness_shaping_fn,
    standardize_fitness_shaping_fn,
)

from vsml_es.config import ANTITHETIC_STRATEGIES, ESConfig

_SHAPING = {
    "none": identity_fitness_shaping_fn,
    "centered_rank": centered_rank_fitness_shaping_fn,
    "z_score": standardize_fitness_shaping_fn,
}


def make_strategy(cfg: ESConfig, template):
    """Returns (strategy, strategy_params) for the LA pytree ``template``."""
    shaping = _SHAPING[cfg.fitness_shaping]
    adam = optax.adam(cfg.learning_rate, b1=0.9, b2=0.999)
    if cfg.strategy == "open_es":
        strategy = Open_ES(cfg.population, template, use_antithetic_sampling=True, optimizer=adam,
                           std_schedule=optax.constant_schedule(cfg.sigma), fitness_shaping_fn=shaping)
    elif cfg.strategy == "pgpe":
        strategy = PGPE(cfg.population, template, optimizer=adam, fitness_shaping_fn=shaping)
    elif cfg.strategy == "snes":
        # SNES's natural-gradient mean step uses lr 1 and its own rank weights.
        strategy = SNES(cfg.population, template)
    elif cfg.strategy == "cma_es":
        strategy = CMA_ES(cfg.population, template)
    elif cfg.strategy == "sep_cma_es":
        strategy = Sep_CMA_ES(cfg.population, template)
    elif cfg.strategy == "gradient":
        from vsml_es.es.gradient import GradientStrategy  # not ES: exact meta-gradients + Adam

        strategy = GradientStrategy(cfg, template)
    else:  # validated in config.py
        raise ValueError(cfg.strategy)
    params = strategy.default_params
    if hasattr(params, "std_init"):
        params = params.replace(std_init=cfg.sigma)
    return strategy, params


def member_order(cfg: ESConfig) -> np.ndarray:
    """Index array mapping vsml-es member i to the strategy's population index."""
    p = cfg.population
    if cfg.strategy in ANTITHETIC_STRATEGIES:
        return np.stack([np.arange(p // 2), np.arange(p // 2) + p // 2], axis=1).reshape(-1)
    return np.arange(p)


def init_la_file(source: str):
    """The file ``es.init_from`` names: ``source`` itself, or a run directory's learned_la.npz."""
    from pathlib import Path

    from vsml_es.runs.run_dir import LA_FILE

    path = Path(source)
    return path / LA_FILE if path.is_dir() else path


def load_init_la(source: str, template):
    """``es.init_from``: the LA in ``source`` (an .npz LA file, or a run directory's
    learned_la.npz) as jax arrays shaped like ``template``; a shape mismatch is a config error."""
    import jax
    import jax.numpy as jnp

    from vsml_es.config import ConfigError
    from vsml_es.runs.run_dir import load_la

    path = init_la_file(source)
    if not path.is_file():
        raise ConfigError(f"config key es.init_from: got {source!r}, allowed: an existing .npz LA file "
                          "or a run directory holding learned_la.npz")
    la = load_la(path)
    for name, want, got in zip(template._fields, template, la):
        if tuple(want.shape) != tuple(got.shape):
            raise ConfigError(f"config key es.init_from: {path} holds {name} of shape {tuple(got.shape)}, "
                              f"but this model needs {tuple(want.shape)} (model.message_size/state_size differ)")
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), type(template)(*la))
