"""Task distributions (k-way subsets, resize, projection, dataset mixtures) and the
population evaluator's determinism contract when tasks differ in shape."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml_es.config import ConfigError, load_config
from vsml_es.es.evaluator import PopulationEvaluator, pair_variants
from vsml_es.tasks.datasets import load_dataset
from vsml_es.tasks.sampling import TaskVariant, sample_task, sample_variant_task, task_variants


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@functools.lru_cache(maxsize=None)
def _sampler(variant, steps, batch, permute):
    ds = load_dataset("digits")
    return jax.jit(lambda k: sample_variant_task(k, jnp.asarray(ds.train_x), jnp.asarray(ds.train_y),
                                                 ds.n_classes, ds.image_shape, variant, steps, batch, permute))


def _sample(ds, variant, key=0, steps=60, batch=2, permute=True):
    xs, ys = _sampler(variant, steps, batch, permute)(jax.random.PRNGKey(key))
    return np.asarray(xs), np.asarray(ys)


def test_plain_variant_is_the_plain_stream(digits):
    key = jax.random.PRNGKey(3)
    a = sample_task(key, jnp.asarray(digits.train_x), jnp.asarray(digits.train_y), 10, 20, 1, True)
    b = sample_variant_task(key, jnp.asarray(digits.train_x), jnp.asarray(digits.train_y), 10, (8, 8, 1),
                            TaskVariant("digits", 10), 20, 1, True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_k_way_task_uses_k_classes_relabelled_from_zero(digits):
    xs, ys = _sample(digits, TaskVariant("digits", 3))
    assert sorted(np.unique(ys)) == [0, 1, 2]
    # Every example comes from one dataset class, consistently mapped to one task label.
    rows = {tuple(r): c for r, c in zip(digits.train_x.round(5), digits.train_y)}
    pairs = {(rows[tuple(x.round(5))], int(y)) for x, y in zip(xs.reshape(-1, 64), ys.reshape(-1))}
    assert len({c for c, _ in pairs}) == 3 and len(pairs) == 3


def test_k_way_without_permutation_keeps_class_order(digits):
    xs, ys = _sample(digits, TaskVariant("digits", 4), key=5, permute=False)
    rows = {tuple(r): c for r, c in zip(digits.train_x.round(5), digits.train_y)}
    pairs = sorted({(rows[tuple(x.round(5))], int(y)) for x, y in zip(xs.reshape(-1, 64), ys.reshape(-1))})
    assert [y for _, y in pairs] == [0, 1, 2, 3]


def test_resize_and_projection_change_the_input_size(digits):
    xs, _ = _sample(digits, TaskVariant("digits", 10, resize=14))
    assert xs.shape == (60, 2, 196)
    xs, _ = _sample(digits, TaskVariant("digits", 10, proj_size=32))
    assert xs.shape == (60, 2, 32)
    assert 0.5 < xs.std() < 2.0  # Glorot-scaled projection keeps the inputs' scale
    a, _ = _sample(digits, TaskVariant("digits", 10, proj_size=32), key=1)
    b, _ = _sample(digits, TaskVariant("digits", 10, proj_size=32), key=2)
    assert not np.allclose(a, b)  # a fresh projection (and stream) per task key


def test_task_variants_enumerate_the_distribution():
    variants, probs = task_variants(["digits", "sum"], {"digits": 10, "sum": 2}, [3, 1], [3, 10], [], 0.5, 0,
                                    {"digits": (8, 8, 1), "sum": (28, 28, 1)})
    table = {v: p for v, p in zip(variants, probs)}
    assert np.isclose(sum(probs), 1.0)
    assert np.isclose(table[TaskVariant("digits", 3, 0, 64)], 0.75 * 0.5 * 0.5)
    assert np.isclose(table[TaskVariant("sum", 2, 0, 0)], 0.25 * 0.5)  # k capped at the 2 classes
    assert TaskVariant("sum", 3) not in table


def test_pair_variants_depend_only_on_seed_generation_pair():
    probs = np.array([0.2, 0.3, 0.5])
    a = pair_variants(0, 7, np.arange(200), probs)
    b = np.concatenate([pair_variants(0, 7, np.arange(200)[i:i + 13], probs) for i in range(0, 200, 13)])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, pair_variants(0, 8, np.arange(200), probs))
    assert np.allclose(np.bincount(a, minlength=3) / 200, probs, atol=0.1)


def test_config_rejects_bad_task_distribution_keys():
    with pytest.raises(ConfigError, match="task.dataset_weights"):
        load_config(None, ["task.dataset_weights=[1, 2]"])
    with pytest.raises(ConfigError, match="task.class_subsets"):
        load_config(None, ["task.class_subsets=[1]"])
    with pytest.raises(ConfigError, match="task.rand_proj"):
        load_config(None, ["task.rand_proj=1.5"])


def test_mixed_shapes_evaluator_is_chunk_invariant_and_pairs_share_tasks():
    cfg = load_config(None, ["task.episode_length=6", "task.class_subsets=[3]", "task.resize=[4, 6]",
                             "es.population=8", "seed=4", "model.micro_ticks=1"])
    ev = PopulationEvaluator(cfg)
    ds = load_dataset("digits")
    assert len(ev.variants) == 2 and ev.n_in is None  # 16 or 36 inputs
    n = 8
    base = ev.learner.init_params(jax.random.PRNGKey(0))
    # Antithetic pairs get identical params here, so partners must get identical fitness.
    noise = jax.tree_util.tree_map(
        lambda a: 0.05 * jax.random.normal(jax.random.PRNGKey(1), (n // 2, *a.shape)), base)
    params = jax.tree_util.tree_map(lambda a, e: jnp.repeat(a[None] + e, 2, axis=0), base, noise)
    ids = np.arange(n)
    # Two different chunkings of the same size (so the test compiles each variant once):
    # a member's fitness must not depend on which other members share its chunk.
    a_parts = [np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7])]
    b_parts = [np.array([6, 7, 0, 1]), np.array([2, 3, 4, 5])]

    def run(parts):
        loss, acc = np.zeros(n), np.zeros(n)
        for sel in parts:
            loss[sel], acc[sel] = ev(jax.tree_util.tree_map(lambda a: a[sel], params), 3, ids[sel])
        return loss, acc

    (la, aa), (lb, ab) = run(a_parts), run(b_parts)
    assert len({v.n_in(ds.image_shape) for v in ev.member_variants(3, ids)}) == 2  # shapes really differ
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    np.testing.assert_allclose(aa, ab, rtol=1e-5)
    np.testing.assert_allclose(la[0::2], la[1::2], rtol=1e-6)  # partners share the task
    assert np.all(np.isfinite(la)) and not np.allclose(la[0], la[2:])


@pytest.mark.parametrize("common", [False, True])
def test_common_task_gives_every_member_of_a_generation_the_same_task(common):
    cfg = load_config(None, ["task.episode_length=6", "es.population=8", "model.micro_ticks=1",
                             f"es.common_task={str(common).lower()}"])
    ev = PopulationEvaluator(cfg)
    la = ev.learner.init_params(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (8, *a.shape)), la)  # one LA, 8 times
    loss, _ = ev(params, 3, np.arange(8))
    assert loss[0] == loss[1]  # antithetic partners always share their task
    assert (len(set(loss.tolist())) == 1) == common  # other pairs: the same task only if common
    loss_next, _ = ev(params, 4, np.arange(8))
    assert loss_next[0] != loss[0]  # a new generation draws new tasks either way


def test_common_task_is_refused_for_gradient_meta_training():
    with pytest.raises(ConfigError, match="es.common_task"):
        load_config(None, ["es.strategy=gradient", "es.common_task=true"])
