"""RayDispatcher on a real local Ray instance (loopback): same fitness as in-process for any
worker count and chunking, recovery from a worker killed mid-generation, a clear error when
every worker is gone. (Shutdown leaving no Ray process, and loopback binding, are checked
end to end through the CLI in test_ray_cli.py.)"""

import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vsml_es.config import load_config
from vsml_es.es.dispatch import InProcessDispatcher
from workers.pool import RayDispatcher, WorkersLostError, bind_loopback

TINY = ["es.population=8", "task.episode_length=20"]
GENERATION = 3


def make_population(evaluator, n, seed=1):
    template = evaluator.learner.init_params(jax.random.PRNGKey(0))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed), len(jax.tree_util.tree_leaves(template))))
    return jax.tree_util.tree_map(
        lambda x: x[None] + 0.05 * jax.random.normal(next(keys), (n,) + x.shape), template)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    bind_loopback()
    ray.init(address="local", num_cpus=3, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY)


@pytest.fixture(scope="module")
def in_process(cfg):
    return InProcessDispatcher(cfg)


@pytest.fixture(scope="module")
def population(in_process):
    return make_population(in_process.evaluator, 8)


@pytest.fixture(scope="module")
def reference(in_process, population):
    return in_process.evaluate(population, GENERATION)


@pytest.fixture(scope="module")
def two_workers(ray_session, cfg):
    d = RayDispatcher(cfg, workers=2)
    yield d
    d.close()


def test_fitness_is_the_same_for_one_and_two_workers_and_in_process(
        ray_session, cfg, two_workers, population, reference):
    loss, acc = two_workers.evaluate(population, GENERATION)
    assert two_workers.workers == 2 and two_workers.stats["chunks"] == 2
    np.testing.assert_allclose(loss, reference[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(acc, reference[1], atol=1e-6, rtol=0)
    # One worker, chunks of 3: three chunks (the last padded with a copy of member 7).
    with RayDispatcher(cfg, workers=1, chunk_size=3) as one:
        loss1, acc1 = one.evaluate(population, GENERATION)
        assert one.workers == 1 and one.stats["chunks"] == 3
    np.testing.assert_allclose(loss1, reference[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(acc1, reference[1], atol=1e-6, rtol=0)
    assert ray_session.is_initialized(), "a dispatcher must not shut down a Ray session it did not start"


def test_stats_report_bytes_retries_and_wait(two_workers, population):
    two_workers.evaluate(population, GENERATION)
    s = two_workers.stats
    assert s["bytes_sent"] == 8 * (2384 * 4 + 8)  # float32 params + int64 ids, no retries
    assert s["bytes_received"] == 8 * 2 * 4 and s["retries"] == 0
    assert 0.0 <= s["wait_slowest_seconds"] < 60


def test_worker_killed_mid_generation_gives_the_clean_result(two_workers, population):
    # 50 chunks of 4 so the generation lasts long enough to kill a worker inside it.
    big = jax.tree_util.tree_map(lambda x: jnp.concatenate([x] * 25), population)
    clean = two_workers.evaluate(big, GENERATION)
    assert two_workers.stats["retries"] == 0
    out = {}
    thread = threading.Thread(target=lambda: out.update(r=two_workers.evaluate(big, GENERATION)))
    thread.start()
    deadline = time.time() + 30
    while not any(w.in_flight for w in two_workers._pool) and time.time() < deadline:
        time.sleep(0.001)
    busy = next(w for w in two_workers._pool if w.in_flight)
    os.kill(busy.info["pid"], signal.SIGKILL)
    thread.join(120)
    assert not thread.is_alive()
    assert two_workers.stats["retries"] >= 1, "the kill should have hit a chunk in flight"
    np.testing.assert_array_equal(out["r"][0], clean[0])
    np.testing.assert_array_equal(out["r"][1], clean[1])
    # Ray restarts the worker; it rejoins and the next generation is still the same.
    again = two_workers.evaluate(big, GENERATION)
    np.testing.assert_array_equal(again[0], clean[0])
    assert two_workers.workers == 2


def test_workers_gone_for_good_then_workers_lost_error(ray_session, two_workers, population, reference):
    first, second = [w.handle for w in two_workers._pool]
    ray_session.kill(first, no_restart=True)
    loss, _ = two_workers.evaluate(population, GENERATION)
    np.testing.assert_allclose(loss, reference[0], atol=1e-6, rtol=0)
    assert two_workers.workers == 1
    ray_session.kill(second, no_restart=True)
    with pytest.raises(WorkersLostError, match="generation 4"):
        two_workers.evaluate(population, 4)
    assert two_workers.workers == 0

