"""`vsml-es bench`: the fast VSML step agrees with the textbook one, and the JSON is complete."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np

from vsml_es import xla_options
from vsml_es.bench import (episode_losses, episode_trace, load_textbook, map_members, population,
                           run_bench, with_dtype)
from vsml_es.cli import main
from vsml_es.config import ModelConfig
from vsml_es.model.dense import init_dense_state
from vsml_es.model.dense import dense_tick as fast_tick
from vsml_es.model.network import make_vsml
from vsml_es.xla_options import accepted, compiler_options, host_has_avx512, wanted_options

TINY = dict(population_size=4, steps=6, inputs=7, outputs=3, repeats=1)


def test_fast_tick_equals_textbook_tick_far_from_init():
    cfg = ModelConfig(forget_bias=0.0, input_bias=0.0, micro_ticks=3)
    textbook = load_textbook()
    la = make_vsml(cfg).init_params(jax.random.PRNGKey(0))
    la = jax.tree_util.tree_map(lambda x: 3.0 * x + 0.3, la)  # every term matters
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    state = init_dense_state(k1, 6, 4, 8, 16, 0.5)
    state = state._replace(fwd_in=jax.random.normal(k2, (6, 8)), bwd_in=jax.random.normal(k3, (4, 8)))
    got = fast_tick(la, state, cfg.micro_ticks, cfg.forget_bias, cfg.input_bias)
    want = textbook.dense_tick(cfg, la, state)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, rtol=0)


def test_bench_reports_equal_numerics_and_all_keys():
    r = run_bench(**TINY, members_per_vmap=2)
    assert r["ok"] and max(r["max_abs_diff"].values()) <= 1e-4
    assert r["compiler_options"] == xla_options.current_options()
    for key in ("ratio", "ratio_min", "ratio_max", "cpu_ratio", "population", "steps", "shapes",
                "device", "jax_version", "members_per_vmap", "synapses"):
        assert key in r, key
    for impl in ("fast", "textbook"):
        assert r[impl]["member_steps_per_s"] > 0 and r[impl]["compile_s"] > 0
        assert len(r[impl]["seconds"]) == TINY["repeats"]
    assert r["shapes"]["layers"] == [[7, 3]] and r["synapses"] == 21
    json.dumps(r)  # plain JSON types only


def test_member_grouping_changes_results_only_by_rounding():
    f = lambda x: (x ** 2).sum()
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    full = map_members(f, 6, 0)(x)
    for group in (1, 2, 4):  # 4 falls back to the largest divisor of 6 below it: 3
        np.testing.assert_allclose(np.asarray(map_members(f, 6, group)(x)), np.asarray(full), rtol=1e-6)


def test_cli_bench_prints_one_json_line(capsys):
    rc = main(["bench", "--population", "2", "--steps", "3", "--inputs", "5", "--outputs", "2",
               "--repeats", "1"])
    out = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(out) == 1
    r = json.loads(out[0])
    assert r["ok"] and r["population"] == 2 and r["shapes"]["layers"] == [[5, 2]]


def test_xla_options_are_cpu_only_and_drop_what_jaxlib_does_not_know():
    assert wanted_options("gpu", avx512=True) == {} and compiler_options("gpu") == {}
    assert "xla_cpu_prefer_vector_width" in wanted_options("cpu", avx512=True)
    assert "xla_cpu_prefer_vector_width" not in wanted_options("cpu", avx512=False)
    assert accepted({"xla_cpu_no_such_option_here": 1}) == {}
    assert compiler_options("cpu").items() <= wanted_options("cpu", host_has_avx512()).items()


def test_xla_options_off_switch(monkeypatch):
    monkeypatch.setenv(xla_options.OFF_VARIABLE, "off")
    assert xla_options.current_options() == {}
    monkeypatch.delenv(xla_options.OFF_VARIABLE)
    assert xla_options.current_options() == compiler_options(jax.default_backend())


def test_episode_under_the_project_xla_options_equals_plain_jit():
    """The options change code generation only: a 2-layer episode's losses agree to rounding."""
    cfg = ModelConfig(hidden_layers=[5])
    learner = make_vsml(cfg)
    params = population(learner, jax.random.PRNGKey(0), 3, sigma=0.3)
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    episode = jax.vmap(functools.partial(episode_losses, learner, 20, 9, 4))
    plain = jax.jit(episode)(params, keys)
    tuned = xla_options.jit(episode)(params, keys)
    assert np.isfinite(np.asarray(plain)).all()
    np.testing.assert_allclose(np.asarray(tuned), np.asarray(plain), atol=1e-5, rtol=0)


def test_bfloat16_option_runs_in_bfloat16_and_stays_near_float32():
    """The bf16 option (meant for GPUs) keeps states in bf16 through an episode of a
    2-layer network, agrees with the textbook at bf16 rounding and with float32 losses."""
    r = run_bench(**TINY, hidden_layers=(5,), dtype="bfloat16")
    assert r["ok"] and r["tolerance"] == 5e-2
    assert r["vs_float32"]["max_abs_loss_diff"] < 0.05
    cfg = ModelConfig(hidden_layers=[5])
    learner = with_dtype(make_vsml(cfg), jnp.bfloat16)
    params = learner.init_params(jax.random.PRNGKey(0))
    logits, state = episode_trace(learner, 6, 7, 3, params, jax.random.PRNGKey(1))
    assert logits.dtype == jnp.float32
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state)} == {jnp.dtype(jnp.bfloat16)}
