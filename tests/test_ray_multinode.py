"""A real two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, loopback):
the dispatcher joins it by address, its workers land on both nodes, fitness matches the
in-process result, and disconnecting leaves the cluster itself to its owner."""

import jax
import numpy as np
import pytest

from vsml_es.config import load_config
from vsml_es.es.dispatch import InProcessDispatcher
from workers.pool import RayDispatcher, bind_loopback

GENERATION = 5
# Ray fork+execs its node processes at once; JAX's warning about fork does not apply.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(scope="module")
def cluster():
    bind_loopback()
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    yield c
    c.shutdown()


def test_workers_spread_over_two_nodes_and_match_in_process(cluster):
    import ray

    cfg = load_config(None, ["es.population=8", "task.episode_length=20"])
    ref = InProcessDispatcher(cfg)
    template = ref.evaluator.learner.init_params(jax.random.PRNGKey(0))
    population = jax.tree_util.tree_map(
        lambda x: x[None] + 0.05 * jax.random.normal(jax.random.PRNGKey(x.size), (8,) + x.shape), template)
    expected = ref.evaluate(population, GENERATION)
    assert not ray.is_initialized()  # the dispatcher connects by address itself
    d = RayDispatcher(cfg, address=cluster.address, workers=2)
    try:
        nodes = {info["node_id"] for info in d.worker_info}
        assert len(nodes) == 2, f"workers should be on both nodes, got {d.worker_info}"
        assert cluster.address.startswith("127.0.0.1:")
        loss, acc = d.evaluate(population, GENERATION)
    finally:
        d.close()
    np.testing.assert_allclose(loss, expected[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(acc, expected[1], atol=1e-6, rtol=0)
    # The dispatcher joined the cluster, so close() only disconnected: both nodes still up.
    assert not ray.is_initialized()
    assert all(node.remaining_processes_alive() for node in cluster.list_all_nodes())
